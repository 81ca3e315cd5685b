"""Structure-aware chunking: sections (headings, pages) are never mixed in one chunk; inside a section,
paragraphs, then lines, sentences and words are packed up to ``chunk_tokens`` with ``chunk_overlap``.
A word still over the limit (a 9 MB line of base64 has no separator at all) is cut at token starts, next to
punctuation where it can, so no chunk passes ``chunk_tokens`` tokens or ``chunk_tokens * MAX_CHARS_PER_TOKEN``
characters other than whitespace.

Chunks are spans of the document text, so their character offsets point into what the loader produced.
"""

from __future__ import annotations

import bisect
import math
import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from retrieval.loaders import Document

# Character offsets at which the tokens of a text start. Each document is tokenized once (a window at a time,
# see ``windowed_token_starts``); the token count of any span is then two binary searches, however many times
# the chunker re-splits it.
TokenStarts = Callable[[str], list[int]]

# The tokenizer sees at most this many characters at a time. A fast tokenizer's encoding of a whole 9.3 MB
# line took 2.9 GB; by windows, its memory is that of one window, and the offsets kept are 8 bytes a token.
TOKEN_WINDOW_CHARS = 100_000
# No chunk is longer than ``size`` times this. English and Spanish run at 4-5 characters per token with
# all-MiniLM's WordPiece, so the cap only binds on text the tokenizer barely splits: a 300-character
# word is one [UNK] token, and a 9 MB base64 line was one chunk.
MAX_CHARS_PER_TOKEN = 8

