"""Keyword search's stems at scale: BM25 query latency with and without them on real Spanish text.

    python benchmarks/bm25_stems.py --data ../shared/data/squad-es-dev.json --chunks 100000

The squad-es paragraphs are repeated, each copy unchanged, to ``--chunks`` chunks (one snapshot written
directly, synthetic vectors: BM25 alone is timed); its first 300 questions are asked twice each way, one
thread, with ``retrieval.words.search_stem`` on and switched off. An FTS5 prefix merges the postings of
every word it covers, which is what this measures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from retrieval_latency import build_collection, percentiles, unit

import retrieval.search as search
from chatbot.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/squad-es-dev.json"))
    parser.add_argument("--chunks", type=int, default=100_000)
    args = parser.parse_args()
    data = json.loads(args.data.read_text(encoding="utf-8"))
    paragraphs = [p["context"] for a in data["data"] for p in a["paragraphs"]]
    questions = [q["question"] for a in data["data"] for p in a["paragraphs"] for q in p["qas"]][:300]
    texts = [paragraphs[i % len(paragraphs)] for i in range(args.chunks)]
    settings = load_settings(data_dir=Path(tempfile.mkdtemp()))
    started = time.perf_counter()
    col = build_collection(settings, "bench", texts, unit(np.random.default_rng(0), args.chunks))
    print(f"{args.chunks} chunks written in {time.perf_counter() - started:.1f} s", flush=True)
    stem = search.search_stem
    for _ in range(2):
        for on in (False, True):
            search.search_stem = stem if on else (lambda word: None)
            col.search(questions[0], k=5, mode="bm25")
            samples = []
            for q in questions:
                t = time.perf_counter()
                col.search(q, k=5, mode="bm25")
                samples.append(time.perf_counter() - t)
            label = "stems" if on else "no stems"
            print(f"{label:8s} {percentiles(samples)}  load average {os.getloadavg()}", flush=True)
    col.close()


if __name__ == "__main__":
    main()
