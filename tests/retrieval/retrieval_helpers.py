"""Helpers for the retrieval tests: views of a collection's current snapshot (the documents themselves come
from tests/document_files.py)."""

from __future__ import annotations


def chunk_table(collection) -> list[tuple[str, str]]:
    """(source, text) of every chunk in the collection's current snapshot, sorted."""
    from retrieval import snapshot, store

    folder = snapshot.current(collection.root)
    if folder is None:
        return []
    conn = store.connect(folder / store.DB_NAME, readonly=True)
    try:
        return sorted((r[0], r[1]) for r in conn.execute("SELECT source, text FROM chunks"))
    finally:
        conn.close()


def faiss_count(collection) -> int:
    from retrieval import snapshot, vectors

    folder = snapshot.current(collection.root)
    return vectors.load(folder / vectors.INDEX_NAME, collection.settings.retrieval).ntotal


def wait_until(condition, timeout: float = 30) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; whether it held (for a watcher's work)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def with_embedding(settings, model_dir):
    """``settings`` with ``models.embedding`` set to ``model_dir``."""
    return settings.model_copy(
        update={"models": settings.models.model_copy(update={"embedding": str(model_dir)})}
    )
