"""Snapshots of a collection on disk, the atomic switch between them, and the sync lock.

Layout of ``<data_dir>/collections/<name>/``::

    CURRENT          "v000007": the version searches read (replaced atomically: temp file, fsync, rename)
    v000006/         the previous snapshot, kept for readers that still have it open
    v000007/         records.sqlite (files, chunks, vectors, FTS5 BM25) + vectors.faiss
    sync.lock        locked by the running sync (filelock); sync.holder: its pid, host and start time
    last_sync.json   when the last sync ran and what it did (informational)

A sync builds ``.staging-v000008-<pid>/`` from a copy of the current snapshot, fsyncs every file and the
folder, renames it to ``v000008`` and only then points CURRENT at it. A crash at any moment leaves CURRENT
naming a complete snapshot; leftovers (staging folders, versions newer than CURRENT) are removed by the next
sync, under the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from retrieval.errors import BrokenPointer, CollectionLockedError
from retrieval.files import fsync_dir, fsync_tree, try_exclusive, write_atomic

log = logging.getLogger(__name__)

POINTER = "CURRENT"
DAMAGED = "DAMAGED"  # left by a search that could not read the current version: the next sync checks it
LOCK = "sync.lock"
HOLDER = "sync.holder"
LAST_SYNC = "last_sync.json"
_VERSION = re.compile(r"^v(\d{6,})$")


def version_name(number: int) -> str:
    return f"v{number:06d}"


def current(root: Path) -> Path | None:
    """The current snapshot folder, or None for a collection never synced."""
    try:
        name = (root / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not _VERSION.match(name) or not (root / name).is_dir():
        raise BrokenPointer(
            f"collection {root.name}: {POINTER} names {name!r}, which is not a snapshot folder; "
            f"`chatbot index {root.name} FOLDER` repairs it (from the newest complete version, or the folder)"
        )
    return root / name


def repair_pointer(root: Path) -> str | None:
    """When CURRENT names no snapshot folder, point it at the newest version folder (each one is complete: a
    version is renamed into place only once written and fsynced), or remove it when there is none (the sync
    then rebuilds from the folder). Returns what was done, for the sync's report; None when it was sound."""
    try:
        current(root)
        return None
    except BrokenPointer:
        named = (root / POINTER).read_text(encoding="utf-8", errors="replace").strip()
    found = versions(root)
    if found:
        write_atomic(root / POINTER, found[-1][1].name + "\n")
        done = f"{POINTER} named {named!r}, which is not there: now {found[-1][1].name}, the newest version"
    else:
        (root / POINTER).unlink()
        done = (
            f"{POINTER} named {named!r}, which is not there, and no version is left: rebuilt from the folder"
        )
    log.warning("collection %s: %s", root.name, done)
    return done


def versions(root: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _VERSION.match(p.name)) and p.is_dir()]
    return sorted(found)


def clean_incomplete(root: Path) -> None:
    """Remove what an interrupted sync left: staging folders and versions newer than CURRENT."""
    now = current(root)
    now_number = int(now.name[1:]) if now else 0
    for path in root.iterdir():
        stale = path.name.startswith(".staging-") or (
            (m := _VERSION.match(path.name)) is not None and int(m.group(1)) > now_number
        )
        if stale:
            log.info("Removing %s left by an interrupted sync", path)
            shutil.rmtree(path, ignore_errors=True)


def stage(root: Path) -> tuple[str, Path]:
    """A new, empty staging folder for the next version, and that version's name."""
    numbers = [n for n, _ in versions(root)]
    name = version_name((max(numbers) if numbers else 0) + 1)
    staging = root / f".staging-{name}-{os.getpid()}"
    staging.mkdir()
    return name, staging


def publish(root: Path, staging: Path, name: str, keep: int) -> Path:
    """fsync the staged snapshot, rename it into place, switch CURRENT to it, then drop old versions."""
    fsync_tree(staging)
    final = root / name
    os.replace(staging, final)
    fsync_dir(root)
    write_atomic(root / POINTER, name + "\n")
    for _, old in versions(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def set_aside(root: Path, version: Path) -> Path:
    """Take the damaged current ``version`` out of use: renamed ``damaged-<name>`` (kept for inspection, never
    read again) and CURRENT removed, so that the next sync builds a fresh version from the folder."""
    aside = root / f"damaged-{version.name}"
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(version, aside)
    (root / POINTER).unlink(missing_ok=True)
    fsync_dir(root)
    return aside


def record_last_sync(root: Path, summary: dict) -> None:
    write_atomic(root / LAST_SYNC, json.dumps(summary, indent=1))


def read_last_sync(root: Path) -> dict:
    try:
        return json.loads((root / LAST_SYNC).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@contextlib.contextmanager
def sync_lock(root: Path, collection: str) -> Iterator[None]:
    """Hold the collection's sync lock (non-blocking); a second sync gets an error naming the holder, whose
    pid, host and start time are kept beside the lock in ``sync.holder``."""
    holder_file = root / HOLDER
    with try_exclusive(root / LOCK) as acquired:
        if not acquired:
            try:
                holder = holder_file.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                holder = ""
            raise CollectionLockedError(
                f"collection {collection!r} is being synced by another process ({holder or 'unknown process'}); "
                "wait for it to finish, or stop that process"
            )
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        holder_file.write_text(f"pid {os.getpid()} on host {socket.gethostname()}, started {started}")
        yield
