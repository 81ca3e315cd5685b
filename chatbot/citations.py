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


_TICKS = re.compile(r"`+")


def _prose(text: str, code: str | None = None) -> tuple[list[tuple[str, bool]], int | None, str | None]:
    """``text`` cut into (piece, in code) pieces: a code span or fence (`lista[0]`, ```...```) holds no
    citation. A span closes at a run of as many backticks; one not closed by the end is literal text, as
    Markdown reads it, so that piece counts as prose. ``code``: the run of a span already open where ``text``
    starts (a stream). Also returns where a span still open at the end starts here (0 if it was open before)
    and its run (None, None: none is open)."""
    pieces, start, opened = [], 0, 0 if code else None
    for ticks in _TICKS.finditer(text):
        if code is None:
            pieces.append((text[start : ticks.start()], False))
            start, code, opened = ticks.start(), ticks.group(), ticks.start()
        elif ticks.group() == code:
            pieces.append((text[start : ticks.end()], True))
            start, code, opened = ticks.end(), None, None
    pieces.append((text[start:], False))
    return [p for p in pieces if p[0]], opened, code


def clean_markers(text: str, n_sources: int) -> str:
    """Drop the numbers outside 1..n_sources from each marker; drop markers left empty. Brackets in code
    (`lista[0]`) are code, not markers."""
    return _cleaned(_prose(text)[0], n_sources)


def _cleaned(pieces: list[tuple[str, bool]], n_sources: int) -> str:
    return "".join(piece if code else _clean_prose(piece, n_sources) for piece, code in pieces)


def _clean_prose(text: str, n_sources: int) -> str:
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
    """The source numbers cited in ``text``, in order of first citation (none in code)."""
    seen: list[int] = []
    prose = " ".join(piece for piece, code in _prose(text)[0] if not code)
    for match in _MARKER.finditer(prose):
        for n in (int(x) for x in match.group(1).split(",")):
            if n not in seen:
                seen.append(n)
    return seen


class MarkerFilter:
    """Streaming version of :func:`clean_markers`: ``feed`` pieces, then ``flush`` at the end."""

    def __init__(self, n_sources: int) -> None:
        self.n_sources = n_sources
        self.pending = ""
        self.code: str | None = None  # the backtick run of a code span left open in what was passed on

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
        if text[:cut].endswith("`"):
            cut = len(text[:cut].rstrip("`"))  # a backtick run may go on in the next piece ("`" then "``")
        _, opened, _ = _prose(text[:cut], self.code)
        if opened is not None and (bracket := text.find("[", opened, cut)) != -1:
            # brackets in a code span not closed yet: code if it closes, prose (markers) if the answer ends
            # first; its text before them streams on
            cut = bracket - 1 if bracket > opened and text[bracket - 1] == " " else bracket
        self.pending = text[cut:]
        return self._passed(text[:cut])

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return self._passed(text)

    def _passed(self, text: str) -> str:
        pieces, _, self.code = _prose(text, self.code)
        return _cleaned(pieces, self.n_sources)


# Marks that Markdown adds around a quote, or a source writes around words the answer quotes without them
# (code spans, emphasis); dropped from both sides alike, so identifiers with "_" still match.
_DROPPED = frozenset("`*_")
# what may stand around a quote in an answer without being part of it (not brackets: "(EML and MBOX)" ends one)
_AROUND = " .,;:!?\"'“”«»‘’"
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")  # a blank line, "\r\n\r\n" and "\n \n" too
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SHORT_QUOTE = 4  # a quote with fewer letters and digits ("No", "30") is located only where it is unambiguous
_MIN_INSIDE_WORDS = 12  # letters and digits a quote must hold to be located starting or ending inside a word


