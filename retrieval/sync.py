"""One incremental sync of a folder into a collection: plan by content hash, load and chunk what changed,
embed only texts never embedded before, write a new snapshot and switch to it atomically.

Files are parsed in a child process under a deadline (retrieval/isolation.py); whatever goes wrong with one
file (unreadable, vanished, too slow, too big, malformed) is reported as that file's failure and the sync goes
on; a file or folder that cannot be read keeps what was indexed from it (retrieval/plan.py).

A failure is cached (the file is not read again until its content changes, or the loader limits do) only when
the file caused it: a parser stopped for time, killed or never started (:class:`~retrieval.errors.ParserFailure`)
says as much about the machine as about the file, so the file keeps what was indexed from it and is tried
again at the next sync. Every record carries the hash of the
bytes actually parsed, never the planning pass's: a file rewritten in between is simply read again next time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrieval import snapshot, store, vectors
from retrieval.chunking import chunk_document
from retrieval.errors import LoadError, ParserFailure
from retrieval.isolation import ParserProcess
from retrieval.plan import (
    Plan,
    check_deletions,
    embedded_alike,
    fingerprint,
    index_fingerprint,
    keep_rows,
    limits_fingerprint,
    plan,
)
from retrieval.types import SyncReport
from retrieval.unfinished import UnfinishedVectors
from retrieval.walk import read_file

if TYPE_CHECKING:
    from retrieval.config import Host
    from retrieval.embedding import Embedder

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


@dataclass
class Pending:
    """Files loaded and chunked, waiting for their embeddings to be written in one batch."""

    records: list[tuple[store.FileRecord, list[store.NewChunk]]] = field(default_factory=list)
    chunks: int = 0


class _closing:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


def run_sync(
    root: Path,
    name: str,
    folder: Path,
    settings: Host,
    embedder: Embedder,
    progress: Progress | None,
    allow_mass_delete: bool = False,
) -> SyncReport:
    """Sync ``folder`` into the collection at ``root``; the caller holds the sync lock. A sync that would
    delete most files or switch folders raises MassDeleteError, before anything is written, unless
    ``allow_mass_delete``. A current version found damaged (by a search, or on the way) is set aside and the
    sync done from the folder alone (:func:`_set_aside_if_damaged`)."""

    def attempt(damaged: tuple[str, str] | None) -> SyncReport:
        return _sync(root, name, folder, settings, embedder, progress, allow_mass_delete, damaged)

    damaged = None
    if (repaired := snapshot.repair_pointer(root)) is not None:
        damaged = (snapshot.POINTER, repaired)
    if (root / snapshot.DAMAGED).exists():  # a search found the current version damaged
        damaged = _set_aside_if_damaged(root, name, settings) or damaged
        (root / snapshot.DAMAGED).unlink(missing_ok=True)
    try:
        return attempt(damaged)
    except (sqlite3.DatabaseError, vectors.VectorFileError) as exc:
        if isinstance(exc, sqlite3.OperationalError):  # locked, disk full, I/O: not the file's content
            raise
        damaged = _set_aside_if_damaged(root, name, settings)
        if damaged is None:
            raise
        return attempt(damaged)


def _sync(root, name, folder, settings, embedder, progress, allow_mass_delete, damaged) -> SyncReport:
    started = time.perf_counter()
    snapshot.clean_incomplete(root)
    p = plan(root, folder, settings)
    check_deletions(p, name, allow_mass_delete)
    if (previous := snapshot.current(root)) is not None:
        with _closing(store.connect(previous / store.DB_NAME, readonly=True)) as conn:
            p.same_model = embedded_alike(conn, settings, embedder)
        if not p.same_model and not p.rebuild:  # the same name, other weights: the settings cannot tell
            log.warning("collection %s: %s now holds another model than the one that indexed it; "
                        "every file is indexed again", name, settings.models.embedding)  # fmt: skip
            p.rebuild = True
    report = SyncReport(unsupported=p.unsupported, deleted=p.deleted)
    for where, reason in p.lost_dirs.items():
        kept = sum(1 for folder in p.unseen.values() if folder == where)
        report.failed[f"{where}/"] = f"{reason}; the {kept} files indexed from it before are kept"
    report.failed.update(p.kept)
    if damaged:
        report.failed[f"{damaged[0]}/"] = damaged[1]
    todo = [rel for rel in p.entries if not p.unchanged(rel)]
    for rel in p.entries:
        if p.unchanged(rel):
            old = p.previous[rel]
            report.failed.update(
                {rel: old.reason} if old.status == "failed" else json.loads(old.part_failures or "{}")
            )
            if old.status == "ok":
                report.unchanged.append(rel)
    if todo or p.deleted or p.rebuild or p.reindex:
        with ParserProcess(settings.retrieval) as parser:
            _write_version(root, p, todo, settings, embedder, report, progress, parser)
    elif progress:
        progress(len(p.entries), len(p.entries), "")
    previous = snapshot.current(root)
    if previous is not None:
        with _closing(store.connect(previous / store.DB_NAME, readonly=True)) as conn:
            report.chunks_total = store.count_chunks(conn)
    report.seconds = round(time.perf_counter() - started, 3)
    summary = {"time": _now(), "folder": str(folder), **_counts(report)}
    snapshot.record_last_sync(root, summary)
    return report


def _write_version(root, p: Plan, todo, settings, embedder, report, progress, parser: ParserProcess) -> None:
    name, staging = snapshot.stage(root)
    previous = snapshot.current(root)
    conn = reuse = kept = None
    try:
        if previous is not None and not p.rebuild:
            shutil.copyfile(previous / store.DB_NAME, staging / store.DB_NAME)
        if previous is not None and p.same_model:  # another embedding model: no stored vector is valid
            reuse = store.connect(previous / store.DB_NAME, readonly=True)
        conn = store.create(staging / store.DB_NAME)
        kept = UnfinishedVectors(root, embedder)
        writer = _Writer(conn, reuse, settings, embedder, kept)
        for rel in p.deleted:
            writer.removed += store.delete_file(conn, rel)
        if p.rebuild and reuse is not None:  # a fresh database: bring along what cannot be read again now
            for rel in p.untouched:
                keep_rows(reuse, conn, rel)
        done = len(p.entries) - len(todo)
        for rel in todo:
            _load_one(rel, p, settings, embedder, writer, report, parser)
            done += 1
            if progress:
                progress(done, len(p.entries), rel)
        writer.flush()
        store.set_meta(conn, "fingerprint", fingerprint(settings))
        store.set_meta(conn, "probe", embedder.probe_record())
        store.set_meta(conn, "index", index_fingerprint(settings))
        store.set_meta(conn, "limits", limits_fingerprint(settings))
        store.set_meta(conn, "folder", str(p.folder))
        store.set_meta(conn, "version", name)
        store.set_meta(conn, "synced_at", _now())
        conn.commit()
        report.chunks_embedded = writer.embedded
        report.chunks_kept = kept.kept
        _write_index(
            previous, staging, conn, writer, p.rebuild or p.reindex or reuse is None, settings, embedder
        )
        conn.close()
        snapshot.publish(root, staging, name, settings.retrieval.keep_versions)
        kept.finished()
    except BaseException:
        if conn is not None:
            conn.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if reuse is not None:
            reuse.close()
        if kept is not None:
            kept.close()


def _load_one(rel: str, p: Plan, settings, embedder, writer: _Writer, report, parser: ParserProcess) -> None:
    old = p.previous.get(rel)
    if rel in p.problems:  # skipped (a link out of the folder...) or unreadable since the scan: not read
        report.failed[rel] = p.problems[rel]
        writer.add(store.FileRecord(rel, p.hashes[rel], 0, "failed", p.problems[rel], None), [])
        return
    data = None
    try:
        data = _read(rel, p, settings)
        loaded = parser.load(data, rel)
        chunks = _passages(loaded, embedder, settings)
    except ParserFailure as exc:
        tries = (store.stale_tries(old.hash) if old is not None else 0) + 1
        if tries < PARSER_TRIES:
            _not_cached(
                rel,
                f"{exc}; tried again at the next sync ({tries} of {PARSER_TRIES})",
                p,
                writer,
                report,
                tries,
            )
            return
        # every try failed: kept as this content's failure, read again when the file or the limits change
        reason = f"{exc} ({tries} tries; read again when the file or the retrieval limits change)"
        report.failed[rel] = reason
        writer.add(store.FileRecord(rel, _sha256(data), len(data), "failed", reason, None), [])
        return
    except LoadError as exc:
        digest, size = (_sha256(data), len(data)) if data is not None else (p.hashes[rel], p.sizes[rel])
        report.failed[rel] = str(exc)
        writer.add(store.FileRecord(rel, digest, size, "failed", str(exc), None), [])
        return
    except OSError as exc:  # vanished, or made unreadable, since the plan
        _not_cached(rel, f"cannot read: {exc.strerror or exc}", p, writer, report)
        return
    report.failed.update(loaded.failures)
    # A file that failed before was not in the index: indexing it now adds it.
    (report.updated if old is not None and old.status == "ok" else report.added).append(rel)
    parts = json.dumps(loaded.failures) if loaded.failures else None
    new = [
        store.NewChunk(rel, c.source, c.ordinal, c.text, c.title, c.page, c.start, c.end,
                       _text_hash(settings.retrieval.passage_prefix + _embedded_text(c.text, c.title, settings)))
        for c in chunks
    ]  # fmt: skip
    writer.add(store.FileRecord(rel, _sha256(data), len(data), "ok", None, parts), new)


def _passages(loaded, embedder: Embedder, settings) -> list:
    """The chunks of a file's documents. Nothing a file contains may stop the sync: an error cutting it (text
    the tokenizer refuses, say) fails this file, by name, and the sync goes on."""
    r = settings.retrieval
    try:
        return [
            chunk
            for doc in loaded.documents
            for chunk in chunk_document(doc, embedder.token_starts, r.chunk_tokens, r.chunk_overlap)
        ]
    except Exception as exc:  # noqa: BLE001
        log.warning("cannot cut a file into passages", exc_info=exc)
        raise LoadError(f"cannot be cut into passages ({type(exc).__name__}: {exc})") from exc


# A parser stopped, killed or not started this many syncs in a row for one file: the failure is then kept like
# any other (each try costs up to retrieval.load_timeout, and a new version of the collection).
PARSER_TRIES = 3


def damage(version: Path, settings: Host) -> str | None:
    """What is wrong with a snapshot's files, or None when its record database passes SQLite's quick check
    and FAISS reads its vector index."""
    try:
        with _closing(store.connect(version / store.DB_NAME, readonly=True)) as conn:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            return f"{store.DB_NAME}: {result}"
        vectors.load(version / vectors.INDEX_NAME, settings.retrieval)
    except sqlite3.DatabaseError as exc:
        return f"{store.DB_NAME}: {exc}"
    except vectors.VectorFileError as exc:
        return str(exc)
    return None


def _set_aside_if_damaged(root: Path, name: str, settings: Host) -> tuple[str, str] | None:
    """A damaged current version (a disk error, a file truncated by hand) cannot be updated: it is set aside
    and the sync rebuilds the collection from the folder. Checked only once reading it has failed, in a
    search or in this sync (the check reads the whole index). Returns (version, what happened) for the report, or None if it is sound."""
    current = snapshot.current(root)
    problem = damage(current, settings) if current is not None else None
    if problem is None:
        return None
    aside = snapshot.set_aside(root, current)
    log.warning("collection %s: version %s is damaged (%s); set aside as %s, rebuilding", name, current.name,
                problem, aside.name)  # fmt: skip
    return (
        current.name,
        f"damaged ({problem}): set aside as {aside.name}; the collection is rebuilt from the folder",
    )


def _read(rel: str, p: Plan, settings) -> bytes:
    """The file's bytes, or LoadError for a file over ``max_file_mb`` (not read at all)."""
    limit = settings.retrieval.max_file_mb * 1_000_000
    if p.sizes[rel] > limit:
        raise LoadError(
            f"file is {p.sizes[rel] / 1e6:.1f} MB, over the limit retrieval.max_file_mb="
            f"{settings.retrieval.max_file_mb}"
        )
    return read_file(p.files[rel], limit)


