"""Finding the files of a folder to sync, and reading them, without being led astray.

- A symbolic link that leads out of the folder (``notes.txt -> /etc/passwd``) is skipped and reported, unless
  ``retrieval.follow_symlinks``; links to folders are never followed (no loops, no escapes). Links to files
  inside the folder are read like the files they point to.
- FIFOs, sockets and devices are skipped and reported (opening a FIFO would wait forever).
- A folder that cannot be listed is reported, not taken as empty: its files indexed before are kept.
- A file name that is not valid UTF-8 is indexed under an escaped name (``caf\\xe9.md``); it used to stop
  the whole sync. A backslash in a name is doubled (``a\\\\b.md``), so no two names escape alike.
- Files are opened without following links (a file swapped for a link after the scan fails to open) and
  non-blocking, and checked to be regular files on the open descriptor, whose size is the one used.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.loaders import is_supported

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


@dataclass
class Scan:
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)  # relative POSIX path -> the path to open
    unsupported: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # relative path -> why it is not read
    unreadable_dirs: dict[str, str] = field(default_factory=dict)  # relative folder ('.': the folder) -> why


def scan(folder: Path, skip_hidden: bool, exclude: Path | None = None, follow_symlinks: bool = False) -> Scan:
    """Every entry under ``folder`` (an absolute, resolved path), sorted into what a sync reads and what it
    reports; ``exclude`` (the data directory, when it sits inside the folder) is never entered."""
    found = Scan(folder)

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else folder
        found.unreadable_dirs[_rel(where, folder)] = f"cannot read folder: {exc.strerror or exc}"

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
        here = Path(dirpath)
        if skip_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if exclude is not None:
            dirnames[:] = [d for d in dirnames if (here / d).resolve() != exclude]
        dirnames.sort()
        for name in dirnames:
            if (here / name).is_symlink() and not _inside(here / name, folder):
                found.skipped[_rel(here / name, folder)] = (
                    "skipped: a link to a folder outside the synced folder"
                )
        for name in sorted(filenames):
            if skip_hidden and name.startswith("."):
                continue
            _classify(found, here / name, follow_symlinks)
    return found


def _classify(found: Scan, path: Path, follow_symlinks: bool) -> None:
    rel = _rel(path, found.folder)
    if not is_supported(path.name):
        found.unsupported.append(rel)
        return
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            target = path.resolve(strict=True)
            if not follow_symlinks and not _inside(target, found.folder):
                found.skipped[rel] = (
                    "skipped: a link to a file outside the synced folder (retrieval.follow_symlinks)"
                )
                return
            info, path = target.stat(), target
    except (OSError, RuntimeError):  # RuntimeError: a link loop on older Pythons
        found.skipped[rel] = "skipped: a broken symbolic link"
        return
    if not stat.S_ISREG(info.st_mode):
        found.skipped[rel] = "skipped: not a regular file (a FIFO, socket or device)"
        return
    found.files[rel] = path


def _inside(path: Path, folder: Path) -> bool:
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return False
    return resolved == folder or folder in resolved.parents


def _rel(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder``, as stored and shown: bytes of a name that are not UTF-8 (an old
    Latin-1 file name) are written as ``\\xe9`` escapes, which SQLite and JSON can hold, and a backslash
    as two. Without doubling, ``caf<0xE9>.md`` and a file literally named ``caf\\xe9.md`` got one stored
    name, and one of them was silently never indexed; now no two names escape alike."""
    rel = path.relative_to(folder).as_posix() if path != folder else "."
    return rel.replace("\\", "\\\\").encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def open_regular(path: Path) -> int:
    """A read-only descriptor on the regular file ``path`` (never through a link, never blocking)."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def file_hash(path: Path, limit: float) -> tuple[str, int]:
    """(content hash, size) read from one open descriptor. Over ``limit`` bytes the file is not read:
    size and modification time stand for its content (it will be refused anyway)."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_size > limit:
            return f"oversize:{info.st_size}:{info.st_mtime_ns}", info.st_size
        digest = hashlib.sha256()
        while block := handle.read(1 << 20):
            digest.update(block)
        return digest.hexdigest(), info.st_size


def read_file(path: Path, limit: float) -> bytes:
    """The content of ``path``, refusing (OSError EFBIG) more than ``limit`` bytes, even if it grew."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(int(limit) + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, "the file grew past retrieval.max_file_mb", str(path))
    return data
