"""A quick stand-in for ``grounded_qa.py`` to compare trained candidates, on a GPU.

The real benchmark asks every question through the whole chain (search, gate, drafts, the quoting rule) and
takes ~45 minutes on the 2 cores. This one keeps what changes between candidates, the model reading the
prompt, and fixes the rest, so candidates can be compared on the machine they were trained on:

1. ``prompts`` (where the collections and the embedding model are; ~2 minutes on the 2 cores): each held-out
   question of each file as the recipe builds its prompts (``finetune.grounded``), twice: "present", its
   paragraph among the two passages the project's search ranks highest, and "absent", three passages without
   the answer.
2. ``answer``, in bfloat16 on either device (the 2,162 prompts of squad-es and the twelve own sets took
   304 s on an H100 that three trainings shared; the 2 cores took 16 minutes for 600): greedy answers in
   batches, with the answer-only no-repeat 4-gram. The abstention sentence's first tokens are banned at the
   first position and their margin there (their best logit minus the best other token's: what
   ``generation.abstain_bias`` shifts) is recorded, so the decline at any bias is read off one pass.
3. ``score``: F1, exact match, citation accuracy and the declines, per set, at the biases asked for.

``answer`` needs only the project's folders, PyTorch, transformers, peft, gguf and the embedded model's
wheel, pydantic, pydantic-settings, python-dotenv, PyYAML, snowballstemmer and filelock: no LangChain, no
FAISS, no collections (each prompt carries its abstention sentences), so it runs on a bare GPU machine.

Without drafts and the quoting rule, F1 is lower than the chain's (the shipped adapter: 0.284 on 300 held-out
squad-es questions, where the chain scores 0.349 on 200); the comparison between candidates is what it is
for. In bfloat16 the answers also move a little with the batch (6 of 8 the same at batch 1 and 48,
margins within 0.25): compare candidates at one batch size, on one kind of machine.

    python benchmarks/grounded_proxy.py prompts --squad ../shared/data/squad-es-dev.json --out prompts.jsonl.gz
    python benchmarks/grounded_proxy.py answer prompts.jsonl.gz --adapter finetune/adapters/grounded-qa/model \\
        --out shipped.json
    python benchmarks/grounded_proxy.py score prompts.jsonl.gz shipped.json --bias -1.5 --bias 0

``--generator embedded-gemma3-270m`` answers with an adapter trained on the Gemma 3 270M base instead.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections import defaultdict
from pathlib import Path

from common import machine

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "finetune" / "adapters" / "grounded-qa" / "model"


def read_prompts(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def abstention_sentences() -> list[str]:
    """The chat's abstention sentences (``chatbot.prompt``, which imports LangChain): ``prompts`` writes them
    into every row, and ``answer`` reads them from there, or from here for a file written before."""
    from chatbot.prompt import ABSTAIN

    return list(ABSTAIN.values())


def prompts(args: argparse.Namespace) -> None:
    from chatbot.recipes import chain_style, qa_collection
    from chatbot.settings import load_settings
    from finetune.grounded import PromptStyle, RecipeOptions, make_examples
    from finetune.models import load_tokenizer
    from finetune.qa import load_squad, slug, spread

    abstain = sorted(abstention_sentences())  # each row carries them: ``answer`` then needs no LangChain
    settings = load_settings(args.config)
    style = chain_style(settings, load_tokenizer(settings, None))
    files = [(Path(p), args.limit) for p in args.squad or []]
    files += [(p, None) for p in sorted((ROOT / "data" / "qa").glob("*.json"))]
    if args.sets:  # by set name: "squad" for the --squad files, else a data/qa file's stem
        files = [(p, n) for p, n in files if ("squad" if n is not None else p.stem) in args.sets]
    rows = []
    for path, limit in files:
        name = "squad" if path.name.startswith("squad") else path.stem
        qa = load_squad(path).subset("heldout")
        qa.items = spread(qa.items, limit)
        collection = qa_collection(settings, f"qa-{slug(path.stem).lower()}-heldout", qa)
        by_id = {q.id: q for q in qa.items}
        for share, kind in ((0.0, "present"), (1.0, "absent")):
            shown: list[list[str]] = []

            def messages(question, hits, history=(), build=style.messages, shown=shown):
                shown.append([h.text for h in hits])
                return build(question, hits, history)

            recording = PromptStyle(messages=messages, abstain=style.abstain)
            options = RecipeOptions(k=settings.chat.top_k, negative_share=share, seed=7)
            for item, sources in zip(
                make_examples(qa, collection.search, recording, options, path.name), shown, strict=True
            ):
                q = by_id[item.source[len(path.name) + 1 :].rsplit(":", 1)[0]]
                *prompt, reply = item.as_messages()
                target = reply["content"]
                gold = int(target.rsplit("[", 1)[1].split("]")[0]) if kind == "present" else None
                rows.append(
                    {"set": name, "id": q.id, "kind": kind, "question": q.question, "messages": prompt,
                     "sources": sources, "answers": q.answers, "gold": gold, "abstain": abstain}
                )  # fmt: skip
        print(f"{name}: {len(qa.items)} questions", flush=True)
    with gzip.open(args.out, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"{args.out}: {len(rows)} prompts")


def answer(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from chatbot.settings import load_settings
    from finetune.decoding import AnswerNoRepeatNGram
    from finetune.models import ensure_embedded_generator

    started = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = str(ensure_embedded_generator(load_settings(args.config), args.generator))
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(args.model or base, dtype=torch.float32)
    if args.adapter != "none" and not args.model:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
    model = model.to(device, torch.bfloat16).eval()  # on either device: the answers are comparable
    rows = read_prompts(args.prompts)
    sentences = {s for r in rows for s in r.get("abstain") or abstention_sentences()}
    abstain = sorted({tok.encode(s, add_special_tokens=False)[0] for s in sentences})
    ids = [
        tok.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
        for r in rows
    ]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    class FirstPosition:  # records the abstention margin, then bans the abstention tokens there
        def __init__(self, start: int) -> None:
            self.start, self.margins = start, []

        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == self.start:
                scores = scores.float().clone()
                best_abstain = scores[:, abstain].max(-1).values
                scores[:, abstain] = float("-inf")
                self.margins = (best_abstain - scores.max(-1).values).tolist()
            return scores

    out: list[dict | None] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(ids[i]))
    with torch.no_grad():
        for at in range(0, len(order), args.batch):
            batch = order[at : at + args.batch]
            width = max(len(ids[i]) for i in batch)
            inputs = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros_like(inputs)
            for row, i in enumerate(batch):  # padded on the left, so every answer starts at `width`
                inputs[row, width - len(ids[i]) :] = torch.tensor(ids[i])
                mask[row, width - len(ids[i]) :] = 1
            first = FirstPosition(width)
            generated = model.generate(
                input_ids=inputs.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=40,
                do_sample=False,
                logits_processor=LogitsProcessorList([first, AnswerNoRepeatNGram(4, width)]),
                pad_token_id=pad,
                eos_token_id=tok.eos_token_id,
            )
            for row, i in enumerate(batch):
                text = tok.decode(generated[row, width:], skip_special_tokens=True).strip()
                out[i] = {"margin": first.margins[row], "answer": text}
            print(f"{min(at + args.batch, len(order))}/{len(order)} prompts", flush=True)
    seconds = time.perf_counter() - started
    run = {"model": args.model or args.generator, "adapter": None if args.model else args.adapter, "device": device,
           "prompts": len(rows), "seconds": round(seconds, 1), "machine": machine()}  # fmt: skip
    args.out.write_text(json.dumps({**run, "answers": out}, ensure_ascii=False), encoding="utf-8")
    print(json.dumps(run, indent=1))


def score(args: argparse.Namespace) -> None:
    from chatbot.citations import cited_numbers
    from chatbot.evaluation import exact_match, strip_citations, token_f1

    rows = read_prompts(args.prompts)
    answers = json.loads(Path(args.answers).read_text(encoding="utf-8"))["answers"]
    for bias in args.bias or [-1.5]:
        figures: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for row, got in zip(rows, answers, strict=True):
            declines = got["margin"] + bias > 0
            for name in {row["set"], "all own sets" if row["set"] != "squad" else "squad"}:
                f = figures[name]
                if row["kind"] == "absent":
                    f["abstains: absent"].append(declines)
                    continue
                f["abstains: present"].append(declines)
                text = strip_citations(got["answer"])
                f["F1"].append(0.0 if declines else token_f1(text, row["answers"]))
                f["EM"].append(0.0 if declines else exact_match(text, row["answers"]))
                if not declines:
                    f["citation"].append(float(row["gold"] in cited_numbers(got["answer"])))
        print(f"abstention bias {bias}")
        print(
            f"{'set':14s} {'questions':>9s} {'F1':>6s} {'EM':>6s} {'citation':>8s} {'abstains: absent / present':>27s}"
        )
        for name in sorted(figures, key=lambda n: (n not in ("squad", "all own sets"), n)):
            f = figures[name]

            def mean(key: str, f=f) -> float:
                return sum(f[key]) / max(len(f[key]), 1)

            print(
                f"{name:14s} {len(f['F1']):9d} {mean('F1'):6.3f} {mean('EM'):6.3f} {mean('citation'):8.3f} "
                f"{mean('abstains: absent'):19.3f} / {mean('abstains: present'):.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", type=Path, default=None, help="settings file (the data_dir of the collections)"
    )
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prompts", help="build the held-out prompts (needs the collections)")
    p.add_argument(
        "--squad", type=Path, action="append", help="SQuAD-format file besides data/qa (repeatable)"
    )
    p.add_argument("--limit", type=int, default=300, help="questions of each --squad file, spread over it")
    p.add_argument("--sets", nargs="+", help="only these sets: squad (the --squad files), data/qa file stems")
    p.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("answer", help="answer them with one model")
    a.add_argument("prompts", type=Path)
    a.add_argument(
        "--adapter", default=str(SHIPPED), help="LoRA adapter folder on the embedded base, or 'none'"
    )
    a.add_argument(
        "--generator",
        default="embedded",
        help="the embedded base: 'embedded' (SmolLM2-135M-Instruct) or 'embedded-gemma3-270m'",
    )
    a.add_argument("--model", default=None, help="a full model folder instead (a full fine-tune)")
    a.add_argument("--batch", type=int, default=48)
    a.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("score", help="the figures of one model's answers")
    s.add_argument("prompts", type=Path)
    s.add_argument("answers", type=Path)
    s.add_argument("--bias", type=float, action="append", help="abstention bias (repeatable; default -1.5)")
    args = parser.parse_args()
    {"prompts": prompts, "answer": answer, "score": score}[args.step](args)


if __name__ == "__main__":
    main()