def _flat_with_offsets(text: str) -> tuple[str, list[int]]:
    """``text`` lower-cased, without ``*``, ``_`` and backticks, every run of whitespace one space; and for each
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
        flat.append(c.lower()[0])  # one character for one ("İ" is "i̇" lower-cased): offsets stay exact
        where.append(i)
    return "".join(flat), where


def _find(quote: str, flat: str) -> int:
    """Where ``quote`` starts in ``flat``: the first place it is whole words, else, for a quote long enough not
    to be found by chance, the first place at all ("blanco" of "blancos"); a short quote ("No", "30") only
    where it is the one such word of the passage. -1 when none of these."""
    whole, first = [], -1
    at = flat.find(quote)
    while at >= 0:
        end = at + len(quote)
        starts = at == 0 or not (flat[at - 1].isalnum() and quote[0].isalnum())
        ends = end == len(flat) or not (flat[end].isalnum() and quote[-1].isalnum())
        if starts and ends:
            whole.append(at)
        elif first < 0:
            first = at
        at = flat.find(quote, at + 1)
    held = sum(c.isalnum() for c in quote)
    if held < _SHORT_QUOTE:
        return whole[0] if len(whole) == 1 else -1
    if whole:
        return whole[0]
    return first if held >= _MIN_INSIDE_WORDS else -1


def _locate(part: str, flat_passage: str, where: list[int]) -> tuple[int, int] | None:
    words = _flat_with_offsets(part)[0].strip(_AROUND).split(" ")
    letters = sum(c.isalnum() for c in " ".join(words))
    while words:
        quote = " ".join(words).strip(_AROUND)
        held = sum(c.isalnum() for c in quote)
        if not held or 2 * held < letters:
            return None
        found = _find(quote, flat_passage)
        if found >= 0:
            return where[found], where[found + len(quote) - 1] + 1
        words = words[1:]
    return None


def quoted_span(answer: str, number: int, passage: str) -> tuple[int, int] | None:
    """Where ``passage`` holds what ``answer`` quotes from it: the start and end offsets (Python string indices,
    i.e. code points), in ``passage``, of the words before a citation of ``number`` (source ``number`` is
    ``passage``), or None.

    What an answer makes of a quote is undone: case (its first letter is capitalised), code spans and
    emphasis, line breaks turned into spaces, a fence's language, quotation marks around it; words before the
    quote that the passage does not hold ("Run:", "and") are dropped from the front until the rest is found,
    as long as the rest is at least half of the part (a last word alone would be found anywhere). The part is
    the answer's text since the previous citation (citations next to each other, "[2] [1]", share one), and
    the first of the source's citations whose part is found counts. A quote is found as whole words; inside a
    word only when it holds twelve letters or digits or more; one of fewer than four ("No", "30") only when the
    passage has it once."""
    flat_passage, where = _flat_with_offsets(passage)
    start, part = 0, ""
    for run in _RUN.finditer(answer):
        if any(c.isalnum() for c in answer[start : run.start()]):
            part = answer[start : run.start()]
        start = run.end()
        if number in cited_numbers(run.group(0)) and (span := _locate(part, flat_passage, where)):
            return span
    return None


def quote_context(text: str, span: Sequence[int], around: int = 100) -> tuple[str, str, str]:
    """The quote at ``span`` of ``text`` and up to ``around`` characters of its paragraph on each side of it,
    cut between words and marked "…" where the paragraph goes on; every run of whitespace one space, control
    characters none."""
    start = max(0, min(span[0], len(text)))
    end = max(start, min(span[1], len(text)))

    def flat(part: str) -> str:
        return " ".join(_CONTROL.sub(" ", part).split())

    first = max((m.end() for m in _PARAGRAPH_BREAK.finditer(text, 0, start)), default=0)
    last = next((m.start() for m in _PARAGRAPH_BREAK.finditer(text, end)), len(text))
    low, high = max(first, start - around), min(last, end + around)
    before, after = text[low:start], text[end:high]
    if low > first:  # the paragraph goes on before: drop a word cut in two, then say so
        if not text[low - 1].isspace():
            cut = re.search(r"\s", before)
            before = before[cut.end() :] if cut else ""
        before = "…" + before
    if high < last:
        if not text[high].isspace():
            cut = re.search(r"\s\S*$", after)
            after = after[: cut.start()] if cut else ""
        after += "…"
    lead = " " if start > first and text[start - 1].isspace() and flat(before) else ""
    trail = " " if end < last and text[end].isspace() and flat(after) else ""
    return flat(before) + lead, flat(text[start:end]), trail + flat(after)
