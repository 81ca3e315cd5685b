"""The record database of one snapshot (SQLite): source files, chunks with their vectors, and BM25.

BM25 is SQLite FTS5 (``bm25()`` ranking, ``unicode61`` tokenizer: lowercase, accents removed) kept in step
with the chunk table by triggers, so it is versioned and crash-safe with everything else, and nothing is
pickled. Vectors are stored here too (float32 blobs): they are the source the FAISS index is built from, and
what lets a changed file reuse the embedding of every chunk whose text did not change.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
DB_NAME = "records.sqlite"
# Prefixed to a record's hash so that it matches no content: the next sync reads the file again.
STALE = "kept:"
_STALE = re.compile(r"kept(\d*):")  # kept: once, kept2: twice...

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,          -- relative to the synced folder, '/'-separated
    hash TEXT NOT NULL,             -- sha256 of the content
    size INTEGER NOT NULL,
    status TEXT NOT NULL,           -- 'ok' or 'failed'
    reason TEXT,                    -- why it failed
    part_failures TEXT,             -- JSON {sub-source: reason}, e.g. an unreadable attachment
    indexed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- also the FAISS id; never reused
    file TEXT NOT NULL REFERENCES files(path),
    source TEXT NOT NULL,           -- file path, or e.g. 'box.mbox#3/report.pdf'
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    title TEXT,
    page INTEGER,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    text_hash TEXT NOT NULL,        -- sha256 of what was embedded
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file);
CREATE INDEX IF NOT EXISTS chunks_text_hash ON chunks(text_hash);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
    text, title, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO fts(rowid, text, title) VALUES (new.id, new.text, new.title);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO fts(fts, rowid, text, title) VALUES ('delete', old.id, old.text, old.title);
END;
"""


@dataclass(frozen=True)
class FileRecord:
    path: str
    hash: str
    size: int
    status: str
    reason: str | None
    part_failures: str | None


@dataclass(frozen=True)
class NewChunk:
    file: str
    source: str
    ordinal: int
    text: str
    title: str | None
    page: int | None
    start: int
    end: int
    text_hash: str


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=FULL")
    conn.row_factory = sqlite3.Row
    return conn


def create(path: Path) -> sqlite3.Connection:
    conn = connect(path)
    conn.executescript(SCHEMA)
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    conn.commit()
    return conn


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def files(conn: sqlite3.Connection) -> dict[str, FileRecord]:
    rows = conn.execute("SELECT path, hash, size, status, reason, part_failures FROM files")
    return {r["path"]: FileRecord(*r) for r in rows}


def chunk_ids_of(conn: sqlite3.Connection, path: str) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM chunks WHERE file = ? ORDER BY id", (path,))]


def chunk_ids_from(conn: sqlite3.Connection, sources: list[str]) -> list[int]:
    """The chunks of these sources (a file, or a part of one such as 'box.mbox#3/report.pdf')."""
    marks = ",".join("?" * len(sources))
    return [r[0] for r in conn.execute(f"SELECT id FROM chunks WHERE source IN ({marks})", sources)]


def vectors_by_hash(conn: sqlite3.Connection, hashes: list[str]) -> dict[str, np.ndarray]:
    """Stored vectors for any of ``hashes`` (chunks whose text is unchanged keep their embedding)."""
    found: dict[str, np.ndarray] = {}
    for i in range(0, len(hashes), 500):
        batch = hashes[i : i + 500]
        marks = ",".join("?" * len(batch))
        for h, blob in conn.execute(
            f"SELECT text_hash, vector FROM chunks WHERE text_hash IN ({marks})", batch
        ):
            found.setdefault(h, np.frombuffer(blob, dtype=np.float32))
    return found


def delete_file(conn: sqlite3.Connection, path: str) -> list[int]:
    """Remove a file's record and its chunks; returns the removed chunk ids."""
    ids = chunk_ids_of(conn, path)
    conn.execute("DELETE FROM chunks WHERE file = ?", (path,))
    conn.execute("DELETE FROM files WHERE path = ?", (path,))
    return ids


def put_file(conn: sqlite3.Connection, record: FileRecord, now: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
        (record.path, record.hash, record.size, record.status, record.reason, record.part_failures, now),
    )


def stale_tries(file_hash: str) -> int:
    """How many times in a row the file of a record with this hash failed to be read for a passing reason
    (:func:`mark_stale`); 0 for a record that is not marked."""
    match = _STALE.match(file_hash)
    return 0 if match is None else int(match.group(1) or 1)


def stale_hash(file_hash: str, tries: int = 1) -> str:
    """``file_hash`` marked as read ``tries`` times without success: it matches no content, so the next sync
    reads the file again."""
    return f"kept{tries if tries > 1 else ''}:{_STALE.sub('', file_hash, count=1)}"


def mark_stale(conn: sqlite3.Connection, path: str, tries: int = 1) -> None:
    """Keep a file's record and chunks (searchable as they are) but have the next sync read the file again,
    as after a failure that says nothing about its content (a parser stopped for time)."""
    row = conn.execute("SELECT hash FROM files WHERE path = ?", (path,)).fetchone()
    if row is not None:
        conn.execute("UPDATE files SET hash = ? WHERE path = ?", (stale_hash(row[0], tries), path))


def add_chunks(conn: sqlite3.Connection, chunks: list[NewChunk], vectors: np.ndarray) -> list[int]:
    ids = []
    for chunk, vector in zip(chunks, vectors, strict=True):
        cursor = conn.execute(
            "INSERT INTO chunks (file, source, ordinal, text, title, page, start, end, text_hash, vector) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (chunk.file, chunk.source, chunk.ordinal, chunk.text, chunk.title, chunk.page, chunk.start,
             chunk.end, chunk.text_hash, np.asarray(vector, dtype=np.float32).tobytes()),
        )  # fmt: skip
        ids.append(int(cursor.lastrowid))
    return ids


def all_vectors(conn: sqlite3.Connection, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) in batches, for rebuilding an approximate index."""
    cursor = conn.execute("SELECT id, vector FROM chunks ORDER BY id")
    while rows := cursor.fetchmany(batch):
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        yield ids, np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows])


def chunk_rows(conn: sqlite3.Connection, ids: list[int]) -> dict[int, sqlite3.Row]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT id, file, source, ordinal, text, title, page, start, end FROM chunks WHERE id IN ({marks})",
        ids,
    )
    return {r["id"]: r for r in rows}


def count_chunks(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])


def copy_file(
    source: sqlite3.Connection, target: sqlite3.Connection, path: str, hash_prefix: str = ""
) -> None:
    """Copy a file's record and its chunks (with their vectors) from one snapshot's database to another's;
    ``hash_prefix`` marks the copied record's hash, so that the next sync reads the file again."""
    row = source.execute(
        "SELECT path, hash, size, status, reason, part_failures, indexed_at FROM files WHERE path = ?",
        (path,),
    ).fetchone()
    if row is None:
        return
    target.execute("DELETE FROM chunks WHERE file = ?", (path,))
    target.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (row[0], hash_prefix + row[1], *tuple(row)[2:]))  # fmt: skip
    columns = "file, source, ordinal, text, title, page, start, end, text_hash, vector"
    for chunk in source.execute(f"SELECT {columns} FROM chunks WHERE file = ? ORDER BY id", (path,)):
        target.execute(f"INSERT INTO chunks ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tuple(chunk))
