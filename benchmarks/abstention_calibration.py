"""Calibrating the chain's relevance gate (chat.min_relevance, chat.min_word_coverage, chat.sure_relevance):
what each setting turns away, before the model runs, of answerable and unanswerable questions.

    python benchmarks/abstention_calibration.py --squad ../shared/data/squad-es-dev.json [--limit 250] \
        [--data-dir /tmp/assistant-grounded] [--json gate.json]

Question sets: squad-es (if given) and the project's own (data/qa, as benchmarks/grounded_qa.py lists them),
each asked of the collection of its own documents. For every question, the gate's two signals (the best passage's cosine
similarity, and the share of the question's words that the top passages hold) are measured:

- present: asked of its own collection (answerable: turning it away is a wrong abstention);
- absent: its own paragraph removed from the search, as `chatbot eval rag` does (the rest of the document is
  still there, so the gate can only catch some of these; the model declines the rest);
- off-domain: asked of another set's collection (squad-es questions of sample-en, the others of squad-es or,
  without it, of another own set);
- off-topic: general questions asked of each own collection.

The grid is read on the training half of each set (the gate's defaults were chosen there); the defaults are then
reported on the held-out half, the half every other figure uses.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
from common import emit, machine
from grounded_qa import OWN_SETS
from tqdm import tqdm

from chatbot.chain import gate_signals, passes_gate
from chatbot.evaluation import excluding, load_squad, spread
from chatbot.recipes import qa_collection
from chatbot.settings import ChatSettings, load_settings

OFF_TOPIC = [
    "What is the capital of Australia?",
    "Who won the 2010 World Cup?",
    "How do I bake sourdough bread?",
    "What is the boiling point of water at altitude?",
    "Who wrote Don Quixote?",
    "How tall is Mount Everest?",
    "¿Quién ganó el mundial de 2010?",
    "¿Cuál es la capital de Australia?",
    "¿Cómo se hace una paella?",
    "¿Cuántos habitantes tiene Madrid?",
    "¿Quién pintó Las Meninas?",
    "¿A qué temperatura hierve el agua?",
]
GRID = {
    "min_relevance": [0.15, 0.2, 0.25, 0.3],
    "min_word_coverage": [0.0, 0.25, 0.34, 0.5],
    "sure_relevance": [0.45, 0.6, 1.0],
}
KINDS = ("present", "absent", "off-domain", "off-topic")


def turned_away(rows: list[tuple[float, float]], chat: ChatSettings) -> float:
    """Share of ``rows`` (measured signals) that the gate with ``chat``'s settings turns away."""
    return float(np.mean([not passes_gate(best, coverage, chat) for best, coverage in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, help="SQuAD-format file (e.g. squad-es-dev.json)")
    parser.add_argument("--limit", type=int, default=250, help="questions per set and half (spread)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "assistant-grounded")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    settings = load_settings(data_dir=args.data_dir, models={"device": "cpu"})
    k = settings.chat.top_k
    files = ({"squad": args.squad} if args.squad else {}) | OWN_SETS
    sets = {name: load_squad(path) for name, path in files.items()}
    cols = {name: qa_collection(settings, f"bench-{name}", qa, under="eval") for name, qa in sets.items()}
    names = list(sets)

    def elsewhere(name: str) -> str:
        if name == "squad":
            return "sample-en"
        return "squad" if "squad" in cols else next(n for n in names if n != name and n[-2:] != name[-2:])

    # signals[split][set][kind] -> [(best cosine, coverage)]
    measured: dict[str, dict[str, dict[str, list[tuple[float, float]]]]] = {}
    for split in ("train", "heldout"):
        measured[split] = {}
        for name, qa in sets.items():
            items = spread(qa.subset(split).items, args.limit)
            got: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
            other = cols[elsewhere(name)]
            for item in tqdm(items, desc=f"{split} {name}", unit="q"):
                got["present"].append(gate_signals(item.question, cols[name].search(item.question, k)))
                got["absent"].append(
                    gate_signals(item.question, excluding(cols[name], item.doc)(item.question, k))
                )
                got["off-domain"].append(gate_signals(item.question, other.search(item.question, k)))
            if name != "squad":
                got["off-topic"] = [gate_signals(q, cols[name].search(q, k)) for q in OFF_TOPIC]
            measured[split][name] = got

    def row(split: str, chat: ChatSettings) -> dict[str, float]:
        per = measured[split]
        out = {
            f"{name}/{kind}": turned_away(per[name][kind], chat)
            for name in per
            for kind in KINDS
            if per[name][kind]
        }
        out["present (mean of sets)"] = float(np.mean([out[f"{n}/present"] for n in per]))
        out["present (worst set)"] = float(np.max([out[f"{n}/present"] for n in per]))
        out["absent (mean of sets)"] = float(np.mean([out[f"{n}/absent"] for n in per]))
        out["off-domain (all)"] = turned_away([x for n in per for x in per[n]["off-domain"]], chat)
        out["off-topic (all)"] = turned_away([x for n in per for x in per[n]["off-topic"]], chat)
        return out

    grid = []
    print("\ntraining half: share turned away before the model runs")
    print("min_rel  min_cov  sure  | present mean / worst | absent mean | off-domain | off-topic")
    for values in itertools.product(*GRID.values()):
        chat = settings.chat.model_copy(update=dict(zip(GRID, values, strict=True)))
        r = row("train", chat)
        grid.append({**dict(zip(GRID, values, strict=True)), **r})
        print(
            f"  {values[0]:.2f}    {values[1]:.2f}   {values[2]:.2f}  |   {r['present (mean of sets)']:.3f} / "
            f"{r['present (worst set)']:.3f}    |   {r['absent (mean of sets)']:.3f}     |   "
            f"{r['off-domain (all)']:.3f}    |   {r['off-topic (all)']:.3f}"
        )
    chosen = {key: getattr(settings.chat, key) for key in GRID}
    held = row("heldout", settings.chat)
    print(f"\nheld-out half, configured gate {chosen}:")
    for key, value in held.items():
        print(f"  {key:28} {value:.3f}")
    emit({"machine": machine(), "configured": chosen, "heldout": held, "grid_train": grid}, args.json)


if __name__ == "__main__":
    main()
