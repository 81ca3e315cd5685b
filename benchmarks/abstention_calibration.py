"""Calibrating chat.min_relevance: the best passage's cosine similarity for answerable and unanswerable
questions, and what each threshold costs.

    python benchmarks/abstention_calibration.py [--qa ../shared/data/squad-es-dev.json] [--limit 400]

Answerable: questions of the SQuAD file asked of the collection built from its contexts, plus questions about
the sample collection asked of it. Unanswerable: the SQuAD questions asked of the sample collection (another
domain), plus off-topic questions asked of the sample collection. Uses the configured embedding model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from chatbot.chain import relevance
from chatbot.evaluation import load_squad, spread
from chatbot.settings import load_settings
from retrieval.collection import Collection

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_QUESTIONS = [
    "Which file formats can I index?",
    "Where are conversations stored?",
    "How do I delete a collection?",
    "Does the assistant need a GPU?",
    "How long does the first start take?",
    "Can I use a bigger model?",
    "How do I start the assistant?",
    "What do the numbers in square brackets mean?",
    "¿Dónde se guardan las conversaciones?",
    "¿Cómo borro una colección?",
    "¿Hace falta una GPU?",
    "¿Cómo hago una copia de seguridad?",
    "¿Qué formatos se pueden indexar?",
    "¿Cómo inicio el asistente?",
]
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


def best(col: Collection, question: str, k: int) -> float:
    hits = col.search(question, k)
    return max((relevance(h) for h in hits), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qa", type=Path, default=ROOT.parent / "shared" / "data" / "squad-es-dev.json")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "assistant-calibration"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    settings = load_settings(data_dir=args.data_dir)
    k = settings.chat.top_k
    sample = Collection.open(settings, "sample")
    sample.sync(ROOT / "data" / "sample")
    qa = load_squad(args.qa)
    squad = Collection.open(settings, "squad-es")
    if not squad.stats()["chunks"]:
        folder = args.data_dir / "squad-docs"
        folder.mkdir(parents=True, exist_ok=True)
        for doc, text in qa.contexts.items():
            (folder / doc).write_text(text, encoding="utf-8")
        squad.sync(folder)
    items = spread(qa.items, args.limit)

    answerable = [best(squad, i.question, k) for i in items] + [best(sample, q, k) for q in SAMPLE_QUESTIONS]
    unanswerable = [best(sample, i.question, k) for i in items] + [best(sample, q, k) for q in OFF_TOPIC]
    a, u = np.array(answerable), np.array(unanswerable)
    print(f"answerable   n={len(a)}  cosine p5 {np.percentile(a, 5):.3f}  p50 {np.median(a):.3f}")
    print(f"unanswerable n={len(u)}  cosine p50 {np.median(u):.3f}  p95 {np.percentile(u, 95):.3f}")
    rows = []
    print("threshold  wrongly abstains (answerable)  correctly abstains (unanswerable)")
    for t in np.arange(0.0, 0.65, 0.05):
        row = {
            "threshold": round(float(t), 2),
            "false_abstention": float((a < t).mean()),
            "true_abstention": float((u < t).mean()),
        }
        rows.append(row)
        print(
            f"  {t:.2f}     {row['false_abstention']:6.1%}                        {row['true_abstention']:6.1%}"
        )
    off = np.array([best(sample, q, k) for q in OFF_TOPIC])
    inside = np.array([best(sample, q, k) for q in SAMPLE_QUESTIONS])
    print(f"sample collection: in-domain min {inside.min():.3f}, off-topic max {off.max():.3f}")
    if args.json:
        args.json.write_text(
            json.dumps({"rows": rows, "answerable": answerable, "unanswerable": unanswerable})
        )


if __name__ == "__main__":
    main()
