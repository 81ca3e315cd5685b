"""A named document collection: the public surface the chat chain, the CLI and the UI call.

col = Collection.open(settings, "handbook")
report = col.sync(Path("docs/"))          # incremental; atomic; one sync at a time per collection
hits = col.search("¿A qué hora abre?", k=5)  # hybrid BM25 + dense, best first
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shlex
import shutil
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrieval import snapshot, store, vectors
from retrieval.errors import CollectionError, RetrievalError, SettingsError
from retrieval.search import MODES, Mode, View, hits, rank
from retrieval.sync import Progress, run_sync
from retrieval.types import Hit, SyncReport

if TYPE_CHECKING:
    from retrieval.config import Host
    from retrieval.embedding import Embedder

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # whole names only: fullmatch (a "$" lets a final newline in)


class DamagedCollection(RetrievalError):
    """The current snapshot's files cannot be read (a disk error, a truncated file); a sync rebuilds it."""


class EmbeddingMismatch(RetrievalError, SettingsError):
    """The collection was indexed with another embedding model than ``models.embedding`` names now: its
    vectors and the query's are not comparable (a FAISS assertion when their widths differ, silently wrong
    results when they do not)."""


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise CollectionError(
            f"invalid collection name {name!r}: use 1 to 64 letters, digits, '_' or '-' "
            "(no spaces, dots or slashes)"
        )
    return name


def collections_dir(settings: Host) -> Path:
    return Path(settings.data_dir) / "collections"


