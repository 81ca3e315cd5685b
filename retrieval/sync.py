"""One incremental sync of a folder into a collection: plan by content hash, load and chunk what changed,
embed only texts never embedded before, write a new snapshot and switch to it atomically."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrieval import snapshot, store, vectors
from retrieval.chunking import chunk_document
from retrieval.errors import LoadError
from retrieval.loaders import PIPELINE_VERSION, is_supported, load_file
from retrieval.types import SyncReport

if TYPE_CHECKING:
    from chatbot.settings import Settings
    from retrieval.embedding import Embedder

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


@dataclass
class Plan:
    folder: Path
    files: dict[str, Path]  # supported files found: relative path -> absolute path
    hashes: dict[str, str]
    sizes: dict[str, int]
    unsupported: list[str]
    previous: dict[str, store.FileRecord]
    rebuild: bool  # the chunking/embedding settings changed: every file is re-read

    @property
    def deleted(self) -> list[str]:
        return sorted(set(self.previous) - set(self.files))

    def unchanged(self, rel: str) -> bool:
        old = self.previous.get(rel)
        return not self.rebuild and old is not None and old.hash == self.hashes[rel]


@dataclass
class Pending:
    """Files loaded and chunked, waiting for their embeddings to be written in one batch."""

    records: list[tuple[store.FileRecord, list[store.NewChunk]]] = field(default_factory=list)
    chunks: int = 0


def fingerprint(settings: Settings) -> str:
    """What the stored chunks and vectors depend on; when it changes, every file is re-indexed."""
    r = settings.retrieval
    parts = {
        "pipeline": PIPELINE_VERSION,
        "embedding": settings.models.embedding,
        "chunk_tokens": r.chunk_tokens,
        "chunk_overlap": r.chunk_overlap,
        "csv_rows_per_chunk": r.csv_rows_per_chunk,
        "embed_with_title": r.embed_with_title,
        "passage_prefix": r.passage_prefix,
        "index_type": r.index_type,  # rebuilding re-reads files but reuses every vector (same texts)
    }
    return json.dumps(parts, sort_keys=True)


def scan(folder: Path, skip_hidden: bool, exclude: Path | None = None) -> tuple[dict[str, Path], list[str]]:
    """Supported files under ``folder`` by relative POSIX path, and the unsupported ones; ``exclude`` (the
    data directory, when it sits inside the folder) is never entered."""
    found: dict[str, Path] = {}
    unsupported: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        if skip_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if exclude is not None:
            dirnames[:] = [d for d in dirnames if (Path(dirpath) / d).resolve() != exclude]
        dirnames.sort()
        for name in sorted(filenames):
            if skip_hidden and name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if not path.is_file():
                continue
            if is_supported(name):
                found[rel] = path
            else:
                unsupported.append(rel)
    return found, unsupported


def file_hash(path: Path, size: int, limit: float) -> str:
    if size > limit:  # never read a file that will be refused anyway; size + mtime identify its content
        return f"oversize:{size}:{path.stat().st_mtime_ns}"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def plan(root: Path, folder: Path, settings: Settings) -> Plan:
    files, unsupported = scan(folder, settings.retrieval.skip_hidden, Path(settings.data_dir).resolve())
    limit = settings.retrieval.max_file_mb * 1_000_000
    sizes = {rel: path.stat().st_size for rel, path in files.items()}
    hashes = {rel: file_hash(path, sizes[rel], limit) for rel, path in files.items()}
    previous: dict[str, store.FileRecord] = {}
    rebuild = False
    if (now := snapshot.current(root)) is not None:
        with _closing(store.connect(now / store.DB_NAME, readonly=True)) as conn:
            previous = store.files(conn)
            rebuild = store.get_meta(conn, "fingerprint") != fingerprint(settings)
    return Plan(folder, files, hashes, sizes, unsupported, previous, rebuild)


class _closing:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


def run_sync(
    root: Path, name: str, folder: Path, settings: Settings, embedder: Embedder, progress: Progress | None
) -> SyncReport:
    """Sync ``folder`` into the collection at ``root``; the caller holds the sync lock."""
    started = time.perf_counter()
    snapshot.clean_incomplete(root)
    p = plan(root, folder, settings)
    report = SyncReport(unsupported=p.unsupported, deleted=p.deleted)
    todo = [rel for rel in p.files if not p.unchanged(rel)]
    for rel in p.files:
        if p.unchanged(rel):
            old = p.previous[rel]
            report.failed.update(
                {rel: old.reason} if old.status == "failed" else json.loads(old.part_failures or "{}")
            )
            if old.status == "ok":
                report.unchanged.append(rel)
    if todo or p.deleted or p.rebuild:
        _write_version(root, p, todo, settings, embedder, report, progress)
    elif progress:
        progress(len(p.files), len(p.files), "")
    previous = snapshot.current(root)
    if previous is not None:
        with _closing(store.connect(previous / store.DB_NAME, readonly=True)) as conn:
            report.chunks_total = store.count_chunks(conn)
    report.seconds = round(time.perf_counter() - started, 3)
    summary = {"time": _now(), "folder": str(folder), **_counts(report)}
    snapshot.record_last_sync(root, summary)
    return report


def _write_version(root, p: Plan, todo, settings, embedder, report, progress) -> None:
    name, staging = snapshot.stage(root)
    previous = snapshot.current(root)
    conn = reuse = None
    try:
        if previous is not None and not p.rebuild:
            shutil.copyfile(previous / store.DB_NAME, staging / store.DB_NAME)
        if previous is not None:
            reuse = store.connect(previous / store.DB_NAME, readonly=True)
            old_meta = store.get_meta(reuse, "fingerprint") or "{}"
            if json.loads(old_meta).get("embedding") != settings.models.embedding:
                reuse.close()
                reuse = None  # another embedding model: no stored vector is valid
        conn = store.create(staging / store.DB_NAME)
        writer = _Writer(conn, reuse, settings, embedder)
        for rel in p.deleted:
            writer.removed += store.delete_file(conn, rel)
        done = len(p.files) - len(todo)
        for rel in todo:
            _load_one(rel, p, settings, embedder, writer, report)
            done += 1
            if progress:
                progress(done, len(p.files), rel)
        writer.flush()
        store.set_meta(conn, "fingerprint", fingerprint(settings))
        store.set_meta(conn, "folder", str(p.folder))
        store.set_meta(conn, "version", name)
        store.set_meta(conn, "synced_at", _now())
        conn.commit()
        report.chunks_embedded = writer.embedded
        _write_index(previous, staging, conn, writer, p.rebuild or reuse is None, settings, embedder)
        conn.close()
        snapshot.publish(root, staging, name, settings.retrieval.keep_versions)
    except BaseException:
        if conn is not None:
            conn.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if reuse is not None:
            reuse.close()


def _load_one(rel: str, p: Plan, settings, embedder, writer: _Writer, report: SyncReport) -> None:
    old = p.previous.get(rel)
    try:
        loaded = load_file(p.files[rel], rel, settings.retrieval)
        chunks = [
            chunk
            for doc in loaded.documents
            for chunk in chunk_document(
                doc, embedder.token_starts, settings.retrieval.chunk_tokens, settings.retrieval.chunk_overlap
            )
        ]
    except LoadError as exc:
        report.failed[rel] = str(exc)
        writer.add(store.FileRecord(rel, p.hashes[rel], p.sizes[rel], "failed", str(exc), None), [])
        return
    except OSError as exc:
        report.failed[rel] = f"cannot read: {exc.strerror or exc}"
        writer.add(store.FileRecord(rel, p.hashes[rel], p.sizes[rel], "failed", report.failed[rel], None), [])
        return
    report.failed.update(loaded.failures)
    # A file that failed before was not in the index: indexing it now adds it.
    (report.updated if old is not None and old.status == "ok" else report.added).append(rel)
    parts = json.dumps(loaded.failures) if loaded.failures else None
    new = [
        store.NewChunk(rel, c.source, c.ordinal, c.text, c.title, c.page, c.start, c.end,
                       _text_hash(_embedded_text(c.text, c.title, settings)))
        for c in chunks
    ]  # fmt: skip
    writer.add(store.FileRecord(rel, p.hashes[rel], p.sizes[rel], "ok", None, parts), new)


class _Writer:
    """Buffers loaded files and writes them (with their vectors) a few hundred chunks at a time."""

    def __init__(self, conn, reuse, settings: Settings, embedder: Embedder) -> None:
        self.conn, self.reuse, self.settings, self.embedder = conn, reuse, settings, embedder
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
        missing: dict[str, str] = {}
        for chunk in chunks:
            if chunk.text_hash not in known:
                missing.setdefault(chunk.text_hash, _embedded_text(chunk.text, chunk.title, self.settings))
        if missing:
            fresh = self.embedder.embed_passages(list(missing.values()))
            known.update(zip(missing, fresh, strict=True))
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


def _embedded_text(text: str, title: str | None, settings: Settings) -> str:
    if settings.retrieval.embed_with_title and title and not text.startswith(title):
        return f"{title}\n{text}"
    return text


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
