"""The FAISS index of one snapshot: explicit int64 ids (= chunk ids), inner product on unit vectors.

'flat' (default) is exact, an ``IndexIDMap2`` over ``IndexFlatIP``, and is updated in place (remove the
ids of replaced chunks, add the new ones). 'hnsw' and 'ivf' are approximate and are rebuilt from the vectors
in the record database when a sync changes something: HNSW cannot remove ids, and IVF cells drift.
Saved with ``faiss.write_index`` (a plain binary format; nothing is unpickled on load).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrieval.errors import RetrievalError

if TYPE_CHECKING:
    import faiss

    from retrieval.config import RetrievalSettings

INDEX_NAME = "vectors.faiss"
IVF_MIN_PER_CELL = 39  # FAISS warns below ~39 training points per cell


class DimensionMismatch(RetrievalError):
    """A query vector is not as wide as the index's vectors: they come from different embedding models."""


class VectorFileError(RetrievalError):
    """A vector index file that FAISS cannot read or write; the message names the file."""


def _faiss_message(exc: RuntimeError) -> str:
    """The reason in a FAISS error, without the C++ function and source line before it."""
    text = " ".join(str(exc).split())
    return text.rsplit("Error: ", 1)[-1][:300]


def empty_index(settings: RetrievalSettings, dim: int, expected: int = 0) -> faiss.Index:
    import faiss

    if settings.index_type == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efSearch = settings.hnsw_ef_search
        return faiss.IndexIDMap2(hnsw)
    if settings.index_type == "ivf":
        nlist = settings.ivf_nlist or max(1, int(4 * math.sqrt(max(expected, 1))))
        if expected >= nlist * IVF_MIN_PER_CELL:
            quantizer = faiss.IndexFlatIP(dim)
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.nprobe = settings.ivf_nprobe
            return ivf
        # Too few vectors to train the cells: exact search is both better and fast at this size.
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def build(
    settings: RetrievalSettings, dim: int, batches: Iterable[tuple[np.ndarray, np.ndarray]], total: int
):
    """A fresh index over all (ids, vectors) batches; IVF is trained on (a sample of) them first."""
    batches = list(batches)
    index = empty_index(settings, dim, total)
    if not index.is_trained and batches:
        vectors = np.vstack([v for _, v in batches])
        # 64 points per cell trains the centroids well (FAISS asks for 39-256) and keeps k-means short.
        sample = vectors[np.random.default_rng(0).permutation(len(vectors))[: 64 * index.nlist]]
        index.train(sample)
    for ids, vectors in batches:
        index.add_with_ids(vectors, ids)
    return index


def update(index: faiss.Index, remove: list[int], add_ids: list[int], add_vectors: np.ndarray) -> None:
    if remove:
        index.remove_ids(np.asarray(remove, dtype=np.int64))
    if add_ids:
        index.add_with_ids(np.ascontiguousarray(add_vectors, dtype=np.float32), np.asarray(add_ids, np.int64))


def load(path: Path, settings: RetrievalSettings) -> faiss.Index:
    import faiss

    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:  # FAISS reports a truncated or damaged file as a C++ exception
        raise VectorFileError(
            f"cannot read the vector index {path} (damaged?): {_faiss_message(exc)}"
        ) from exc
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if isinstance(inner, faiss.IndexHNSWFlat):
        inner.hnsw.efSearch = settings.hnsw_ef_search
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = settings.ivf_nprobe
    return index


def save(index: faiss.Index, path: Path) -> None:
    import faiss

    try:
        faiss.write_index(index, str(path))
    except RuntimeError as exc:  # a full disk, among others
        raise VectorFileError(f"cannot write the vector index {path}: {_faiss_message(exc)}") from exc
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def search(index: faiss.Index, query: np.ndarray, n: int) -> list[tuple[int, float]]:
    if query.size != index.d:  # FAISS would only assert (or read past the vector)
        raise DimensionMismatch(
            f"the query vector has {query.size} dimensions, the index's vectors {index.d}: the index was built "
            "with another embedding model"
        )
    if index.ntotal == 0:
        return []
    scores, ids = index.search(query.reshape(1, -1).astype(np.float32), min(n, index.ntotal))
    return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]


def is_flat(index: faiss.Index) -> bool:
    import faiss

    return isinstance(index, faiss.IndexIDMap2) and isinstance(
        faiss.downcast_index(index.index), faiss.IndexFlat
    )
