"""How an answer's text is laid out before it is shown: code stays code, with the citation outside it, and a
quote's line breaks inside a paragraph become spaces. The answer is a quote of Markdown or plain-text sources
followed by its citation (``Run `make run` [1].``); each function here has a streaming form that gives the
same text whatever pieces the answer arrives in.

- :func:`code_layout`: an answer whose quote runs from prose into a code block ("Run:" and then the indented
  command) ended inside the block, where Markdown shows the citation as part of the command (and a reader who
  copies it runs ``[3].`` too). One line of code becomes a code span, longer code a fenced block; the
  citation, and any words after the code, follow it.
- :func:`reflow`: a quote keeps its source's line breaks ("Markdown,\\nreStructuredText"), which a terminal or
  an API client shows as breaks. Inside a paragraph they become spaces; lists, headings, underlines and
  paragraph breaks stay.
- :func:`code_quote`: a quote that is code in its cited source (a code span, or a line of an indented or
  fenced block) is shown as a code span in the source's spelling, never capitalised like a sentence
  (``Chatbot index ...``).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator, Sequence

# The start of a code block in an answer, in text that begins with "\n\n" at the answer's start (the start
# counts as after a blank line): a line indented by four spaces or a tab after a blank line, or a ``` fence
# on a line of its own (with its language, if any). The match starts at the line break before it.
_BLOCK_START = re.compile(
    r"\n[ \t]*\n(?:[ \t]*\n)*(?: {4}|\t)[ \t]*\S|\n(?:[ \t]*\n)*[ \t]{0,3}```[\w+-]*[ \t]*\n"
)
# the end of a text that may still open a code block: line breaks, then blanks or a fence so far
_MAY_OPEN = re.compile(r"\n(?:[ \t]*\n)*(?:[ \t]*|[ \t]{0,3}`{1,3}[\w+-]*[ \t]*)\Z")
_FENCE_LINE = re.compile(r"[ \t]{0,3}```[\w+-]*[ \t]*")
_LIST_ITEM = re.compile(r"\s*(?:[-*+•]|\d+[.)])\s")
_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
_CITATIONS_AT_END = re.compile(r"(?:\s*\[\d+(?:\s*,\s*\d+)*\])+\.?\s*\Z")
_UNDERLINE = re.compile(r"\s*(?:[=\-~^*_#]\s*){3,}")
# what a line that goes on a paragraph cannot start with: a list item, a heading, a quote, a table row, a
# fence, an underline, a number (an ordered item); a code span (one backtick) can
_NOT_PROSE_START = set("-*+#>|`=~_•·–") | set("0123456789")


def code_layout(text: str) -> str:
    """``text`` with the code it ends with laid out as code and its citation outside it (module docstring),
    and the line breaks of its prose reflowed."""
    start = _code_start("\n\n" + text, "")
    if start is None:
        return reflow(text)
    at = max(0, start - 2)
    prose = reflow(text[:at].rstrip())
    gap, code = _code_part(text[at:])
    return prose + gap + code if prose else code


def reflow(text: str, line: str = "") -> str:
    """``text`` with each line break inside a paragraph as a space (so its length is kept). ``line``: the text
    of the line ``text`` continues, when it is a piece of a longer text."""
    out = list(text)
    for i, char in enumerate(text):
        if char != "\n":
            continue
        before = (line + text[:i]).rsplit("\n", 1)[-1]
        after = text[i + 1 : i + 2]
        if (
            before.strip()
            and not before.lstrip().startswith("#")
            and not _UNDERLINE.fullmatch(before)
            and after
            and not after.isspace()
            and (after not in _NOT_PROSE_START or (after == "`" and text[i + 1 : i + 4] != "```"))
        ):
            out[i] = " "
    return "".join(out)


def layout_stream(pieces: Iterator[str]) -> Iterator[str]:
    """Streaming :func:`code_layout`: the answer streams until a code block starts (line breaks at the end are
    held back until the next line shows whether it is code, prose or a new paragraph); from there it is held
    to the end. Drafted answers come whole anyway, and code comes last in an answer that quotes a command."""
    held, seen, coding = "", "", False  # seen: the text already sent, as written (before reflowing)

    def send(text: str) -> str:
        nonlocal seen
        out = reflow(text, seen.rsplit("\n", 1)[-1])
        seen += text
        return out

    for piece in pieces:
        held += piece
        if coding:
            continue
        lead = "\n\n" if not seen else ""  # the answer's start counts as after a blank line
        start = _code_start(lead + held, seen)
        if start is not None:
            coding = True
            at = max(0, start - len(lead))
            if held[:at].strip():
                yield send(held[:at].rstrip())
            held = held[at:]
            continue
        may = _MAY_OPEN.search(lead + held)
        cut = len(held) if may is None else max(0, may.start() - len(lead))
        if cut:
            yield send(held[:cut])
            held = held[cut:]
    if held:
        if coding:
            gap, code = _code_part(held)
            yield (gap if seen.strip() else "") + code
        else:
            yield send(held)


def _code_start(text: str, before: str) -> int | None:
    """Where in ``text`` the first code block starts (its line break), unless the line before it is a list
    item: an indented paragraph there is the item's own text. ``before``: the text before ``text``."""
    for match in _BLOCK_START.finditer(text):
        previous = (before + text[: match.start()]).rstrip("\n").rsplit("\n", 1)[-1]
        if match.group().endswith("\n") or not _LIST_ITEM.match(previous):  # a fence, or not in a list
            return match.start()
    return None


