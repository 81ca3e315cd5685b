"""A collection searched with another embedding model than it was indexed with: a clear error naming both
models and the command that rebuilds it, never a FAISS assertion or silently wrong results; re-indexing
rebuilds it with the new model, and keyword search keeps working meanwhile."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from retrieval import vectors
from retrieval.collection import Collection
from retrieval.config import RetrievalSettings
from retrieval.errors import RetrievalError, SettingsError


def _with_embedding(settings, model_dir):
    return settings.model_copy(
        update={"models": settings.models.model_copy(update={"embedding": str(model_dir)})}
    )


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
    narrow = Collection.open(_with_embedding(settings, narrow_embedder_dir), "handbook")
    with pytest.raises(RetrievalError) as err:
        narrow.search("When does the library open?", k=2)
    assert isinstance(err.value, SettingsError)  # the CLI and the API report it as a settings problem
    _assert_names_the_fix(
        str(err.value), "handbook", settings.models.embedding, str(narrow_embedder_dir), docs
    )


def test_same_dimension_other_model_is_refused_not_silently_wrong(
    settings, docs, tiny_embedder_dir, tmp_path
):
    Collection.open(settings, "handbook").sync(docs)
    other = shutil.copytree(tiny_embedder_dir, tmp_path / "other-embedder")  # same weights, another model
    col = Collection.open(_with_embedding(settings, other), "handbook")
    for mode in ("hybrid", "dense"):
        with pytest.raises(RetrievalError) as err:
            col.search("When does the library open?", k=2, mode=mode)
        _assert_names_the_fix(str(err.value), "handbook", settings.models.embedding, str(other), docs)
    # keyword search reads no vectors: it still answers
    assert col.search("library", k=1, mode="bm25")[0].source == "library.txt"


def test_reindexing_with_the_new_model_rebuilds_and_searches(settings, docs, narrow_embedder_dir):
    first = Collection.open(settings, "handbook").sync(docs)
    narrow_settings = _with_embedding(settings, narrow_embedder_dir)
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
