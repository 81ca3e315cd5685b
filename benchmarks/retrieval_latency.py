"""Query latency p50/p95 at 10k, 100k and 1M chunks: FAISS alone (flat, HNSW, IVF) and whole hybrid searches.

    python benchmarks/retrieval_latency.py --sizes 10000 100000 1000000 --out var/bench-latency.json

Vectors are synthetic (random unit vectors, 384 dims like all-MiniLM-L6-v2) and chunk texts are synthetic
sentences drawn from a Zipf-distributed vocabulary, so no embedding is needed to build a million chunks. The
hybrid figure is ``Collection.search`` end to end (BM25 in SQLite FTS5 + FAISS + fusion + fetching the
chunks) with the query vector given; embedding the query with the real model is timed separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from common import emit

from chatbot.settings import load_settings
from retrieval import snapshot, store, vectors
from retrieval.collection import Collection

DIM = 384
VOCAB = 50_000


def synthetic_texts(n: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    words = [f"w{i}" for i in range(VOCAB)]
    lengths = rng.integers(40, 120, size=n)
    ids = np.minimum(rng.zipf(1.2, size=int(lengths.sum())) - 1, VOCAB - 1)
    texts, pos = [], 0
    for length in lengths:
        texts.append(" ".join(words[i] for i in ids[pos : pos + length]))
        pos += length
    queries = [" ".join(words[i] for i in rng.choice(2000, size=6)) for _ in range(200)]
    return texts, queries


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_collection(settings, name: str, texts: list[str], matrix: np.ndarray) -> Collection:
    """Write one snapshot directly (no loaders, no embedding) and make it current."""
    col = Collection.open(settings, name)
    version, staging = snapshot.stage(col.root)
    conn = store.create(staging / store.DB_NAME)
    now = "2026-01-01T00:00:00+00:00"
    for start in range(0, len(texts), 10_000):
        batch = list(range(start, min(start + 10_000, len(texts))))
        path = f"doc{start // 10_000}.txt"
        store.put_file(conn, store.FileRecord(path, "x", 0, "ok", None, None), now)
        chunks = [
            store.NewChunk(path, path, i, texts[i], None, None, 0, len(texts[i]), str(i)) for i in batch
        ]
        store.add_chunks(conn, chunks, matrix[batch])
    conn.commit()
    index = vectors.build(settings.retrieval, DIM, store.all_vectors(conn, 100_000), len(texts))
    conn.close()
    vectors.save(index, staging / vectors.INDEX_NAME)
    snapshot.publish(col.root, staging, version, keep=2)
    return col


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    p50, p95 = np.percentile(ms, [50, 95])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2)}


def time_faiss(index, queries: np.ndarray) -> dict[str, float]:
    samples = []
    for q in queries:
        t = time.perf_counter()
        vectors.search(index, q, 50)
        samples.append(time.perf_counter() - t)
    return percentiles(samples)


class FixedVectors:
    """Stands in for the embedder: hands out precomputed query vectors (query embedding is timed apart)."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix, self.i = matrix, 0

    def embed_query(self, text: str) -> np.ndarray:
        self.i += 1
        return self.matrix[self.i % len(self.matrix)]


def run_size(n: int, work: Path, rng: np.random.Generator, hnsw_max: int) -> dict:
    texts, queries = synthetic_texts(n, rng)
    matrix = unit(rng, n)
    qvec = unit(rng, len(queries))
    result: dict = {"chunks": n}
    for index_type in ("flat", "hnsw", "ivf"):
        if index_type == "hnsw" and n > hnsw_max:
            result["faiss_hnsw"] = f"skipped: building HNSW over {hnsw_max}+ vectors takes too long here"
            continue
        # IVF: at most 1024 cells, so that k-means on 64 points per cell stays within a minute or two.
        nlist = min(1024, int(4 * n**0.5))
        options = {"index_type": index_type, "ivf_nlist": nlist, "ivf_nprobe": 16}
        settings = load_settings(data_dir=work / f"n{n}", retrieval=options)
        started = time.perf_counter()
        index = vectors.build(settings.retrieval, DIM, [(np.arange(n, dtype=np.int64), matrix)], n)
        build_s = time.perf_counter() - started
        result[f"faiss_{index_type}"] = {**time_faiss(index, qvec), "build_s": round(build_s, 1)}
        del index
    settings = load_settings(data_dir=work / f"n{n}")
    started = time.perf_counter()
    col = build_collection(settings, "bench", texts, matrix)
    result["snapshot_build_s"] = round(time.perf_counter() - started, 1)
    col._embedder = FixedVectors(qvec)
    for mode in ("bm25", "hybrid"):
        col.search(queries[0], k=5, mode=mode)  # open the snapshot
        samples = []
        for q in queries:
            t = time.perf_counter()
            col.search(q, k=5, mode=mode)
            samples.append(time.perf_counter() - t)
        result[f"search_{mode}_flat"] = percentiles(samples)
    col.close()
    return result


def time_query_embedding() -> dict[str, float]:
    from retrieval.embedding import Embedder

    embedder = Embedder(load_settings())
    embedder.embed_query("warm up")
    samples = []
    for i in range(50):
        t = time.perf_counter()
        embedder.embed_query(f"¿En qué año se fundó la universidad número {i}?")
        samples.append(time.perf_counter() - t)
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--work", type=Path, help="Where to build the collections (default: a temp dir).")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="Largest size to build HNSW for.")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        results = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()} ({platform.system()}), {os.cpu_count()} cpus",
            "omp_threads": os.environ.get("OMP_NUM_THREADS", "default"),
            "query_embedding_all-MiniLM-L6-v2": time_query_embedding(),
            "sizes": [],
        }
        for n in args.sizes:
            results["sizes"].append(run_size(n, work, rng, args.hnsw_max))
            print(json.dumps(results["sizes"][-1]), flush=True)
    emit(results, args.out)


if __name__ == "__main__":
    main()
