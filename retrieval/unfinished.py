"""The vectors a sync embedded before it was stopped, so that the next sync does not embed them again.

A sync builds its new version in a staging folder that an interrupted sync leaves unpublished (and the next
sync deletes): the collection is never half-updated. Embedding is most of a sync's time, though (hours for a
large first index on a CPU), so each batch of fresh vectors is also committed here, keyed by the hash of what
was embedded. The next sync takes from here what it would otherwise embed again, and, once it publishes its
version, deletes the file: from then on that version is where unchanged chunks find their vectors.

The file is a cache and never a source of truth: one recorded by another embedding model (told by its probe
vectors, as for a version), or one that cannot be read, is deleted and the sync embeds as if it were not there.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from retrieval.embedding import Embedder

log = logging.getLogger(__name__)

NAME = "unfinished-sync.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (text_hash TEXT PRIMARY KEY, vector BLOB NOT NULL);
"""


class UnfinishedVectors:
    """Vectors of an unfinished sync of one collection (``root``), for the embedding model ``embedder``."""

    def __init__(self, root: Path, embedder: Embedder) -> None:
        self.path = root / NAME
        self.embedder = embedder
        self.conn: sqlite3.Connection | None = None
        self.kept = 0  # vectors found here instead of embedded again, for reports and tests
        try:
            self.conn = self._connect()
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'probe'").fetchone()
        except sqlite3.DatabaseError as exc:
            self._reset(f"it cannot be read ({exc})")
            return
        if row is None:
            self._record_probe()
        elif embedder.same_weights(row[0]) is False:
            self._reset("another embedding model made them")
        elif found := self.conn.execute("SELECT count(*) FROM vectors").fetchone()[0]:
            log.info("%s: %d vectors embedded by a sync that did not finish are used again", root.name, found)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # a cache: a batch torn by a power cut is embedded again
        conn.executescript(_SCHEMA)
        return conn

    def _record_probe(self) -> None:
        assert self.conn is not None
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('probe', ?)", (self.embedder.probe_record(),))
        self.conn.commit()

    def _reset(self, why: str) -> None:
        """Start empty (the sync embeds as if nothing were kept); without the file if even that fails."""
        log.warning("%s: the vectors of an unfinished sync are not used: %s", self.path, why)
        self.finished()
        try:
            self.conn = self._connect()
            self._record_probe()
        except (sqlite3.DatabaseError, OSError) as exc:
            log.warning("%s: the sync keeps no vectors if stopped (%s)", self.path, exc)
            self.close()

    def get(self, hashes: list[str]) -> dict[str, np.ndarray]:
        """The stored vectors of any of ``hashes``."""
        if self.conn is None or not hashes:
            return {}
        found: dict[str, np.ndarray] = {}
        try:
            for i in range(0, len(hashes), 500):
                batch = hashes[i : i + 500]
                marks = ",".join("?" * len(batch))
                rows = self.conn.execute(
                    f"SELECT text_hash, vector FROM vectors WHERE text_hash IN ({marks})", batch
                )
                found.update((h, np.frombuffer(blob, dtype=np.float32)) for h, blob in rows)
        except sqlite3.DatabaseError as exc:
            self._reset(f"it cannot be read ({exc})")
            return {}
        self.kept += len(found)
        return found

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        """Commit freshly embedded vectors (one batch: a stop loses at most the batch being embedded)."""
        if self.conn is None or not vectors:
            return
        try:
            self.conn.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                [(h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()],
            )
            self.conn.commit()
        except sqlite3.DatabaseError as exc:  # a full disk, say: the sync goes on without keeping them
            self._reset(f"they cannot be written ({exc})")

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sqlite3.DatabaseError):
                self.conn.close()
            self.conn = None

    def finished(self) -> None:
        """The sync published its version: what is here is there too."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