def _not_cached(rel: str, reason: str, p: Plan, writer: _Writer, report, tries: int = 1) -> None:
    """Report a failure that says nothing lasting about the content: a file indexed before keeps its
    passages; any other gets a record whose hash matches no content. Either way the next sync reads it again
    (``tries``: the how-manieth failure in a row, kept in the record's hash)."""
    old = p.previous.get(rel)
    if old is not None and old.status == "ok":
        report.failed[rel] = f"{reason}; the version indexed before is kept"
        if p.rebuild and writer.reuse is not None:  # a fresh database: bring the record along
            keep_rows(writer.reuse, writer.conn, rel)
        store.mark_stale(writer.conn, rel, tries)
        return
    report.failed[rel] = reason
    writer.add(
        store.FileRecord(rel, store.stale_hash("unread", tries), p.sizes[rel], "failed", reason, None), []
    )


class _Writer:
    """Buffers loaded files and writes them (with their vectors) a few hundred chunks at a time."""

    def __init__(self, conn, reuse, settings: Host, embedder: Embedder, kept: UnfinishedVectors) -> None:
        self.conn, self.reuse, self.settings, self.embedder = conn, reuse, settings, embedder
        self.kept = kept  # vectors a stopped sync embedded; what this one embeds goes there too
        self.pending = Pending()
        self.removed: list[int] = []
        self.added_ids: list[int] = []
        self.added_vectors: list[np.ndarray] = []
        self.embedded = 0
        self.flush_at = 8 * settings.retrieval.embed_batch_size

    def add(self, record: store.FileRecord, chunks: list[store.NewChunk]) -> None:
        self.pending.records.append((record, chunks))
        self.pending.chunks += len(chunks)
        if self.pending.chunks >= self.flush_at:
            self.flush()

    def flush(self) -> None:
        chunks = [c for _, cs in self.pending.records for c in cs]
        hashes = sorted({c.text_hash for c in chunks})
        known = store.vectors_by_hash(self.conn, hashes)  # the copied snapshot + what this sync added
        if self.reuse is not None and len(known) < len(hashes):
            known = store.vectors_by_hash(self.reuse, [h for h in hashes if h not in known]) | known
        if len(known) < len(hashes):
            known = self.kept.get([h for h in hashes if h not in known]) | known
        missing: dict[str, str] = {}
        for chunk in chunks:
            if chunk.text_hash not in known:
                missing.setdefault(chunk.text_hash, _embedded_text(chunk.text, chunk.title, self.settings))
        if missing:
            fresh = dict(zip(missing, self.embedder.embed_passages(list(missing.values())), strict=True))
            self.kept.put(fresh)
            known.update(fresh)
            self.embedded += len(missing)
        now = _now()
        for record, file_chunks in self.pending.records:
            self.removed += store.delete_file(self.conn, record.path)
            store.put_file(self.conn, record, now)
            if file_chunks:
                matrix = np.vstack([known[c.text_hash] for c in file_chunks])
                self.added_ids += store.add_chunks(self.conn, file_chunks, matrix)
                self.added_vectors.append(matrix)
        self.pending = Pending()


