"""Structure-aware chunking: sections (headings, pages) are never mixed in one chunk; inside a section,
paragraphs, then lines, sentences and words are packed up to ``chunk_tokens`` with ``chunk_overlap``.

Chunks are spans of the document text, so their character offsets point into what the loader produced.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from retrieval.loaders import Document

# Character offsets at which the tokens of a text start. Each document is tokenized once; the token count of
# any span is then two binary searches, however many times the chunker re-splits it.
TokenStarts = Callable[[str], list[int]]

# Finer and finer separators; a unit still over the size limit is split at the next level.
_LEVELS = [
    re.compile(r"\n[ \t]*\n\s*"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?;:])\s+"),
    re.compile(r"\s+"),
]


@dataclass(frozen=True)
class Chunk:
    source: str  # the document's source: a relative path, or e.g. "box.mbox#3/report.pdf"
    ordinal: int  # position of the chunk within its document
    text: str
    start: int  # character offsets of ``text`` in the document text
    end: int
    title: str | None = None
    page: int | None = None


def word_starts(text: str) -> list[int]:
    """A tokenizer-free stand-in: one token per whitespace-separated word."""
    return [m.start() for m in re.finditer(r"\S+", text)]


def chunk_document(doc: Document, token_starts: TokenStarts, size: int, overlap: int) -> list[Chunk]:
    starts = token_starts(doc.text)

    def count(spans: list[tuple[int, int]]) -> list[int]:
        return [bisect.bisect_left(starts, e) - bisect.bisect_left(starts, s) for s, e in spans]

    chunks: list[Chunk] = []
    for section in doc.sections:
        units = _units(doc.text, [(section.start, section.end)], count, size, 0)
        for start, end in _pack(units, size, min(overlap, size // 2)):
            text = doc.text[start:end]
            chunks.append(Chunk(doc.source, len(chunks), text, start, end, section.title, section.page))
    return chunks


def _units(text: str, spans: list[tuple[int, int]], count, size: int, level: int):
    """``spans`` as (start, end, tokens), splitting any span over ``size`` at the next finer level."""
    if not spans:
        return []
    tokens = count(spans)
    out: list[tuple[int, int, int]] = []
    for (s, e), n in zip(spans, tokens, strict=True):
        if n <= size or level >= len(_LEVELS):
            out.append((s, e, n))
        else:
            out.extend(_units(text, _split(text, s, e, _LEVELS[level]), count, size, level + 1))
    return out


def _split(text: str, start: int, end: int, separator: re.Pattern[str]) -> list[tuple[int, int]]:
    spans, pos = [], start
    for match in separator.finditer(text, start, end):
        if match.start() > pos:
            spans.append((pos, match.start()))
        pos = match.end()
    if end > pos:
        spans.append((pos, end))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _pack(units: list[tuple[int, int, int]], size: int, overlap: int) -> list[tuple[int, int]]:
    """Greedy packing into balanced chunks; each chunk starts with the previous chunk's last units (up to
    ``overlap`` tokens). Balanced: a 230-token paragraph with size 200 becomes two ~125-token chunks rather
    than 200 + 30, so no chunk is a stub whose BM25 length normalisation over-rewards it."""
    total_tokens = sum(u[2] for u in units)
    target = size
    if total_tokens > size:
        parts = math.ceil((total_tokens - overlap) / max(size - overlap, 1))
        target = min(size, math.ceil(total_tokens / parts) + overlap)
    spans: list[tuple[int, int]] = []
    current: list[tuple[int, int, int]] = []
    total = 0
    for unit in units:
        if current and (total + unit[2] > size or total >= target):
            spans.append((current[0][0], current[-1][1]))
            kept: list[tuple[int, int, int]] = []
            for previous in reversed(current):
                if sum(u[2] for u in kept) + previous[2] > overlap:
                    break
                kept.insert(0, previous)
            current, total = kept, sum(u[2] for u in kept)
            if total + unit[2] > size:
                current, total = [], 0
        current.append(unit)
        total += unit[2]
    if current:
        spans.append((current[0][0], current[-1][1]))
    return spans
