"""Retrieval quality on squad-es-dev: hit rate @1/5/10 and MRR for BM25, dense and hybrid.

    python benchmarks/retrieval_quality.py --data ../shared/data/squad-es-dev.json --work var/bench-quality

Every paragraph `context` becomes one .txt document of a collection (synced once; re-runs reuse it, the sync
being incremental). A question counts as found at k when one of its answer texts occurs in the top-k chunks.
The dense weight of hybrid fusion is swept on the questions of even-numbered articles ("tune") and reported on
the odd-numbered ones ("held-out") and on all questions, so the default is not fitted to what it is judged on.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
from common import emit

from chatbot.settings import load_settings
from retrieval.collection import Collection
from retrieval.search import dense_scores, fuse, pool

KS = (1, 5, 10)
WEIGHTS = [round(w, 2) for w in np.arange(0.0, 1.01, 0.05)]


def write_documents(data: dict, folder: Path) -> list[dict]:
    """One file per paragraph; returns the questions with their answers and article number."""
    folder.mkdir(parents=True, exist_ok=True)
    questions = []
    for a, article in enumerate(data["data"]):
        for p, paragraph in enumerate(article["paragraphs"]):
            path = folder / f"a{a:03d}_p{p:03d}.txt"
            if not path.exists() or path.read_text(encoding="utf-8") != paragraph["context"]:
                path.write_text(paragraph["context"], encoding="utf-8")
            for qa in paragraph["qas"]:
                answers = [x["text"] for x in qa["answers"] if x["text"].strip()]
                questions.append({"q": qa["question"], "answers": answers, "article": a})
    return questions


def first_hit(texts: list[str], answers: list[str]) -> int | None:
    for rank, text in enumerate(texts, start=1):
        if any(answer in text for answer in answers):
            return rank
    return None


def metrics(ranks: list[int | None]) -> dict[str, float]:
    n = max(len(ranks), 1)
    out = {f"hit@{k}": sum(r is not None and r <= k for r in ranks) / n for k in KS}
    out["mrr@10"] = sum(1 / r for r in ranks if r is not None and r <= 10) / n
    return out


def candidates(col: Collection, questions: list[dict], n: int) -> list[tuple[dict, dict]]:
    """Per question, BM25 and dense scores of the union of both retrievers' top-n (as hybrid search does)."""
    view = col._current_view()
    vectors = col.embedder.embed_queries([q["q"] for q in questions])
    out = []
    for q, vector in zip(questions, vectors, strict=True):
        dense = dense_scores(view, vector, n)
        out.append(pool(view, q["q"], vector, dense, n, col.settings.retrieval.bm25_depth))
    return out


def rrf(bm25: dict[int, float], dense: dict[int, float], k: int = 60, n: int = 50) -> dict[int, float]:
    scores: dict[int, float] = {}
    for ranking in (bm25, dense):
        for rank, i in enumerate(sorted(ranking, key=lambda i: -ranking[i])[:n], start=1):
            scores[i] = scores.get(i, 0.0) + 1 / (k + rank)
    return scores


def evaluate(questions, scored, texts: dict[int, str], weight: float | None, mode: str) -> dict[str, float]:
    ranks = []
    for q, (bm25, dense) in zip(questions, scored, strict=True):
        if mode == "bm25":
            scores = bm25
        elif mode == "dense":
            scores = {i: s for i, s in dense.items()}
        elif mode == "rrf":  # naive reciprocal-rank fusion of the two top-n lists, for comparison
            scores = rrf(bm25, dense)
        else:
            scores = fuse(bm25, dense, weight)
        top = sorted(scores, key=lambda i: (-scores[i], i))[:10]
        ranks.append(first_hit([texts[i] for i in top], q["answers"]))
    return metrics(ranks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/squad-es-dev.json"))
    parser.add_argument("--work", type=Path, default=Path("var/bench-quality"))
    parser.add_argument("--limit", type=int, default=0, help="Use only the first N questions (0 = all).")
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    data = json.loads(args.data.read_text(encoding="utf-8"))
    questions = write_documents(data, args.work / "docs")
    if args.limit:
        questions = questions[:: max(1, len(questions) // args.limit)][: args.limit]  # spread over articles
    settings = load_settings(data_dir=args.work / "var")
    col = Collection.open(settings, "squad-es")
    started = time.perf_counter()
    report = col.sync(args.work / "docs")
    sync_s = time.perf_counter() - started
    view = col._current_view()
    texts = {int(r[0]): r[1] for r in view.conn.execute("SELECT id, text FROM chunks")}

    started = time.perf_counter()
    scored = candidates(col, questions, settings.retrieval.candidates)
    score_s = time.perf_counter() - started
    tune = [i for i, q in enumerate(questions) if q["article"] % 2 == 0]
    held = [i for i, q in enumerate(questions) if q["article"] % 2 == 1]

    def subset(idx, mode, weight=None):
        return evaluate([questions[i] for i in idx], [scored[i] for i in idx], texts, weight, mode)

    sweep = {w: subset(tune, "hybrid", w) for w in WEIGHTS}
    best = max(WEIGHTS, key=lambda w: (sweep[w]["hit@1"] + sweep[w]["hit@5"], sweep[w]["mrr@10"]))
    everything = list(range(len(questions)))
    default = settings.retrieval.dense_weight
    results = {
        "questions": len(questions),
        "documents": len(report.added) + len(report.updated) + len(report.unchanged),
        "chunks": report.chunks_total,
        "sync_seconds": round(sync_s, 1),
        "scoring_seconds": round(score_s, 1),
        "tuned_dense_weight": best,
        "default_dense_weight": default,
        "sweep_tune": {str(w): sweep[w] for w in WEIGHTS},
        "machine": f"{platform.machine()} {platform.processor() or ''} ({platform.system()})".strip(),
        "date": time.strftime("%Y-%m-%d"),
    }
    for name, idx in (("tune", tune), ("held_out", held), ("all", everything)):
        results[name] = {
            "bm25": subset(idx, "bm25"),
            "dense": subset(idx, "dense"),
            "rrf": subset(idx, "rrf"),
            f"hybrid(w={default})": subset(idx, "hybrid", default),
            f"hybrid(w={best})": subset(idx, "hybrid", best),
        }
    emit(results, args.out)


if __name__ == "__main__":
    main()
