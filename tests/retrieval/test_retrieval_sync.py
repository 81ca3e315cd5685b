"""Incremental sync: unchanged files skipped without embedding, changed files replaced exactly, deleted files
removed; one sync at a time; searches answered from the current snapshot while a sync runs."""

from __future__ import annotations

import os
import threading

import pytest
from retrieval_helpers import chunk_table, faiss_count

from retrieval import snapshot, vectors
from retrieval.collection import Collection
from retrieval.errors import CollectionError, CollectionLockedError


def _write(folder, files: dict[str, str]) -> None:
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


GUIDE = (
    "# Guide\n\n## Alpha\n\nAlpha section about capybaras.\n\n"
    "## Beta\n\nBeta section about {x}.\n\n## Gamma\n\nGamma."
)


def test_incremental_sync_touches_only_what_changed(settings, tmp_path):
    docs = tmp_path / "docs"
    _write(docs, {"guide.md": GUIDE.format(x="tapirs"), "a.txt": "Armadillos dig.", "b.txt": "Bison graze."})
    col = Collection.open(settings, "inc")
    first = col.sync(docs)
    assert sorted(first.added) == ["a.txt", "b.txt", "guide.md"]
    assert first.chunks_embedded == first.chunks_total == 6 == col.embedder.embedded
    before = {h.source: h.chunk_id for h in col.search("armadillos bison", k=6, mode="bm25")}

    second = col.sync(docs)
    assert sorted(second.unchanged) == ["a.txt", "b.txt", "guide.md"]
    assert second.chunks_embedded == 0 and col.embedder.embedded == 6  # nothing re-embedded
    assert col.stats()["version"] == "v000001"  # no new snapshot for a no-op sync

    (docs / "guide.md").write_text(GUIDE.format(x="okapis"), encoding="utf-8")
    (docs / "b.txt").unlink()
    (docs / "c.txt").write_text("Coatis climb.", encoding="utf-8")
    third = col.sync(docs)
    assert third.updated == ["guide.md"] and third.deleted == ["b.txt"] and third.added == ["c.txt"]
    assert third.unchanged == ["a.txt"]
    # Only the changed section and the new file were embedded; Alpha and Gamma reused their vectors.
    assert third.chunks_embedded == 2 and col.embedder.embedded == 8

    table = chunk_table(col)
    assert len(table) == len(set(table)) == 6 == faiss_count(col)
    assert ("guide.md", "Beta\n\nBeta section about okapis.") in table
    assert not any("tapirs" in text or "Bison" in text for _, text in table)
    assert col.search("tapirs", k=3, mode="bm25") == [] and col.search("bison", k=3, mode="bm25") == []
    assert col.search("okapis", k=1, mode="bm25")[0].source == "guide.md"
    assert (
        col.search("armadillos", k=1, mode="bm25")[0].chunk_id == before["a.txt"]
    )  # untouched file kept ids
    stats = col.stats()
    assert stats["files"] == 3 and stats["chunks"] == 6 and stats["version"] == "v000002"
    assert sorted(p.name for _, p in snapshot.versions(col.root)) == ["v000001", "v000002"]


def test_changed_chunking_settings_reindex_every_file(settings, tmp_path):
    docs = tmp_path / "docs"
    _write(docs, {"a.txt": "one two three four five six seven eight nine ten " * 10})
    col = Collection.open(settings, "settings-change")
    assert col.sync(docs).added == ["a.txt"]
    settings.retrieval.chunk_tokens = 32
    report = col.sync(docs)
    assert report.updated == ["a.txt"] and report.chunks_total > 1
    # the index's own settings: built again from the stored vectors, no file read again, none re-embedded
    before = col.stats()["version"]
    settings.retrieval.index_type = "hnsw"
    switched = col.sync(docs)
    assert switched.updated == [] and switched.unchanged == ["a.txt"] and switched.chunks_embedded == 0
    assert col.stats()["version"] != before and _index_shape(col) == ("IndexHNSWFlat", 32)
    assert faiss_count(col) == switched.chunks_total == report.chunks_total
    settings.retrieval.hnsw_m = 16  # took effect only once some file changed, before
    again = col.sync(docs)
    assert again.updated == [] and _index_shape(col) == ("IndexHNSWFlat", 16)
    assert col.sync(docs).unchanged == ["a.txt"] and faiss_count(col) == report.chunks_total


def _index_shape(col) -> tuple[str, int | None]:
    """The kind of FAISS index under the id map of the collection's current version, and its HNSW degree."""
    import faiss

    mapped = vectors.load(snapshot.current(col.root) / vectors.INDEX_NAME, col.settings.retrieval)
    inner = faiss.downcast_index(mapped.index)  # (owned by ``mapped``: read while it lives)
    return type(inner).__name__, inner.hnsw.nb_neighbors(1) if hasattr(inner, "hnsw") else None


def test_second_sync_is_refused_naming_the_holder(settings, tmp_path):
    docs = tmp_path / "docs"
    _write(docs, {"a.txt": "text"})
    col = Collection.open(settings, "locked")
    with snapshot.sync_lock(col.root, col.name):
        with pytest.raises(CollectionLockedError) as err:
            Collection.open(settings, "locked").sync(docs)
        with pytest.raises(CollectionLockedError):
            Collection.delete(settings, "locked")
    message = str(err.value)
    assert "'locked' is being synced by another process" in message and f"pid {os.getpid()}" in message
    assert col.sync(docs).added == ["a.txt"]  # the lock is released with its holder


def test_searches_are_answered_while_a_sync_runs(settings, tmp_path):
    docs = tmp_path / "docs"
    _write(docs, {"a.txt": "Old text about lemurs."})
    col = Collection.open(settings, "busy")
    col.sync(docs)
    _write(docs, {"a.txt": "New text about meerkats.", "b.txt": "More.", "c.txt": "Even more."})
    halfway, resume = threading.Event(), threading.Event()

    def progress(done: int, total: int, path: str) -> None:
        if done == 2:
            halfway.set()
            assert resume.wait(30)

    syncing = threading.Thread(target=col.sync, args=(docs,), kwargs={"progress": progress})
    syncing.start()
    try:
        assert halfway.wait(30)
        reader = Collection.open(settings, "busy")
        assert [h.text for h in reader.search("lemurs", k=1)] == ["Old text about lemurs."]
        assert reader.search("meerkats", k=1, mode="bm25") == []
    finally:
        resume.set()
        syncing.join(30)
    assert reader.search("meerkats", k=1, mode="bm25")[0].text == "New text about meerkats."


def test_collection_names_list_and_delete(settings, tmp_path):
    for bad in ["", "a b", "../x", "x" * 65, "dots.not.allowed", "name\n"]:
        with pytest.raises(CollectionError, match="invalid collection name"):
            Collection.open(settings, bad)
    Collection.open(settings, "one")
    Collection.open(settings, "two")
    assert Collection.list(settings) == ["one", "two"]
    Collection.delete(settings, "one")
    assert Collection.list(settings) == ["two"]
    with pytest.raises(CollectionError, match="does not exist"):
        Collection.delete(settings, "one")
    assert Collection.open(settings, "two").search("anything") == []  # never synced: empty, not an error
