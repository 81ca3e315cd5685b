"""Searching one snapshot: BM25 (FTS5), dense (FAISS), and their calibrated fusion.

Why not reciprocal-rank fusion: on Spanish questions with the English default embedder, BM25 ranks the right
paragraph first ~92% of the time and dense ~49%; RRF weighs both ranks equally and lands at ~72%, below
BM25 alone. Here both scores are computed for every candidate of either retriever, min-max normalised over
the candidates, and mixed with ``dense_weight`` (tuned on data, see docs/benchmarks.md), so the
weaker retriever only breaks near-ties of the stronger one.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from retrieval import store, vectors
from retrieval.types import Hit
from retrieval.words import FUNCTION_WORDS, search_stem

if TYPE_CHECKING:
    import faiss

    from retrieval.config import RetrievalSettings

Mode = Literal["hybrid", "bm25", "dense"]
MODES = ("hybrid", "bm25", "dense")
_WORD = re.compile(r"\w+", re.UNICODE)
BM25_WEIGHTS = (1.0, 0.5)  # text, title columns


@dataclass
class View:
    """An open snapshot: its FAISS index and a read-only connection, shared by searching threads."""

    version: str
    index: faiss.Index
    conn: sqlite3.Connection
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, folder: Path, settings: RetrievalSettings) -> View:
        index = vectors.load(folder / vectors.INDEX_NAME, settings)
        return cls(folder.name, index, store.connect(folder / store.DB_NAME, readonly=True))

    def close(self) -> None:
        self.conn.close()


def match_expression(query: str, max_words: int = 64) -> str | None:
    """FTS5 query matching any of the first ``max_words`` distinct words of ``query`` (quoted, so no word is
    read as an operator), function words left out (:data:`retrieval.words.FUNCTION_WORDS`) unless the query
    has nothing else. A word with a stem (:func:`retrieval.words.search_stem`) matches every indexed word that
    starts with it, so "archivos" finds "archivo" and "indexing" finds "index": on squad-es this puts the
    answering chunk first for 73.9% of the questions instead of 71.9% (hybrid search, docs/benchmarks.md)."""
    content: dict[str, None] = {}
    plain: dict[str, None] = {}
    for match in _WORD.finditer(query):
        word = match.group().lower()
        (plain if word in FUNCTION_WORDS else content).setdefault(word)
        if len(content) >= max_words:
            break
    words = list(content or plain)[:max_words]
    terms = dict.fromkeys(f'"{stem}"*' if (stem := search_stem(w)) else f'"{w}"' for w in words)
    return " OR ".join(terms) or None


def bm25_scores(view: View, query: str, n: int, max_words: int = 64) -> dict[int, float]:
    """Chunk id -> BM25 score (higher is better) of the ``n`` best matches, best first.

    FTS5 scores every matching row to sort them, so a deep list costs little more than a short one; ask
    for one query with a deep list rather than re-running the MATCH for particular rows (which FTS5 does
    once per row: ~50x slower)."""
    expression = match_expression(query, max_words)
    if expression is None:
        return {}
    rank = f"bm25(fts, {BM25_WEIGHTS[0]}, {BM25_WEIGHTS[1]})"
    sql = f"SELECT rowid, -{rank} FROM fts WHERE fts MATCH ? ORDER BY {rank} LIMIT ?"
    with view.lock:
        return {int(i): float(s) for i, s in view.conn.execute(sql, (expression, n))}


def dense_scores(view: View, vector: np.ndarray, n: int) -> dict[int, float]:
    return dict(vectors.search(view.index, vector, n))


def cosine_of(view: View, vector: np.ndarray, ids: list[int]) -> dict[int, float]:
    if not ids:
        return {}
    with view.lock:
        rows = view.conn.execute(
            f"SELECT id, vector FROM chunks WHERE id IN ({','.join('?' * len(ids))})", ids
        )
        return {int(i): float(np.frombuffer(b, dtype=np.float32) @ vector) for i, b in rows}


def _minmax(scores: dict[int, float], ids: list[int]) -> dict[int, float]:
    values = [scores.get(i, 0.0) for i in ids]
    low, high = min(values), max(values)
    span = high - low
    if span <= 0:  # one candidate, or all tied: each is as good as the best
        return {i: 1.0 if high > 0 else 0.0 for i in ids}
    return {i: (scores.get(i, 0.0) - low) / span for i in ids}


def fuse(bm25: dict[int, float], dense: dict[int, float], weight: float) -> dict[int, float]:
    """``weight`` * normalised dense + (1 - weight) * normalised BM25 over the union of candidates."""
    ids = list(dict.fromkeys([*bm25, *dense]))
    if not ids:
        return {}
    b, d = _minmax(bm25, ids), _minmax(dense, ids)
    return {i: weight * d[i] + (1 - weight) * b[i] for i in ids}


def pool(
    view: View,
    query: str,
    vector: np.ndarray,
    dense: dict[int, float],
    n: int,
    depth: int,
    max_words: int = 64,
    without: frozenset[int] = frozenset(),
) -> tuple[dict[int, float], dict[int, float]]:
    """BM25 and dense scores for every chunk among the top ``n`` of either retriever (``dense``: the dense
    top ``n``), the chunks ``without`` left out as if they were not there."""
    deep = best(bm25_scores(view, query, max(n, depth) + len(without), max_words), max(n, depth), without)
    bm25 = dict(list(deep.items())[:n])
    # Dense candidates get their BM25 score from the deep list; beyond it they count as 0, which min-max
    # normalisation puts at (or next to) the bottom, where a chunk ranked past ``depth`` belongs anyway.
    bm25 |= {i: deep[i] for i in dense if i in deep}
    dense = dense | cosine_of(view, vector, [i for i in bm25 if i not in dense])
    return bm25, dense


def best(scores: dict[int, float], n: int, without: frozenset[int]) -> dict[int, float]:
    """The first ``n`` of ``scores`` (best first, read ``len(without)`` deeper than ``n``) that are not
    ``without``; ``scores`` as they are when there is nothing to leave out."""
    if not without:
        return scores
    return dict(list((i, s) for i, s in scores.items() if i not in without)[:n])


def rank(
    view: View,
    query: str,
    vector: np.ndarray | None,
    k: int,
    mode: Mode,
    settings: RetrievalSettings,
    without: frozenset[int] = frozenset(),
) -> list[tuple[int, float, dict[str, float]]]:
    """(chunk id, score, component scores) best first; the chunks ``without`` are no candidates: each
    retriever's list is read that much deeper and cut back to its usual length without them, so the
    candidates are those of a collection without them."""
    n, more = max(k, settings.candidates), len(without)
    if mode == "bm25":
        ranked = best(bm25_scores(view, query, n + more, settings.max_query_words), n, without)
        return [(i, s, {"bm25": s}) for i, s in _top(ranked, k)]
    assert vector is not None
    dense = best(dense_scores(view, vector, n + more), n, without)
    if mode == "dense":
        return [(i, s, {"dense": s}) for i, s in _top(dense, k)]
    bm25, dense = pool(view, query, vector, dense, n, settings.bm25_depth, settings.max_query_words, without)
    fused = fuse(bm25, dense, settings.dense_weight)
    return [(i, s, {"bm25": bm25.get(i, 0.0), "dense": dense[i]}) for i, s in _top(fused, k)]


def _top(scores: dict[int, float], k: int) -> list[tuple[int, float]]:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]


def hits(view: View, ranked: list[tuple[int, float, dict[str, float]]]) -> list[Hit]:
    with view.lock:
        rows = store.chunk_rows(view.conn, [i for i, _, _ in ranked])
    out = []
    for chunk_id, score, parts in ranked:
        row = rows.get(chunk_id)
        if row is None:  # the index and the records disagree: never expected, never fatal to a search
            continue
        meta = {
            "file": row["file"],
            "start": row["start"],
            "end": row["end"],
            "ordinal": row["ordinal"],
            **parts,
        }
        out.append(Hit(chunk_id, row["text"], row["source"], float(score), row["title"], row["page"], meta))
    return out