def _code_part(rest: str) -> tuple[str, str]:
    """The code block ``rest`` starts with (from the line break before it) laid out with the words after it
    and the citation, and what goes between it and the words before it."""
    tail = _CITATIONS_AT_END.search(rest)
    cited = tail.group().strip() if tail else ""
    lines = (rest[: tail.start()] if tail else rest).split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    code: list[str] = []
    if lines and _FENCE_LINE.fullmatch(lines[0]):  # fenced: to the closing fence, or the end
        lines.pop(0)
        while lines and not _FENCE_LINE.fullmatch(lines[0]):
            code.append(lines.pop(0))
        lines = lines[1:]
    else:  # indented: indented or blank lines
        while lines and (lines[0].startswith(("    ", "\t")) or not lines[0].strip()):
            code.append(lines.pop(0))
    if code and (
        marker := _CITATION.search(code[-1])
    ):  # a citation inside the last line: the code ends there
        lines.insert(0, code[-1][marker.start() :])
        code[-1] = code[-1][: marker.start()]
    body = textwrap.dedent("\n".join(code)).strip("\n").rstrip()
    after = " ".join(filter(None, [reflow("\n".join(lines)).strip(), cited]))
    if not body.strip():
        return " ", after
    if "\n" not in body:
        return " ", " ".join(filter(None, [inline_code(body.strip()), after]))
    fence = "`" * max(3, _longest_run(body, "`") + 1)
    return "\n\n", "\n\n".join(filter(None, [f"{fence}\n{body}\n{fence}", after]))


def inline_code(text: str) -> str:
    """``text`` as a Markdown code span that no backtick in it closes early."""
    fence = "`" * (_longest_run(text, "`") + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _longest_run(text: str, char: str) -> int:
    return max((len(run) for run in re.findall(f"{re.escape(char)}+", text)), default=0)


# a quote that is only part of a code line or span is code when it looks like code (a path, an option, a
# file name, an assignment) or has two words or more; a single plain word ("No", "install") is not
_CODE_CHARS = re.compile(r"[/\\_=.:-]")


def code_quote(text: str, sources: Sequence[str]) -> str:
    """``text`` with its quote as a code span when the quote is code in its source (module docstring), as the
    source writes it: ``chatbot index mi-coleccion /ruta [1].`` → ``` ``chatbot index mi-coleccion /ruta`` [1].```.
    The quote must be a whole code span or code line, or a part of one with whole words that looks like code
    or has two words or more. The cited source is looked in; without a citation, every source."""
    quote, bracket, rest = text.partition("[")
    words = quote.split()
    if not words or "`" in quote or "\n" in quote.strip():
        return text
    cited = re.match(r"\d+", rest)
    number = int(cited.group()) if bracket and cited else 0
    looked = [sources[number - 1]] if 1 <= number <= len(sources) else list(sources)
    phrase = r"\s+".join(map(re.escape, words))
    part = re.compile(rf"(?<![\w-]){phrase}(?![\w-])", re.IGNORECASE)
    whole = len(words) > 1 or _CODE_CHARS.search(quote.strip().rstrip(".")) is not None
    for source in looked:
        for code in code_texts(source):
            found = part.search(code)
            if found and (whole or found.group() == code.strip()):
                lead = text[: len(text) - len(text.lstrip())]
                return lead + inline_code(found.group()) + (" " + bracket + rest if bracket else "")
    return text


def code_texts(source: str) -> list[str]:
    """The code in ``source``: its code spans' contents and its code lines (:func:`code_lines`)."""
    return [*re.findall(r"`([^`\n]+)`", source), *(line.strip() for line in code_lines(source))]


def code_lines(text: str) -> list[str]:
    """The lines of ``text`` that Markdown shows as code: inside a ``` fence, or indented by four spaces or a
    tab after a blank line (or another such line), unless they belong to a list item. A passage may start
    inside a fence: when its fences are odd in number and the first has no language, it is taken to close one."""
    rows = text.split("\n")
    fences = [line for line in rows if _FENCE_LINE.fullmatch(line)]
    fenced = len(fences) % 2 == 1 and fences[0].strip() == "```"
    lines, indented, blank, listed = [], False, True, False
    for line in rows:
        if _FENCE_LINE.fullmatch(line):
            fenced = not fenced
        elif fenced:
            lines.append(line)
        elif line.strip() and line.startswith(("    ", "\t")) and (blank or indented) and not listed:
            lines.append(line)
            indented = True
        elif line.strip():
            indented = False
            if not line.startswith((" ", "\t")):
                listed = _LIST_ITEM.match(line) is not None
        blank = not line.strip()
    return lines


def code_quote_stream(pieces: Iterator[str], sources: Sequence[str]) -> Iterator[str]:
    """Streaming :func:`code_quote`: the answer is held back only while it could still be a quote of code (it
    is part of a code span or a code line of a source), until its citation starts. (An answer's "[" comes
    whole with its number and "]": the citation filter before this holds an open bracket back.)"""
    code = [" ".join(c.lower().split()) for source in sources for c in code_texts(source)]
    held, done = "", False
    for piece in pieces:
        if done:
            yield piece
            continue
        held += piece
        quote = " ".join(held.split("[", 1)[0].lower().split())
        if "[" in held or (quote and not any(quote in c for c in code)):
            yield code_quote(held, sources)
            done = True
    if held and not done:
        yield code_quote(held, sources)