class Collection:
    """One collection on disk. Thread-safe for searching; syncs are serialised by a file lock."""

    def __init__(self, settings: Host, name: str, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.name = validate_name(name)
        self.root = collections_dir(settings) / name
        self._embedder = embedder
        self._view: View | None = None
        # the current view's embedding model, probe and folder, and whether the probe matches this embedder
        self._indexed: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Host, name: str, embedder: Embedder | None = None) -> Collection:
        """Open the collection ``name``, creating it (empty) if it does not exist."""
        collection = cls(settings, name, embedder)
        collection.root.mkdir(parents=True, exist_ok=True)
        return collection

    @classmethod
    def list(cls, settings: Host) -> list[str]:
        base = collections_dir(settings)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and NAME.fullmatch(p.name))

    @classmethod
    def exists(cls, settings: Host, name: str) -> bool:
        return (collections_dir(settings) / validate_name(name)).is_dir()

    @classmethod
    def delete(cls, settings: Host, name: str) -> None:
        """Delete a collection and all its snapshots; refused while a sync of it is running."""
        root = collections_dir(settings) / validate_name(name)
        if not root.is_dir():
            raise CollectionError(f"collection {name!r} does not exist")
        with snapshot.sync_lock(root, name):
            shutil.rmtree(root)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from retrieval.embedding import Embedder

            self._embedder = Embedder(self.settings)
        return self._embedder

    # -- sync ------------------------------------------------------------------------------------------

    def sync(
        self, folder: str | Path, progress: Progress | None = None, *, allow_mass_delete: bool = False
    ) -> SyncReport:
        """Make the collection match ``folder``: add new files, re-index changed ones, drop deleted ones.

        ``progress(done, total, path)`` is called after each file. Raises CollectionLockedError when another
        sync of this collection is running, and MassDeleteError (a CollectionError), before writing anything,
        when the sync would delete every file (2 or more), over half of 10 or more, or any file of a collection
        last synced from another folder, unless ``allow_mass_delete``.
        """
        folder = Path(folder).expanduser().resolve()
        if not folder.is_dir():
            raise CollectionError(f"cannot sync collection {self.name!r}: {folder} is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        with snapshot.sync_lock(self.root, self.name):
            report = run_sync(
                self.root, self.name, folder, self.settings, self.embedder, progress, allow_mass_delete
            )
        log.info(
            "Synced %s from %s: %d added, %d updated, %d deleted, %d unchanged, %d failed",
            self.name, folder, len(report.added), len(report.updated), len(report.deleted),
            len(report.unchanged), len(report.failed),
        )  # fmt: skip
        return report

    # -- search ----------------------------------------------------------------------------------------

    def search(
        self, query: str, k: int = 5, mode: Mode | None = None, without: Iterable[str] = ()
    ) -> list[Hit]:
        """The ``k`` best chunks for ``query``, best first; ``mode``: 'hybrid' (default), 'bm25', 'dense'.
        ``without``: sources to search as if the collection did not hold them (their chunks are no candidates,
        so they do not set the scale of the fused scores either); the evaluation asks questions so."""
        mode = mode or self.settings.retrieval.search_mode
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        if k < 1 or not query.strip():
            return []
        view = self._current_view()
        if view is None:
            return []
        vector = None
        if mode != "bm25":  # keyword search reads no vectors: it works whatever the model
            self._check_model()
            vector = self.embedder.embed_query(query)
        want = max(k, self.settings.retrieval.rerank_candidates) if self.settings.retrieval.reranker else k
        left_out = frozenset()
        if without:
            with view.lock:
                left_out = frozenset(
                    store.chunk_ids_from(
                        view.conn, sorted({without} if isinstance(without, str) else set(without))
                    )
                )
        try:
            found = hits(view, rank(view, query, vector, want, mode, self.settings.retrieval, left_out))
        except vectors.DimensionMismatch as exc:  # a snapshot that recorded no model (older versions)
            raise self._mismatch(None, str(exc)) from exc
        if self.settings.retrieval.reranker:
            from retrieval.rerank import rerank

            found = rerank(self.settings, query, found)
        return found[:k]

    def _current_view(self) -> View | None:
        folder = snapshot.current(self.root) if self.root.is_dir() else None
        with self._lock:
            if folder is None:
                self._close_view()
                return None
            if self._view is None or self._view.version != folder.name:
                self._close_view()
                view = None
                try:
                    view = View.open(folder, self.settings.retrieval)
                    with view.lock:  # SQLite reads the file at the first query, not at connect
                        recorded = json.loads(store.get_meta(view.conn, "fingerprint") or "{}")
                        indexed = {
                            "model": recorded.get("embedding"),
                            "folder": store.get_meta(view.conn, "folder"),
                            "probe": store.get_meta(view.conn, "probe"),
                        }
                except (vectors.VectorFileError, sqlite3.DatabaseError) as exc:
                    if view is not None:
                        view.close()
                    with contextlib.suppress(OSError):  # the next sync checks it and rebuilds
                        (self.root / snapshot.DAMAGED).write_text(f"{folder.name}: {exc}\n", encoding="utf-8")
                    raise DamagedCollection(
                        f"collection {self.name!r}: its current version {folder} is damaged ({exc}); "
                        f"`chatbot index {self.name} FOLDER` sets it aside and rebuilds the collection"
                    ) from exc
                self._view, self._indexed = view, indexed
            return self._view

    def _check_model(self) -> None:
        """Raise EmbeddingMismatch when the current snapshot was embedded by another model than the
        configured one (a sync with the new model rebuilds it: retrieval/sync.py re-embeds every chunk).
        Told by the snapshot's probe vectors where it recorded them (``plan.embedded_alike``), else by name."""
        indexed = self._indexed.get("model")
        if "same" not in self._indexed:  # once per version opened (it reads ~8 kB of JSON)
            self._indexed["same"] = self.embedder.same_weights(self._indexed.get("probe"))
        same = self._indexed["same"]
        if same is False:
            raise self._mismatch(indexed, other_weights=indexed == self.settings.models.embedding)
        if same is None and indexed is not None and indexed != self.settings.models.embedding:
            raise self._mismatch(indexed)

    def _mismatch(
        self, indexed: str | None, detail: str = "", other_weights: bool = False
    ) -> EmbeddingMismatch:
        folder = self._indexed.get("folder")
        command = f"chatbot index {self.name} {shlex.quote(folder) if folder else 'FOLDER'}"
        if other_weights:  # the same name, another model behind it (a local folder given new weights)
            return EmbeddingMismatch(
                f"collection {self.name!r} was indexed with the model {indexed!r} held then; it holds another "
                f"model now (models.embedding): re-run `{command}` (it rebuilds the index with the new model) "
                "or put the former model back"
            )
        if indexed is None:  # a snapshot that recorded no model: only the widths tell
            was, back = f"was indexed with another embedding model ({detail})", ""
        else:
            was, back = f"was indexed with {indexed!r}", f" or set models.embedding back to {indexed!r}"
        return EmbeddingMismatch(
            f"collection {self.name!r} {was}; settings now say {self.settings.models.embedding!r} "
            f"(models.embedding): re-run `{command}` (it rebuilds the index with the new model){back}"
        )

    def _close_view(self) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None

    def close(self) -> None:
        with self._lock:
            self._close_view()

    # -- stats -----------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Files, chunks, last sync time, failures {path: reason} and the current snapshot version."""
        last = snapshot.read_last_sync(self.root)
        out: dict[str, Any] = {"name": self.name, "files": 0, "chunks": 0, "last_sync": last.get("time"),
                               "failures": {}, "version": None, "folder": last.get("folder")}  # fmt: skip
        folder = snapshot.current(self.root) if self.root.is_dir() else None
        if folder is None:
            return out
        conn = store.connect(folder / store.DB_NAME, readonly=True)
        try:
            records = store.files(conn).values()
            out["files"] = sum(r.status == "ok" for r in records)
            out["chunks"] = store.count_chunks(conn)
            out["failures"] = _failures(records)
            out["embedding_model"] = json.loads(store.get_meta(conn, "fingerprint") or "{}").get("embedding")
            out["folder"] = store.get_meta(conn, "folder") or out["folder"]
        finally:
            conn.close()
        out["version"] = folder.name
        out["index_type"] = self.settings.retrieval.index_type
        out["last_sync_summary"] = {k: v for k, v in last.items() if k not in ("time", "folder")}
        return out


def _failures(records) -> dict[str, str]:
    failures: dict[str, str] = {}
    for record in records:
        if record.status == "failed":
            failures[record.path] = record.reason or "failed"
        elif record.part_failures:
            failures.update(json.loads(record.part_failures))
    return failures
