"""Domain documents as training text, read with the retrieval loaders: the model trains on what the chat indexes.

A folder is walked with ``retrieval.walk.scan`` (same skip rules as a sync: hidden files, links out of the
folder, FIFOs, the data directory) and every supported file is read with the loader for its extension
(``retrieval.loaders``: PDF, DOCX, HTML, e-mail, CSV/JSON...), parsed in a child process under
``retrieval.load_timeout`` and ``retrieval.loader_memory_mb`` (``retrieval.isolation``), so a crafted file
costs one failure, not the whole data set.

``.txt`` and ``.md`` are the exception: they are read as raw UTF-8 text, as fine-tuning always read them, so
that their passages (cut at blank lines, ``finetune.data.passages``) and hence their content keys stay the
same and ``retrain`` does not take an unchanged document for new data. The Markdown loader would cut them at
headings and clean them, which changes the passages.

A file that cannot be read is skipped and named in :attr:`FolderText.failed` with the reason; the rest of
the folder is read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from retrieval.config import RetrievalSettings
from retrieval.errors import LoadError
from retrieval.isolation import ParserProcess
from retrieval.walk import read_file, scan

log = logging.getLogger(__name__)

RAW_SUFFIXES = (".txt", ".md")  # read as plain text, not through a loader (see the module docstring)


@dataclass
class FolderText:
    """What a folder yielded: (source, text) per document, and the files (or folders) not read, with why."""

    docs: list[tuple[str, str]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason
    unsupported: list[str] = field(default_factory=list)  # paths of file types no loader reads


def read_folder(
    folder: Path, settings: RetrievalSettings, parser: ParserProcess, exclude: Path | None = None
) -> FolderText:
    """Every supported document under ``folder`` (sources are ``folder/relative/path``, sorted as paths so
    packing is reproducible); ``exclude`` (the data directory) is never entered."""
    found = FolderText()
    listing = scan(
        folder.resolve(),
        settings.skip_hidden,
        exclude=exclude.resolve() if exclude is not None else None,
        follow_symlinks=settings.follow_symlinks,
    )
    for rel, reason in {**listing.unreadable_dirs, **listing.skipped}.items():
        found.failed[str(folder / rel)] = reason.removeprefix("skipped: ")  # shown as 'skipped FILE: why'
    found.unsupported = [str(folder / rel) for rel in listing.unsupported]
    for rel in sorted(listing.files, key=PurePosixPath):
        source = str(folder / rel)
        try:
            docs, parts_failed = _read_one(listing.files[rel], source, settings, parser)
        except LoadError as exc:
            found.failed[source] = str(exc)
        except OSError as exc:  # vanished or made unreadable since the scan
            found.failed[source] = f"cannot read: {exc.strerror or exc}"
        else:
            found.docs.extend(docs)
            found.failed.update(parts_failed)  # an attachment, or one message of a mailbox
    for source, reason in found.failed.items():
        log.warning("skipped %s: %s", source, reason)
    log.info(
        "%s: %d documents, %d files skipped, %d of unsupported types",
        folder,
        len(found.docs),
        len(found.failed),
        len(found.unsupported),
    )
    return found


def _read_one(
    path: Path, source: str, settings: RetrievalSettings, parser: ParserProcess
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(source, text) of the documents of one file, and the parts of it that failed to load."""
    limit = settings.max_file_mb * 1_000_000
    size = path.stat().st_size
    if size > limit:
        raise LoadError(
            f"file is {size / 1e6:.1f} MB, over the limit retrieval.max_file_mb={settings.max_file_mb}"
        )
    data = read_file(path, limit)
    if PurePosixPath(source).suffix.lower() in RAW_SUFFIXES:
        # What Path.read_text(encoding="utf-8", errors="replace") gave: universal newlines included.
        text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        return [(source, text)], {}
    loaded = parser.load(data, source)
    return [(doc.source, doc.text) for doc in loaded.documents], loaded.failures
