"""How the answer's drafts are chosen: F1 of the kept draft for each number of drafts and scoring rule.

    python benchmarks/drafts_grid.py --squad ../shared/data/squad-es-dev.json --split train --limit 150
    python benchmarks/drafts_grid.py --sets sample-en docs-en sample-es --split heldout

Each question of a set (the chat's default retrieval on the benchmark collection, the prompt exactly as the
chain builds it, the answer's own passage present) is drafted ``--drafts`` times with the shipped model on
the transformers path (``chatbot.llm.draft_answers``: the greedy quote, then one from each next-best first
token that starts a quote), once; every rule is then scored on the same drafts: keep the draft with the best
``sum(logprobs) / n ** alpha + weight * support`` among the first ``k``. ``k = 1`` is greedy decoding. The
defaults (``generation.drafts`` 3, ``support_weight`` 3, the summed log-probability, alpha 0) were chosen on
the training half of squad-es and checked on the held-out sets (docs/model-card.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import machine
from grounded_qa import OWN_SETS, question_sets
from tqdm import tqdm

from chatbot.chain import speaks_of
from chatbot.evaluation import ensure_collection, load_squad, spread, strip_citations, token_f1
from chatbot.llm import abstention_starts, draft_answers, generate_kwargs
from chatbot.prompt import defuse
from chatbot.recipes import chain_style
from chatbot.service import ChatService
from chatbot.settings import load_settings
from finetune.decoding import Draft, draft_score, token_bytes
from retrieval.collection import Collection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", type=Path, help="SQuAD-format file (e.g. squad-es-dev.json)")
    parser.add_argument("--sets", nargs="+", default=None, help="subset of: squad, " + ", ".join(OWN_SETS))
    parser.add_argument("--split", default="train", help="'train' to choose the rule; 'heldout' to check it")
    parser.add_argument("--limit", type=int, default=150, help="questions per set (spread over it)")
    parser.add_argument("--drafts", type=int, default=4, help="drafts written per question")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "assistant-grounded")
    parser.add_argument("--out", type=Path, default=Path("drafts-grid.json"))
    args = parser.parse_args()

    sets = question_sets(args.squad, args.sets)
    settings = load_settings(
        data_dir=args.data_dir,
        models={"device": "cpu", "engine": "transformers"},
        generation={"drafts": args.drafts},
    )
    service = ChatService(settings)
    generator = service.llm.generator
    model, tok = generator.model, generator.tokenizer
    style, pieces, gen = chain_style(settings, tok), token_bytes(tok), settings.generation
    abstain = set(abstention_starts(tok))
    results = {}
    for name, path in sets.items():
        qa = load_squad(path)
        collection = f"bench-{name}"
        ensure_collection(service, collection, qa)
        search = Collection.open(settings, collection).search
        asked = []
        for item in tqdm(spread(qa.subset(args.split).items, args.limit), desc=name, unit="q"):
            hits = search(item.question, settings.chat.top_k)
            if not speaks_of(item.question, hits, settings.chat):
                continue  # declined before the model: no drafts to choose among
            messages = [{"role": r, "content": c} for r, c in style.messages(item.question, hits)]
            inputs = tok.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            shown = [defuse(h.text.strip()) for h in hits]  # as the chain hands them to the model call
            drafts = draft_answers(model, tok, inputs, gen, generate_kwargs(gen, tok), shown)
            if drafts[0].tokens[:1] and drafts[0].tokens[0] in abstain:
                continue  # the model declines: drafts change nothing
            asked.append((item, shown, drafts))
        results[name] = grid(asked, pieces, args.drafts)
        args.out.write_text(
            json.dumps({"machine": machine(), "split": args.split, "results": results}, indent=1)
        )
    print(table(results))


def grid(asked: list, pieces, most: int) -> dict[str, float]:
    """F1 of the kept draft for each rule, over the questions the model answers."""
    scores: dict[str, float] = {}
    for k in range(1, most + 1):
        for alpha in (0.0, 0.5, 1.0):
            for weight in (0.0, 1.0, 3.0):
                if k == 1 and (alpha or weight):
                    continue
                f1 = []
                for item, sources, drafts in asked:
                    best = max(
                        drafts[:k], key=lambda d: score(d, pieces, item.question, sources, alpha, weight)
                    )
                    f1.append(token_f1(strip_citations(best.text(pieces)), item.answers))
                scores[f"k={k} alpha={alpha} weight={weight}"] = sum(f1) / max(1, len(f1))
    scores["questions"] = len(asked)
    return scores


def score(draft: Draft, pieces, question: str, sources: list[str], alpha: float, weight: float) -> float:
    """``draft_score`` with the log-probability divided by ``n ** alpha`` (0: the sum it uses)."""
    n = max(1, len(draft.logprobs))
    logprob = sum(draft.logprobs)
    support_part = draft_score(Draft(draft.tokens, []), pieces, question, sources, weight)
    return logprob / n**alpha + support_part


def table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    rules = [r for r in next(iter(results.values())) if r != "questions"] if results else []
    rows = ["| rule | " + " | ".join(f"{n} ({results[n]['questions']})" for n in names) + " |"]
    rows.append("|---|" + "---|" * len(names))
    for rule in rules:
        rows.append(f"| {rule} | " + " | ".join(f"{results[n][rule]:.3f}" for n in names) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
