"""What one sync has to do, decided before anything is written: which files are new, changed or deleted,
which cannot be read, and which records must be kept as they are.

Nothing already indexed is lost because its source could not be read: a file that cannot be read now, or a
folder that cannot be listed, keeps the records it had (and is reported); only a file that is really gone
from a readable folder counts as deleted.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from retrieval import snapshot, store
from retrieval.errors import CollectionError
from retrieval.loaders import PIPELINE_VERSION
from retrieval.walk import file_hash, scan

if TYPE_CHECKING:
    from retrieval.config import Host
    from retrieval.embedding import Embedder


@dataclass
class Plan:
    folder: Path
    files: dict[str, Path]  # supported files to read: relative path -> path to open
    hashes: dict[str, str]  # of everything in `files` and `problems`
    sizes: dict[str, int]
    unsupported: list[str]
    previous: dict[str, store.FileRecord]
    rebuild: bool  # the chunking/embedding settings or the model's weights changed: every file is re-read
    problems: dict[str, str] = field(default_factory=dict)  # not read (skipped, unreadable) -> reason
    kept: dict[str, str] = field(default_factory=dict)  # indexed before, unreadable now -> reason
    lost_dirs: dict[str, str] = field(default_factory=dict)  # folders that cannot be listed -> reason
    unseen: dict[str, str] = field(default_factory=dict)  # indexed before, in a lost folder -> that folder
    limits_changed: bool = False  # loader limits changed: what failed (even in part) is re-read
    reindex: bool = False  # the vector index's settings changed: it is built again from the stored vectors
    # the current version's vectors were made by the configured model (set by the sync)
    same_model: bool = True
    synced_from: str | None = None  # the folder the current snapshot was synced from

    @property
    def entries(self) -> list[str]:
        """Everything this sync records: files to read and files it reports without reading."""
        return sorted({*self.files, *self.problems})

    @property
    def deleted(self) -> list[str]:
        return sorted(set(self.previous) - {*self.files, *self.problems, *self.kept, *self.unseen})

    @property
    def untouched(self) -> list[str]:
        """Records kept as they are, their source unreadable."""
        return sorted({*self.kept, *self.unseen})

    def unchanged(self, rel: str) -> bool:
        old = self.previous.get(rel)
        if self.rebuild or old is None or old.hash != self.hashes[rel]:
            return False
        # A failure cached under other limits may not happen under these (a raised max_html_depth).
        return not (self.limits_changed and (old.status == "failed" or old.part_failures))


def fingerprint(settings: Host) -> str:
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
        "index_type": r.index_type,  # compared apart: a change builds the index again (index_fingerprint)
    }
    return json.dumps(parts, sort_keys=True)


def _content(recorded: dict) -> dict:
    """A fingerprint without the vector index's settings."""
    return {k: v for k, v in recorded.items() if k != "index_type"}


def index_fingerprint(settings: Host) -> str:
    """The settings a version's vector index is built with (meta "index"); a change builds the index again
    from the stored vectors, without reading any file."""
    r = settings.retrieval
    parts: dict[str, object] = {"index_type": r.index_type}
    if r.index_type == "hnsw":
        parts["hnsw_m"] = r.hnsw_m
    if r.index_type == "ivf":
        parts["ivf_nlist"] = r.ivf_nlist
    return json.dumps(parts, sort_keys=True)


def embedded_alike(conn, settings: Host, embedder: Embedder) -> bool:
    """Whether the vectors of the version open as ``conn`` were made by the model ``embedder`` holds: told by
    the probe vectors the version recorded (so the same weights under another name still match, and other
    weights under the same name do not), else, for a version that recorded none, by the model's name."""
    same = embedder.same_weights(store.get_meta(conn, "probe"))
    if same is not None:
        return same
    return (
        json.loads(store.get_meta(conn, "fingerprint") or "{}").get("embedding") == settings.models.embedding
    )


def limits_fingerprint(settings: Host) -> str:
    """The loader limits a cached failure was decided under. Unlike ``fingerprint``, a change re-reads only the
    files that failed (in whole or in part), since a file indexed whole cannot fail under a higher limit."""
    r = settings.retrieval
    names = ("max_file_mb", "max_uncompressed_mb", "max_compression_ratio", "max_text_mb", "max_html_depth",
             "max_docx_xml_mb", "load_timeout", "loader_memory_mb")  # fmt: skip
    return json.dumps({name: getattr(r, name) for name in names}, sort_keys=True)