# Finer and finer separators; a unit still over the size limit is split at the next level.
_LEVELS = [
    re.compile(r"\n[ \t]*\n\s*"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?;:])\s+"),
    re.compile(r"\s+"),
]
_NON_WORD = re.compile(r"[^\w]")
_WHITESPACE = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


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
    starts = windowed_token_starts(doc.text, token_starts)
    limits = _Limits(starts, size, size * MAX_CHARS_PER_TOKEN, _ink(doc.text))
    chunks: list[Chunk] = []
    for section in doc.sections:
        units = _units(doc.text, [(section.start, section.end)], limits, 0)
        for start, end in _pack(units, limits, min(overlap, size // 2)):
            text = doc.text[start:end]
            chunks.append(Chunk(doc.source, len(chunks), text, start, end, section.title, section.page))
    return chunks


def windowed_token_starts(text: str, token_starts: TokenStarts) -> array:
    """``token_starts(text)``, computed window by window so the tokenizer never holds the whole text.

    A window ends just before whitespace or punctuation where it can (pre-tokenizers split words there), so
    the counts match tokenizing at once; a window whose second half is all letters and digits is cut
    mid-word, which can count a token more or less at the cut."""
    starts = array("q")
    pos = 0
    while pos < len(text):
        end = _window_end(text, pos)
        starts.extend(pos + offset for offset in token_starts(text[pos:end]))
        pos = end
    return starts


def _window_end(text: str, pos: int) -> int:
    limit = pos + TOKEN_WINDOW_CHARS
    if limit >= len(text):
        return len(text)
    half = pos + TOKEN_WINDOW_CHARS // 2  # a cut in the second half: every window moves on by half a window
    cut = max(text.rfind(" ", half, limit), text.rfind("\n", half, limit))
    if cut < 0:  # one long "word", as in base64: cut before its last punctuation
        cut = max((m.start() for m in _NON_WORD.finditer(text, half, limit)), default=-1)
    return cut if cut > pos else limit


@dataclass(frozen=True)
class _Limits:
    """The token offsets of a document and the most tokens and characters one chunk may hold."""

    starts: array
    tokens: int
    chars: int
    ink: np.ndarray  # ink[i]: characters before offset i that are not whitespace

    def count(self, start: int, end: int) -> int:
        """Tokens starting in ``[start, end)``: two binary searches, however often a span is re-split."""
        return bisect.bisect_left(self.starts, end) - bisect.bisect_left(self.starts, start)

    def mid_token(self, pos: int) -> int:
        """1 if ``pos`` falls inside a token: a piece starting there re-tokenizes that fragment as a token."""
        i = bisect.bisect_left(self.starts, pos)
        return int(i > 0 and (i == len(self.starts) or self.starts[i] != pos))

    def fits(self, start: int, end: int, tokens: int) -> bool:
        """Within both limits; characters counted without whitespace, which the tokenizer skips (a report
        padded with spaces, indented code), so that such text packs as fully as before the character cap."""
        return tokens <= self.tokens and (
            end - start <= self.chars or self.ink[end] - self.ink[start] <= self.chars
        )


def _ink(text: str) -> np.ndarray:
    """Prefix counts of the non-whitespace characters of ``text`` (4 bytes a character, built in numpy)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    counts = np.zeros(len(codes) + 1, dtype=np.int32)
    np.cumsum(~np.isin(codes, _WHITESPACE), out=counts[1:])
    return counts


def _units(text: str, spans: list[tuple[int, int]], limits: _Limits, level: int):
    """``spans`` as (start, end, tokens), splitting any span over the limits at the next finer level, and
    cutting one still over them when no separator is left."""
    out: list[tuple[int, int, int]] = []
    for s, e in spans:
        n = limits.count(s, e)
        if limits.fits(s, e, n):
            out.append((s, e, n))
        elif level < len(_LEVELS):
            out.extend(_units(text, _split(text, s, e, _LEVELS[level]), limits, level + 1))
        else:
            out.extend((a, b, limits.count(a, b) + limits.mid_token(a)) for a, b in _cut(text, s, e, limits))
    return out


def _cut(text: str, start: int, end: int, limits: _Limits) -> list[tuple[int, int]]:
    """``[start, end)`` in pieces of at most ``limits.tokens`` tokens and ``limits.chars`` characters, cut
    at token starts (or mid-token, for a token longer than the character limit)."""
    pieces, pos = [], start
    while pos < end:
        stop = min(end, pos + limits.chars)
        nth = bisect.bisect_left(limits.starts, pos) + limits.tokens - limits.mid_token(pos)
        if nth < len(limits.starts) and pos < limits.starts[nth] < stop:
            stop = limits.starts[nth]
        if stop < end:
            stop = _word_boundary(text, limits.starts, pos, stop)
        pieces.append((pos, stop))
        pos = stop
    return pieces


def _word_boundary(text: str, starts: array, pos: int, stop: int) -> int:
    """The last token start in the second half of ``(pos, stop]`` next to punctuation (``+`` or ``/`` in
    base64), else ``stop``. A piece cut inside a word re-tokenizes differently: "##def" becomes "de", "##f",
    and a chunk counted at the limit came back 2 tokens over it; cut between words, it keeps its count."""
    k = bisect.bisect_right(starts, stop) - 1
    while k >= 0 and starts[k] > pos + (stop - pos) // 2:
        p = starts[k]
        if not (text[p].isalnum() and text[p - 1].isalnum()):
            return p
        k -= 1
    return stop


def _split(text: str, start: int, end: int, separator: re.Pattern[str]) -> list[tuple[int, int]]:
    spans, pos = [], start
    for match in separator.finditer(text, start, end):
        if match.start() > pos:
            spans.append((pos, match.start()))
        pos = match.end()
    if end > pos:
        spans.append((pos, end))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _pack(units: list[tuple[int, int, int]], limits: _Limits, overlap: int) -> list[tuple[int, int]]:
    """Greedy packing into balanced chunks; each chunk starts with the previous chunk's last units (up to
    ``overlap`` tokens). Balanced: a 230-token paragraph with size 200 becomes two ~125-token chunks rather
    than 200 + 30, so no chunk is a stub whose BM25 length normalisation over-rewards it."""
    size = limits.tokens
    total_tokens = sum(u[2] for u in units)
    target = size
    if total_tokens > size:
        parts = math.ceil((total_tokens - overlap) / max(size - overlap, 1))
        target = min(size, math.ceil(total_tokens / parts) + overlap)
    spans: list[tuple[int, int]] = []
    current: list[tuple[int, int, int]] = []
    total = 0
    for unit in units:
        if current and (not limits.fits(current[0][0], unit[1], total + unit[2]) or total >= target):
            spans.append((current[0][0], current[-1][1]))
            kept: list[tuple[int, int, int]] = []
            for previous in reversed(current):
                if sum(u[2] for u in kept) + previous[2] > overlap:
                    break
                kept.insert(0, previous)
            current, total = kept, sum(u[2] for u in kept)
            if current and not limits.fits(current[0][0], unit[1], total + unit[2]):
                current, total = [], 0
        current.append(unit)
        total += unit[2]
    if current:
        spans.append((current[0][0], current[-1][1]))
    return spans
