"""Plain text, Markdown and reStructuredText: sections follow the headings."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from retrieval.loaders import Document, Loaded
from retrieval.text import decode

if TYPE_CHECKING:
    from retrieval.config import RetrievalSettings

_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^(```|~~~)")
_RST_ADORN = re.compile(r"^([=\-~^\"'`#*+:._])\1{2,}\s*$")


def load(data: bytes, source: str, settings: RetrievalSettings) -> Loaded:
    text = decode(data)
    ext = PurePosixPath(source).suffix.lower()
    if ext in (".md", ".markdown"):
        return Loaded([markdown_document(text, source)])
    if ext == ".rst":
        return Loaded([rst_document(text, source)])
    doc = Document(source)
    doc.add(text)
    return Loaded([doc])


def markdown_document(text: str, source: str, title: str | None = None) -> Document:
    """Split Markdown on ATX headings (``#`` .. ``######``), ignoring lines inside code fences."""
    doc = Document(source, title=title)
    path: list[str] = []
    lines: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            in_fence = not in_fence
        match = None if in_fence else _ATX.match(line)
        if match:
            doc.add("\n".join(lines), _title(path))
            level, heading = len(match.group(1)), match.group(2).strip()
            path = path[: level - 1] + [""] * max(0, level - 1 - len(path)) + [heading]
            lines = [heading]
        else:
            lines.append(line)
    doc.add("\n".join(lines), _title(path))
    if doc.title is None and path:
        doc.title = next((p for p in path if p), None)
    return doc


def rst_document(text: str, source: str) -> Document:
    """Split reStructuredText on section titles: a line underlined (optionally overlined) with ``=-~^``..."""
    doc = Document(source)
    raw = text.splitlines()
    styles: list[str] = []  # adornment styles in order of first appearance = heading levels
    path: list[str] = []
    lines: list[str] = []
    i = 0
    while i < len(raw):
        heading, style, used = _rst_heading(raw, i)
        if heading is None:
            lines.append(raw[i])
            i += 1
            continue
        doc.add("\n".join(lines), _title(path))
        if style not in styles:
            styles.append(style)
        level = styles.index(style) + 1
        path = path[: level - 1] + [heading]
        lines = [heading]
        doc.title = doc.title or heading
        i += used
    doc.add("\n".join(lines), _title(path))
    return doc


def _rst_heading(raw: list[str], i: int) -> tuple[str | None, str, int]:
    line = raw[i]
    over = _RST_ADORN.match(line)
    if over and i + 2 < len(raw) and raw[i + 1].strip() and _RST_ADORN.match(raw[i + 2]):
        return raw[i + 1].strip(), "over" + over.group(1), 3
    if line.strip() and not over and i + 1 < len(raw):
        under = _RST_ADORN.match(raw[i + 1])
        if under and len(raw[i + 1].rstrip()) >= len(line.rstrip()):
            return line.strip(), under.group(1), 2
    return None, "", 1


def _title(path: list[str]) -> str | None:
    parts = [p for p in path if p]
    return " > ".join(parts) if parts else None