def _write_index(previous, staging, conn, writer: _Writer, rebuild: bool, settings, embedder) -> None:
    path = staging / vectors.INDEX_NAME
    old = None
    if previous is not None and not rebuild and (previous / vectors.INDEX_NAME).is_file():
        old = vectors.load(previous / vectors.INDEX_NAME, settings.retrieval)
    if old is not None and vectors.is_flat(old) and settings.retrieval.index_type == "flat":
        added = np.vstack(writer.added_vectors) if writer.added_vectors else None
        vectors.update(old, writer.removed, writer.added_ids, added)
        vectors.save(old, path)
        return
    total = store.count_chunks(conn)
    dim = writer.added_vectors[0].shape[1] if writer.added_vectors else (old.d if old else embedder.dimension)
    vectors.save(vectors.build(settings.retrieval, dim, store.all_vectors(conn), total), path)


def _embedded_text(text: str, title: str | None, settings: Host) -> str:
    if settings.retrieval.embed_with_title and title and not text.startswith(title):
        return f"{title}\n{text}"
    return text


def _sha256(data: bytes) -> str:
    """The content hash of the bytes parsed (as retrieval.walk.file_hash computes it for the plan)."""
    return hashlib.sha256(data).hexdigest()


def _text_hash(text: str) -> str:
    return _sha256(text.encode("utf-8"))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _counts(report: SyncReport) -> dict:
    return {
        "added": len(report.added),
        "updated": len(report.updated),
        "deleted": len(report.deleted),
        "unchanged": len(report.unchanged),
        "failed": len(report.failed),
        "chunks_embedded": report.chunks_embedded,
    }
