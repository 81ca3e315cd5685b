"""Where browser users' documents may come from: uploads, written only under the data directory, and server
folders, synced only under the roots the operator lists in ``ui.sync_roots`` (none by default).

The training page reads only what the app's users can already search (a collection's folder, its uploads),
the folders under ``ui.sync_roots``, and the project's own ``data/`` (public, shipped with the code).

A collection fed by uploads is synced from its own folder, ``<data_dir>/uploads/<collection>/``; an upload
never replaces a file of the same name unless the user says so. A collection synced from a server folder (by
the CLI, or from a folder under ``ui.sync_roots``) takes no uploads: its files live in that folder, which the
app never writes to.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from retrieval.collection import Collection, validate_name

if TYPE_CHECKING:
    from chatbot.settings import Settings

_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")
MAX_NAME_BYTES = 255  # the file name limit of ext4, XFS, APFS and NTFS


class UploadError(ValueError):
    """An upload that cannot be saved; the message names the file and why."""


class UploadExists(UploadError):
    """Files of these names are already there; nothing was written."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(
            f"already uploaded: {', '.join(names)} (choose to replace them, or rename the files)"
        )
        self.names = names


class FolderNotAllowed(ValueError):
    """A server folder outside ``ui.sync_roots`` (or, for training, outside what the app may read)."""


PROJECT_DATA = Path(__file__).resolve().parents[1] / "data"  # the sample documents and chat examples we ship


def uploads_dir(settings: Settings, collection: str) -> Path:
    return Path(settings.data_dir) / "uploads" / validate_name(collection)


def upload_name(name: str) -> str:
    """``name`` as a safe file name (in Unicode's composed form, NFC: a browser on macOS may send "Política"
    decomposed), or UploadError: no folder parts, control characters (NUL...), hidden or special names, or
    names longer than the file system allows."""
    name = unicodedata.normalize("NFC", name)
    if _BAD_CHARS.search(name):
        raise UploadError(f"cannot save an upload named {name!r}: it contains a slash or a control character")
    if name in ("", ".", "..") or name.startswith("."):
        raise UploadError(f"cannot save an upload named {name!r}: empty, special or hidden name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise UploadError(f"cannot save an upload named {name[:40]!r}…: longer than {MAX_NAME_BYTES} bytes")
    return name


def save_uploads(
    settings: Settings, collection: str, files: list[tuple[str, bytes]], replace: bool = False
) -> list[Path]:
    """Write ``files`` (name, content) into the collection's uploads folder; returns their paths.

    Every name is checked before anything is written. A name already there raises UploadExists (and nothing
    is written) unless ``replace``. Each file appears whole or not at all (written aside, then linked or
    renamed into place), so a concurrent sync never reads half a file.
    """
    target = uploads_dir(settings, collection)
    names = [upload_name(name) for name, _ in files]
    if len(set(names)) < len(names):
        raise UploadError("two uploads have the same name")
    target.mkdir(parents=True, exist_ok=True)
    # a file already there under the same name in another Unicode form is the same file (replaced in place)
    there = {unicodedata.normalize("NFC", p.name): p.name for p in target.iterdir()}
    names = [there.get(n, n) for n in names]
    if not replace and (taken := [n for n in names if os.path.lexists(target / n)]):
        raise UploadExists(taken)
    written = []
    for name, (_, data) in zip(names, files, strict=True):
        written.append(_write(target / name, data, replace))
    return written


def delete_collection(settings: Settings, collection: str) -> int:
    """Delete a collection and the files uploaded to it (so that a collection made again under its name does
    not index them again); returns how many uploads were deleted. CollectionLockedError while it syncs."""
    Collection.delete(settings, collection)
    folder = uploads_dir(settings, collection)
    count = sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
    shutil.rmtree(folder, ignore_errors=True)
    return count


def _write(path: Path, data: bytes, replace: bool) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the name was taken meanwhile: never overwrites
            except FileExistsError as exc:
                raise UploadExists([path.name]) from exc
    except IsADirectoryError as exc:
        raise UploadError(f"cannot save {path.name!r}: a folder of that name is in the way") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def allowed_folder(settings: Settings, collection: str, folder: str | Path) -> Path:
    """``folder``, resolved (links followed, ``..`` removed), if the app may sync ``collection`` from it: the
    collection's own uploads folder, or a folder under one of ``ui.sync_roots``. Else FolderNotAllowed."""
    resolved = Path(folder).expanduser().resolve()
    if resolved == uploads_dir(settings, collection).resolve():
        return resolved
    roots = _sync_roots(settings)
    if _under(resolved, roots):
        return resolved
    shown = ", ".join(str(r) for r in roots) or "none are set"
    raise FolderNotAllowed(
        f"{folder}: the app may sync only folders under ui.sync_roots ({shown}); upload the files instead, "
        f"or ask the administrator (`chatbot index {collection} FOLDER` indexes any folder)"
    )


def allowed_training_path(settings: Settings, path: str | Path) -> Path:
    """``path`` (a folder of documents or a file of chat examples), resolved, if the training page may read it:
    under a collection's folder or uploads folder (its documents are searchable in the chat already), under one
    of ``ui.sync_roots``, or under the project's own ``data/``. Else FolderNotAllowed: the page must not turn
    the server's other files into training text, nor its log into a listing of them."""
    resolved = Path(path).expanduser().resolve()
    roots = [*_sync_roots(settings), PROJECT_DATA]
    for name in Collection.list(settings):
        roots.append(uploads_dir(settings, name).resolve())
        if folder := Collection(settings, name).stats().get("folder"):
            roots.append(Path(folder).resolve())
    if _under(resolved, roots):
        return resolved
    raise FolderNotAllowed(
        f"{path}: the training page reads only the collections' folders, the folders under ui.sync_roots and "
        "the project's data/ folder; index the folder as a collection first, or run `chatbot train` on the server"
    )


def _sync_roots(settings: Settings) -> list[Path]:
    """``ui.sync_roots``, resolved."""
    return [Path(root).expanduser().resolve() for root in settings.ui.sync_roots]


def _under(resolved: Path, roots: list[Path]) -> bool:
    """Whether the resolved path ``resolved`` is one of ``roots`` or lies inside one."""
    return any(resolved.is_relative_to(root) for root in roots)
