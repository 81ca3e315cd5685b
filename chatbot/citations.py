"""Citation markers: ``[1]``, ``[2, 3]``. Markers that point at no retrieved source are removed, while
streaming (a marker may arrive split over several tokens)."""

from __future__ import annotations

import re
from collections.abc import Sequence

_MARKER = re.compile(r"\s?\[(\s*\d+\s*(?:,\s*\d+\s*)*)\]")
# Adjacent markers ("[4][2]") are cleaned as one run, so removing one never glues the next to the word before.
_RUN = re.compile(r"\s?(?:\[\s*\d+\s*(?:,\s*\d+\s*)*\])+")
_RUN_AT_END = re.compile(_RUN.pattern + "$")
_MAX_MARKER = 16  # longest text held back waiting for a ']'


def clean_markers(text: str, n_sources: int) -> str:
    """Drop the numbers outside 1..n_sources from each marker; drop markers left empty."""

    def keep(match: re.Match[str]) -> str:
        valid: list[int] = []
        for marker in _MARKER.finditer(match.group(0)):
            for n in (int(x) for x in marker.group(1).split(",")):
                if 1 <= n <= n_sources and n not in valid:
                    valid.append(n)
        if not valid:
            return ""
        lead = " " if match.group(0)[0].isspace() else ""
        return f"{lead}[{', '.join(str(n) for n in valid)}]"

    return _RUN.sub(keep, text)


def cited_numbers(text: str) -> list[int]:
    """The source numbers cited in ``text``, in order of first citation."""
    seen: list[int] = []
    for match in _MARKER.finditer(text):
        for n in (int(x) for x in match.group(1).split(",")):
            if n not in seen:
                seen.append(n)
    return seen


class MarkerFilter:
    """Streaming version of :func:`clean_markers`: ``feed`` pieces, then ``flush`` at the end."""

    def __init__(self, n_sources: int) -> None:
        self.n_sources = n_sources
        self.pending = ""

    def feed(self, piece: str) -> str:
        text = self.pending + piece
        cut = len(text)
        opening = text.rfind("[")
        if opening != -1 and "]" not in text[opening:] and len(text) - opening <= _MAX_MARKER:
            cut = opening  # an open marker: wait until it closes (or grows too long to be one)
        elif text.endswith(" "):
            cut = len(
                text.rstrip(" ")
            )  # trailing spaces wait: a marker to remove (with its space) may follow
        if run := _RUN_AT_END.search(text[:cut]):
            cut = run.start()  # a closed run: the next piece may continue it ("[1]" then "[2]")
        if 0 < cut < len(text) and text[cut - 1] == " " and text[cut] == "[":
            cut -= 1  # keep the space with its marker
        self.pending = text[cut:]
        return clean_markers(text[:cut], self.n_sources)

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return clean_markers(text, self.n_sources)


# Marks that Markdown adds around a quote, or a source writes around words the answer quotes without them.
_DROPPED = frozenset("`*")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_MIN_QUOTE = 4  # letters and digits a located quote must hold: shorter ones ("a", "of") are found anywhere


def _flat_with_offsets(text: str) -> tuple[str, list[int]]:
    """``text`` lower-cased, without ``*`` and backticks, every run of whitespace one space; and for each
    character of that, its offset in ``text``."""
    flat: list[str] = []
    where: list[int] = []
    for i, c in enumerate(text):
        if c in _DROPPED:
            continue
        if c.isspace():
            if flat and flat[-1] != " ":
                flat.append(" ")
                where.append(i)
            continue
        low = c.lower()
        flat.append(low if len(low) == 1 else c)  # one character for one: offsets stay exact
        where.append(i)
    return "".join(flat), where


def quoted_span(answer: str, number: int, passage: str) -> tuple[int, int] | None:
    """Where ``passage`` holds what ``answer`` quotes from it: the start and end offsets, in ``passage``, of the
    words before the first citation of ``number`` (source ``number`` is ``passage``), or None.

    What an answer makes of a quote is undone: case (its first letter is capitalised), code spans and
    emphasis, line breaks turned into spaces and a fence's language; words before the quote that the passage
    does not hold ("Run:", "and") are dropped from the front until the rest is found, as long as the rest is at
    least half of the part (a last word alone would be found anywhere). Only the part of the answer since the
    previous citation counts, and fewer than four letters or digits are not looked for."""
    flat_passage, where = _flat_with_offsets(passage)
    start = 0
    for run in _RUN.finditer(answer):
        numbers = {int(n) for m in _MARKER.finditer(run.group(0)) for n in m.group(1).split(",")}
        if number in numbers:
            words = _flat_with_offsets(answer[start : run.start()])[0].strip(" .,;:").split(" ")
            letters = sum(c.isalnum() for c in " ".join(words))
            while words:
                quote = " ".join(words)
                held = sum(c.isalnum() for c in quote)
                if held < _MIN_QUOTE or 2 * held < letters:
                    break
                found = flat_passage.find(quote)
                if found >= 0:
                    return where[found], where[found + len(quote) - 1] + 1
                words = words[1:]
            return None
        start = run.end()
    return None


def quote_context(text: str, span: Sequence[int], around: int = 100) -> tuple[str, str, str]:
    """The quote at ``span`` of ``text`` and up to ``around`` characters of its paragraph on each side of it,
    cut at a space and marked "…" where the paragraph goes on; every run of whitespace one space."""
    start, end = max(0, span[0]), min(len(text), span[1])

    def flat(part: str) -> str:
        return " ".join(part.split())

    first = max((m.end() for m in _PARAGRAPH_BREAK.finditer(text, 0, start)), default=0)
    last = next((m.start() for m in _PARAGRAPH_BREAK.finditer(text, end)), len(text))
    before, after = text[max(first, start - around) : start], text[end : min(last, end + around)]
    if start - around > first:
        before = "…" + before[before.find(" ") + 1 :] if " " in before else "…"
    if end + around < last:
        after = after[: after.rfind(" ")] + "…" if " " in after else "…"
    lead = " " if before[-1:].isspace() else ""
    trail = " " if after[:1].isspace() else ""
    return flat(before) + lead, flat(text[start:end]), trail + flat(after)
