"""Citation markers: ``[1]``, ``[2, 3]``. Markers that point at no retrieved source are removed, while
streaming (a marker may arrive split over several tokens)."""

from __future__ import annotations

import re

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
