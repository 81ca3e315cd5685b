"""A collection searched with another embedding model than it was indexed with: a clear error naming both
models and the command that rebuilds it, never a FAISS assertion or silently wrong results; re-indexing
rebuilds it with the new model, and keyword search keeps working meanwhile."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3

import numpy as np
import pytest
from retrieval_helpers import with_embedding

from retrieval import embedding, snapshot, store, vectors
from retrieval.collection import Collection, collections_dir
from retrieval.config import RetrievalSettings
from retrieval.errors import RetrievalError, SettingsError


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "library.txt").write_text("The library opens at nine in the morning.", encoding="utf-8")
    (folder / "citing.txt").write_text("Sources are cited with numbers in brackets.", encoding="utf-8")
    return folder


@pytest.fixture
def narrow_embedder_dir(tiny_embedder_dir, tmp_path_factory):
    """The tiny embedder with a projection to 16 dimensions (the tiny one gives 32)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models

    base = SentenceTransformer(str(tiny_embedder_dir), device="cpu")
    torch.manual_seed(0)
    dense = st_models.Dense(in_features=base.get_embedding_dimension(), out_features=16)
    out = tmp_path_factory.mktemp("narrow-embedder") / "model"
    SentenceTransformer(modules=[*base, dense], device="cpu").save(str(out))
    return out


def _assert_names_the_fix(message: str, name: str, indexed: str, now: str, folder) -> None:
    assert f"collection {name!r}" in message
    assert indexed in message and now in message
    assert f"chatbot index {name} {folder}" in message and "models.embedding" in message


def test_another_dimension_is_a_clear_error_not_a_faiss_assertion(settings, docs, narrow_embedder_dir):
    Collection.open(settings, "handbook").sync(docs)
    narrow = Collection.open(with_embedding(settings, narrow_embedder_dir), "handbook")
    with pytest.raises(RetrievalError) as err:
        narrow.search("When does the library open?", k=2)
    assert isinstance(err.value, SettingsError)  # the CLI and the API report it as a settings problem
    _assert_names_the_fix(
        str(err.value), "handbook", settings.models.embedding, str(narrow_embedder_dir), docs
    )


def test_other_weights_under_the_same_name_are_refused_not_silently_wrong(
    settings, docs, tiny_embedder_dir, other_embedder_dir, tmp_path, monkeypatch
):
    """A local folder given new weights keeps its name: the recorded probe vectors tell the models apart."""
    folder = shutil.copytree(tiny_embedder_dir, tmp_path / "embedder")
    ours = with_embedding(settings, folder)
    first = Collection.open(ours, "handbook").sync(docs)
    shutil.copytree(other_embedder_dir, folder, dirs_exist_ok=True)  # same path, same width, other weights
    monkeypatch.setattr(
        embedding, "_loaded", {}
    )  # as a new process (the app restarted) loads the folder again
    col = Collection.open(ours, "handbook")
    for mode in ("hybrid", "dense"):
        with pytest.raises(RetrievalError) as err:
            col.search("When does the library open?", k=2, mode=mode)
        assert isinstance(err.value, SettingsError)
        message = str(err.value)
        assert "holds another model now" in message and str(folder) in message
        assert f"chatbot index handbook {docs}" in message
    assert (
        col.search("library", k=1, mode="bm25")[0].source == "library.txt"
    )  # keyword search reads no vectors
    # the files did not change, yet the sync sees the new weights and embeds every chunk again
    report = col.sync(docs)
    assert report.chunks_embedded == first.chunks_total
    assert {h.source for h in col.search("When does the library open?", k=2)} == {"library.txt", "citing.txt"}


def test_the_same_weights_under_another_name_are_the_same_model(settings, docs, tiny_embedder_dir, tmp_path):
    """The hub id and a local copy of it, or a moved folder: the vectors are valid, nothing is embedded again."""
    before = Collection.open(settings, "handbook")
    first = before.sync(docs)
    expected = [(h.source, round(h.score, 5)) for h in before.search("When does the library open?", k=2)]
    moved = with_embedding(settings, shutil.copytree(tiny_embedder_dir, tmp_path / "copy-of-embedder"))
    col = Collection.open(moved, "handbook")
    for mode in ("hybrid", "dense"):
        assert col.search("When does the library open?", k=2, mode=mode)
    assert [(h.source, round(h.score, 5)) for h in col.search("When does the library open?", k=2)] == expected
    report = col.sync(docs)  # the settings' fingerprint names the model: files are read again, vectors kept
    assert first.chunks_embedded == first.chunks_total > 0 and report.chunks_embedded == 0
    assert col.stats()["embedding_model"] == str(tmp_path / "copy-of-embedder")


def test_a_version_without_probe_is_told_by_the_model_name(settings, docs, tiny_embedder_dir, tmp_path):
    """Versions written before probes were recorded: the name decides, as it did then."""
    Collection.open(settings, "handbook").sync(docs)
    current = snapshot.current(collections_dir(settings) / "handbook")
    with contextlib.closing(sqlite3.connect(current / store.DB_NAME)) as conn, conn:
        conn.execute("DELETE FROM meta WHERE key = 'probe'")
    assert Collection.open(settings, "handbook").search("When does the library open?", k=1)
    other = shutil.copytree(tiny_embedder_dir, tmp_path / "other-embedder")  # same weights, another name
    col = Collection.open(with_embedding(settings, other), "handbook")
    with pytest.raises(RetrievalError) as err:
        col.search("When does the library open?", k=2)
    _assert_names_the_fix(str(err.value), "handbook", settings.models.embedding, str(other), docs)


def test_reindexing_with_the_new_model_rebuilds_and_searches(settings, docs, narrow_embedder_dir):
    first = Collection.open(settings, "handbook").sync(docs)
    narrow_settings = with_embedding(settings, narrow_embedder_dir)
    col = Collection.open(narrow_settings, "handbook")
    with pytest.raises(RetrievalError):
        col.search("library", k=1)
    report = col.sync(docs)
    assert report.chunks_embedded == first.chunks_total  # every chunk embedded again, by the new model
    assert col.stats()["embedding_model"] == str(narrow_embedder_dir)
    assert {h.source for h in col.search("When does the library open?", k=2)} == {
        "library.txt",
        "citing.txt",
    }
    # and the old setting is now the mismatch, with the same clear error
    with pytest.raises(RetrievalError, match="settings now say"):
        Collection.open(settings, "handbook").search("library", k=1)


def test_a_vector_of_another_width_never_reaches_faiss():
    index = vectors.build(
        RetrievalSettings(), 8, [(np.arange(3, dtype=np.int64), np.eye(3, 8, dtype=np.float32))], 3
    )
    with pytest.raises(RetrievalError, match="16 dimensions.*8"):
        vectors.search(index, np.ones(16, dtype=np.float32), 2)
    assert [i for i, _ in vectors.search(index, np.eye(1, 8, dtype=np.float32)[0], 1)] == [0]
