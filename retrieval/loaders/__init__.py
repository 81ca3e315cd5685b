"""Loaders turn a file's bytes into documents: cleaned text plus sections (heading, page) with offsets.

One module per family of formats; each exposes ``load(data, source, settings) -> Loaded``. A loader raises
:class:`retrieval.errors.LoadError` with a specific reason for input it cannot index; :func:`load_file`
turns that (and any unexpected parser error) into a failure entry, so one bad file never stops a sync.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from retrieval.errors import LoadError
from retrieval.text import clean

if TYPE_CHECKING:
    from retrieval.config import RetrievalSettings

log = logging.getLogger(__name__)

# Extension -> loader module (imported on first use, so that importing retrieval stays light).
LOADERS: dict[str, str] = {
    ".txt": "plain",
    ".text": "plain",
    ".md": "plain",
    ".markdown": "plain",
    ".rst": "plain",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".csv": "tabular",
    ".tsv": "tabular",
    ".json": "tabular",
    ".jsonl": "tabular",
    ".ndjson": "tabular",
    ".eml": "mail",
    ".mbox": "mail",
}
# Bumped whenever a loader or the chunker changes what it produces: every file is then re-read on next sync.
PIPELINE_VERSION = 4


@dataclass(frozen=True)
class Section:
    """A span ``text[start:end]`` of a document under one heading, on one page."""

    start: int
    end: int
    title: str | None = None
    page: int | None = None


@dataclass
class Document:
    """Cleaned text of one indexable unit (a file, one message of a mailbox, one attachment)."""

    source: str
    text: str = ""
    sections: list[Section] = field(default_factory=list)
    title: str | None = None

    def add(self, text: str, title: str | None = None, page: int | None = None) -> None:
        """Append ``text`` (cleaned) as a section, separated from the previous one by a blank line."""
        text = clean(text).strip()
        if not text:
            return
        if self.text:
            self.text += "\n\n"
        start = len(self.text)
        self.text += text
        self.sections.append(Section(start, len(self.text), title, page))


@dataclass
class Loaded:
    """What a file yielded: documents, plus failures of parts of it (an attachment that cannot be read)."""

    documents: list[Document] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


Loader = Callable[[bytes, str, "RetrievalSettings"], Loaded]


def is_supported(path: str | Path) -> bool:
    return PurePosixPath(str(path)).suffix.lower() in LOADERS


def loader_for(name: str) -> Loader:
    ext = PurePosixPath(name).suffix.lower()
    if ext not in LOADERS:
        raise LoadError(f"unsupported file type {ext or '(no extension)'}")
    module = importlib.import_module(f"retrieval.loaders.{LOADERS[ext]}")
    return module.load


def load_bytes(data: bytes, source: str, settings: RetrievalSettings) -> Loaded:
    """Run the loader for ``source``'s extension on ``data``; parser crashes become a LoadError."""
    if not data:
        raise LoadError("empty file")
    load = loader_for(source)
    try:
        loaded = load(data, source, settings)
    except LoadError:
        raise
    except RecursionError as exc:
        raise LoadError("too deeply nested to parse") from exc
    except MemoryError:
        raise  # the caller knows the memory limit it set
    except Exception as exc:  # a third-party parser failing on malformed input: report it, never abort
        log.debug("parser error on %s", source, exc_info=True)
        raise LoadError(f"cannot parse: {type(exc).__name__}: {exc}") from exc
    loaded.documents = [d for d in loaded.documents if d.text.strip()]
    size = sum(len(d.text) for d in loaded.documents)
    if size > settings.max_text_mb * 1_000_000:
        raise LoadError(
            f"extracted text is {size / 1e6:.1f} MB, over retrieval.max_text_mb={settings.max_text_mb}"
        )
    if not loaded.documents:
        raise LoadError("no text found (empty, or only images/markup)")
    return loaded


def load_file(path: Path, source: str, settings: RetrievalSettings) -> Loaded:
    """Read and load one file, enforcing the size limit before reading it."""
    size = path.stat().st_size
    limit = settings.max_file_mb * 1_000_000
    if size > limit:
        raise LoadError(
            f"file is {size / 1e6:.1f} MB, over the limit retrieval.max_file_mb={settings.max_file_mb}"
        )
    return load_bytes(path.read_bytes(), source, settings)
