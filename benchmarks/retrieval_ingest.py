"""Ingestion throughput against plain sentence-transformers encoding; a 1%-changed sync against a full build.

    python benchmarks/retrieval_ingest.py --data ../shared/data/squad-es-dev.json --docs 600 --out ingest.json

Documents are squad-es paragraphs (one .txt each), or synthetic text when --data is missing. Three timings:
1. a full build of a fresh collection (scan, hash, load, clean, chunk, embed, write SQLite + FAISS, fsync);
2. ``SentenceTransformer.encode`` of exactly the chunk texts that build embedded, same batch size: the floor;
3. a sync after changing 1% of the files (a sentence appended), against the full build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

from common import emit

from chatbot.settings import load_settings
from retrieval import snapshot, store
from retrieval.collection import Collection
from retrieval.embedding import load_embedder


def write_docs(folder: Path, data: Path | None, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if data is not None and data.is_file():
        contexts = [p["context"] for a in json.loads(data.read_text())["data"] for p in a["paragraphs"]]
    else:
        rng = random.Random(0)
        words = [f"palabra{i}" for i in range(5000)]
        contexts = [" ".join(rng.choices(words, k=150)) + "." for _ in range(count)]
    for i, text in enumerate(contexts[:count]):
        (folder / f"doc{i:05d}.txt").write_text(text, encoding="utf-8")


def embedded_texts(col: Collection) -> list[str]:
    """What the build embedded: each chunk's text, with its title in front when it has one."""
    conn = store.connect(snapshot.current(col.root) / store.DB_NAME, readonly=True)
    try:
        rows = conn.execute("SELECT text, title FROM chunks ORDER BY id").fetchall()
    finally:
        conn.close()
    return [f"{title}\n{text}" if title and not text.startswith(title) else text for text, title in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/squad-es-dev.json"))
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_docs(work / "docs", args.data, args.docs)
        settings = load_settings(data_dir=work / "var")
        col = Collection.open(settings, "ingest")
        col.embedder.model  # load the model outside the timings, as encode below does  # noqa: B018

        started = time.perf_counter()
        full = col.sync(work / "docs")
        full_s = time.perf_counter() - started

        texts = embedded_texts(col)
        model = load_embedder(settings)
        model.encode(texts[:8], batch_size=settings.retrieval.embed_batch_size)  # warm up
        started = time.perf_counter()
        model.encode(texts, batch_size=settings.retrieval.embed_batch_size, normalize_embeddings=True)
        encode_s = time.perf_counter() - started

        files = sorted((work / "docs").iterdir())
        changed = random.Random(1).sample(files, max(1, len(files) // 100))
        for path in changed:
            path.write_text(path.read_text(encoding="utf-8") + " Una frase nueva al final.", encoding="utf-8")
        started = time.perf_counter()
        incremental = col.sync(work / "docs")
        incremental_s = time.perf_counter() - started
        shutil.rmtree(work / "var", ignore_errors=True)

    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} ({platform.system()}), {os.cpu_count()} cpus",
        "documents": len(files),
        "chunks": full.chunks_total,
        "full_build_s": round(full_s, 2),
        "full_build_chunks_per_s": round(full.chunks_embedded / full_s, 1),
        "plain_encode_s": round(encode_s, 2),
        "plain_encode_chunks_per_s": round(len(texts) / encode_s, 1),
        "overhead_share": round(1 - encode_s / full_s, 3),
        "changed_files": len(changed),
        "incremental_s": round(incremental_s, 2),
        "incremental_chunks_embedded": incremental.chunks_embedded,
        "incremental_vs_full": round(incremental_s / full_s, 3),
    }
    emit(results, args.out)


if __name__ == "__main__":
    main()
