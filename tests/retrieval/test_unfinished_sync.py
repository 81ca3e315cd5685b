"""The vectors a stopped sync embedded (retrieval/unfinished.py) are a cache, never a source of truth: ones
made by another embedding model, or a file that cannot be read, are set aside and the sync embeds as usual.
(The stopped sync itself is in test_retrieval_crash.py.)"""

from __future__ import annotations

import numpy as np
from retrieval_helpers import with_embedding

from retrieval import embedding, unfinished
from retrieval.collection import Collection
from retrieval.embedding import Embedder
from retrieval.sync import _embedded_text, _text_hash


def _docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(5):
        (folder / f"n{i}.txt").write_text(f"Note {i} is about subject{i}.", encoding="utf-8")
    return folder


def _hashes(settings, folder) -> list[str]:
    prefix = settings.retrieval.passage_prefix
    return [
        _text_hash(prefix + _embedded_text(p.read_text(), None, settings)) for p in sorted(folder.iterdir())
    ]


def test_vectors_left_by_another_model_are_not_used(settings, tmp_path, other_embedder_dir, monkeypatch):
    docs = _docs(tmp_path)
    col = Collection.open(settings, "notes")
    other = with_embedding(settings, other_embedder_dir)
    left = unfinished.UnfinishedVectors(col.root, Embedder(other))
    left.put({h: np.full(32, 0.5, dtype=np.float32) for h in _hashes(settings, docs)})
    left.close()
    report = col.sync(docs)
    assert (report.chunks_kept, report.chunks_embedded) == (0, 5)
    assert not (col.root / unfinished.NAME).exists()
    # and the same model's do count: the kept vectors are what the collection then holds
    monkeypatch.setattr(embedding, "_loaded", {})
    again = Collection.open(settings, "again")
    left = unfinished.UnfinishedVectors(again.root, Embedder(settings))
    left.put({h: np.full(32, 0.5, dtype=np.float32) for h in _hashes(settings, docs)[:2]})
    left.close()
    report = again.sync(docs)
    assert (report.chunks_kept, report.chunks_embedded) == (2, 3)


def test_an_unreadable_file_of_kept_vectors_is_set_aside(settings, tmp_path):
    docs = _docs(tmp_path)
    col = Collection.open(settings, "notes")
    (col.root / unfinished.NAME).write_bytes(b"not a database at all" * 100)
    report = col.sync(docs)
    assert (report.chunks_kept, report.chunks_embedded) == (0, 5)
    assert col.search("subject3", k=1)[0].source == "n3.txt"
    assert not (col.root / unfinished.NAME).exists()


def test_a_new_passage_prefix_embeds_every_passage_again(settings, tmp_path):
    """The prefix is part of what is embedded: vectors made without it are not reused with it."""
    docs = _docs(tmp_path)
    first = Collection.open(settings, "notes").sync(docs)
    prefixed = settings.model_copy(
        update={"retrieval": settings.retrieval.model_copy(update={"passage_prefix": "passage: "})}
    )
    report = Collection.open(prefixed, "notes").sync(docs)
    assert report.chunks_embedded == first.chunks_total == 5