def plan(root: Path, folder: Path, settings: Host) -> Plan:
    r = settings.retrieval
    found = scan(folder, r.skip_hidden, Path(settings.data_dir).resolve(), r.follow_symlinks)
    p = Plan(folder, {}, {}, {}, found.unsupported, {}, False, lost_dirs=found.unreadable_dirs)
    if (now := snapshot.current(root)) is not None:
        conn = store.connect(now / store.DB_NAME, readonly=True)
        try:
            p.previous = store.files(conn)
            recorded = json.loads(store.get_meta(conn, "fingerprint") or "{}")
            configured = json.loads(fingerprint(settings))
            # the index's own settings need no file read again: only the index built again
            p.rebuild = _content(recorded) != _content(configured)
            index = store.get_meta(conn, "index")
            p.reindex = recorded.get("index_type") != configured["index_type"] or (
                index is not None and index != index_fingerprint(settings)
            )
            p.limits_changed = store.get_meta(conn, "limits") != limits_fingerprint(settings)
            p.synced_from = store.get_meta(conn, "folder")
        finally:
            conn.close()
    for rel, reason in found.skipped.items():
        p.problems[rel], p.hashes[rel], p.sizes[rel] = reason, reason, 0
    for rel, path in found.files.items():
        try:
            p.hashes[rel], p.sizes[rel] = file_hash(path, r.max_file_mb * 1_000_000)
            p.files[rel] = path
        except OSError as exc:  # gone, unreadable, swapped for a link or a FIFO since the scan
            reason = f"cannot read: {exc.strerror or exc}"
            _unreadable(p, rel, reason)
    for rel in p.previous:
        if rel not in p.files and rel not in p.problems and (where := _lost_dir(rel, p.lost_dirs)):
            p.unseen[rel] = where
    return p


def _unreadable(p: Plan, rel: str, reason: str) -> None:
    old = p.previous.get(rel)
    if old is not None and old.status == "ok":
        p.kept[rel] = f"{reason}; the version indexed before is kept"
    else:
        p.problems[rel], p.hashes[rel], p.sizes[rel] = reason, f"unreadable: {reason}", 0


def _lost_dir(rel: str, lost: dict[str, str]) -> str | None:
    """The unreadable folder ``rel`` lies in, if any."""
    for folder in lost:
        if folder == "." or rel.startswith(folder + "/"):
            return folder
    return None


def keep_rows(source: sqlite3.Connection, target: sqlite3.Connection, rel: str) -> None:
    """Copy ``rel``'s record and chunks from the previous snapshot into a fresh one (a rebuild), marked to be
    read again once it can be."""
    store.copy_file(source, target, rel, hash_prefix=store.STALE)


class MassDeleteError(CollectionError):
    """A sync would delete most of a collection, or switch it to another folder: refused unless allowed."""


def check_deletions(p: Plan, collection: str, allowed: bool) -> None:
    """Refuse (MassDeleteError) a sync that looks like a mistake rather than an edit: a wrong folder argument
    or an unmounted mount point (an empty folder) would otherwise delete every file without a word. A
    collection of 1 or 2 files losing one (the browser's uploads) is normal, so small ones are only refused
    when they would lose everything. A file whose content is still in the folder under another path (renamed,
    moved into a subfolder, its name normalised) is not lost, and does not count."""
    present = set(p.hashes.values())
    deleted, total = sum(1 for rel in p.deleted if p.previous[rel].hash not in present), len(p.previous)
    if allowed or not deleted:
        return
    moved = p.synced_from is not None and p.synced_from != str(p.folder)
    if not (moved or (deleted == total and total >= 2) or (total >= 10 and deleted > total / 2)):
        return
    what = f"all {total} files" if deleted == total else f"{deleted} of its {total} files"
    why = f"it was synced from {p.synced_from}" if moved else "they are no longer in that folder"
    raise MassDeleteError(
        f"refusing to sync collection {collection!r} from {p.folder}: it would delete {what} ({why}). "
        "If that is intended, pass --replace (`chatbot index`) or allow_mass_delete=True "
        "(Collection.sync); otherwise check the folder (a mount point that is not mounted looks empty)."
    )
