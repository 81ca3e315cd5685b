"""Crash-safe files for every package: atomic writes, folders swapped into place, and process locks.

The rule everywhere: a reader sees the old content or the new, never a mix, and a process killed at any
instant leaves the old content (plus, at worst, a hidden temporary that the next writer ignores or removes).

    write_atomic(path, text)                  # temp file beside it, fsync, rename, fsync the folder
    with staged_dir(target) as staging: ...   # build a folder, then it replaces ``target`` in one rename
    with exclusive(path): ...                 # wait for a process lock
    with try_exclusive(path) as got: ...      # take it or learn at once that another process holds it

The locks are ``filelock`` (flock on POSIX): the kernel drops them when the process dies, so a killed
process never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file directly inside ``path``, then ``path`` itself."""
    for item in path.iterdir():
        if item.is_file():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(path)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new content, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """A new empty folder beside ``target``; when the block ends without error it replaces ``target``
    (whatever was there, e.g. a half-written copy from an interrupted run, is removed first). On an error
    the staging folder is removed and ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        fsync_tree(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the process lock ``path``, waiting for it if another process holds it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


@contextlib.contextmanager
def try_exclusive(path: Path) -> Iterator[bool]:
    """Yield True while holding the process lock ``path``; False at once if another holder has it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
