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
from collections.abc import Callable, Iterator, Sequence

# The start of a code block in an answer, in text that begins with "\n\n" at the answer's start (the start
# counts as after a blank line): a line indented by four spaces or a tab after a blank line, or a fence (three
# or more backticks or tildes, then its language) on a line of its own. The match starts at the line break
# before it.
_BLOCK_START = re.compile(
    r"\n[ \t]*\n(?:[ \t]*\n)*(?: {4}|\t)[ \t]*\S|\n(?:[ \t]*\n)*[ ]{0,3}(?:`{3,}[^`\n]*|~{3,}[^\n]*)\n"
)
# an opening fence line (as in _BLOCK_START): its fence, its language
_FENCE = re.compile(r" {0,3}(`{3,}(?=[^`\n]*$)|~{3,})(.*)")
# a line that may still become a fence or an indented line: blanks, or a fence being written
_OPENING = re.compile(r"[ \t]*| {0,3}(?:`+[^`\n]*|~+[^\n]*)")
_LIST_ITEM = re.compile(r"\s*(?:[-*+•]|\d+[.)])\s")
_CITATION = re.compile(r"(?<!\S)\[\d+(?:\s*,\s*\d+)*\]")
_CITATIONS_AT_END = re.compile(r"(?:\s*\[\d+(?:\s*,\s*\d+)*\])+\.?\s*\Z")
_UNDERLINE = re.compile(r"\s*(?:[=\-~^*_#]\s*){3,}")
# what a line that goes on a paragraph cannot start with: a list item, a heading, a quote, a table row, a
# fence, an underline, a number (an ordered item); a code span (one backtick) can
_NOT_PROSE_START = set("-*+#>|`=~_•·–") | set("0123456789")
# a line after which words stand on a line of their own: a heading, a list item, a quote, a fence
_OWN_LINE = re.compile(r"\s*(?:#|>|```|~~~|[-*+•](?:\s|$)|\d+[.)](?:\s|$))")


def code_layout(text: str) -> str:
    """``text`` with the code it ends with laid out as code and its citation outside it (module docstring),
    and the line breaks of its prose reflowed."""
    text = text.replace("\r", "")
    start = _code_start("\n\n" + text, "")
    if start is None:
        return reflow(text)
    at = max(0, start - 2)
    prose = reflow(text[:at].rstrip())
    gap, code = _code_part(text[at:], text[:at])  # (the lines as written decide, as when streamed)
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
            and not before.lstrip().startswith(("#", "```", "~~~"))
            and not _UNDERLINE.fullmatch(before)
            and after
            and not after.isspace()
            and (after not in _NOT_PROSE_START or (after == "`" and text[i + 1 : i + 4] != "```"))
        ):
            out[i] = " "
    return "".join(out)


def layout_stream(pieces: Iterator[str]) -> Iterator[str]:
    """Streaming :func:`code_layout`: the answer streams until a code block starts (line breaks and blanks at
    the end are held back until the next line shows whether it is code, prose or a new paragraph); from there
    it is held to the end. Drafted answers come whole anyway, and code comes last in an answer that quotes a
    command."""
    held, seen, coding = "", "", False  # seen: the text already sent, as written (before reflowing)

    def send(text: str) -> str:
        nonlocal seen
        out = reflow(text, seen.rsplit("\n", 1)[-1])
        seen += text
        return out

    for piece in pieces:
        held += piece.replace("\r", "")
        if coding:
            continue
        lead = "\n\n" if not seen else ""  # the answer's start counts as after a blank line
        if held.strip():  # (a block starts with a visible character: no search through a run of blanks)
            start = _code_start(lead + held, seen)
            if start is not None:
                coding = True
                at = max(0, start - len(lead))
                if held[:at].strip():
                    yield send(held[:at].rstrip())
                held = held[at:]
                continue
        cut = _undecided(lead + held) - len(lead)
        if cut > 0:
            yield send(held[:cut])
            held = held[cut:]
    if held:
        if coding:
            gap, code = _code_part(held, seen)
            yield (gap if seen.strip() else "") + code
        else:
            yield send(held)


def _undecided(text: str) -> int:
    """Where the end of ``text`` that could still open a code block, or end a paragraph, starts: trailing
    blanks; or, when its last line is blanks or a fence being written, the blanks and line breaks before
    it."""
    end = len(text.rstrip(" \t"))
    last = text.rfind("\n")
    if last < 0 or not _OPENING.fullmatch(text[last + 1 :]):
        return end
    return len(text[:last].rstrip(" \t\n"))  # the end of the last line with something on it


def _code_start(text: str, before: str) -> int | None:
    """Where in ``text`` the first code block starts (its line break), unless the line before it is a list
    item: an indented paragraph there is the item's own text. ``before``: the text before ``text``."""
    for match in _BLOCK_START.finditer(text):
        previous = (before + text[: match.start()]).rstrip("\n").rsplit("\n", 1)[-1]
        if match.group().endswith("\n") or not _LIST_ITEM.match(previous):  # a fence, or not in a list
            return match.start()
    return None


def _code_part(rest: str, before: str) -> tuple[str, str]:
    """The code block ``rest`` starts with (from the line break before it) laid out, followed by what comes
    after it (its citation; words, laid out in turn), and what goes between it and the text ``before`` it."""
    lines = rest.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    code: list[str] = []
    language = ""
    opening = _FENCE.fullmatch(lines[0]) if lines else None
    if opening:  # fenced: to a closing fence as long as the opening one at least, or to the end
        fence, language = opening.group(1), opening.group(2).strip()
        lines.pop(0)
        closing = re.compile(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*")
        while lines and not closing.fullmatch(lines[0]) and not _closes_with_citation(lines[0], closing):
            code.append(lines.pop(0))
        if lines:
            last = lines.pop(0)
            if not closing.fullmatch(last):  # "``` [2]."
                lines.insert(0, last.lstrip(" \t`~"))
    else:  # indented: indented or blank lines
        while lines and (lines[0].startswith(("    ", "\t")) or not lines[0].strip()):
            code.append(lines.pop(0))
        if not code:  # (never: a block starts with one of the two)
            return " ", reflow("\n".join(lines)).strip()
    while code and not code[-1].strip():
        code.pop()
    if code and (
        marker := _CITATION.search(code[-1])
    ):  # a citation inside the last line: the code ends there
        lines.insert(0, code[-1][marker.start() :])
        code[-1] = code[-1][: marker.start()]
    body = textwrap.dedent("\n".join(code)).strip("\n").rstrip()
    after = code_layout("\n".join(lines)).strip()
    previous = before.rstrip().rsplit("\n", 1)[-1]
    own_line = _OWN_LINE.match(previous) is not None or _UNDERLINE.fullmatch(previous) is not None
    if not body.strip():
        return " ", after
    if "\n" not in body:  # one line: a code span (a language, if any, is no help there)
        joint = (
            "\n" if _OWN_LINE.match(after) else " "
        )  # a list item, a heading... after the code keeps its line
        span = joint.join(filter(None, [inline_code(body.strip()), after]))
        return ("\n\n" if own_line else " "), span
    fence = "`" * max(3, _longest_run(body, "`") + 1)
    return "\n\n", "\n\n".join(filter(None, [f"{fence}{language}\n{body}\n{fence}", after]))


def _closes_with_citation(line: str, closing: re.Pattern[str]) -> bool:
    """Whether ``line`` is a closing fence followed by the answer's citation (``` [2].)."""
    tail = _CITATIONS_AT_END.search(line)
    return tail is not None and closing.fullmatch(line[: tail.start()]) is not None


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


# a line of a code block that is words: a comment, or a sentence (an indented paragraph of a plain-text file)
_COMMENT = re.compile(r"\s*(?:#|//|--|;|/\*|\*|<!--|rem\s)", re.IGNORECASE)
_SENTENCE = re.compile(r"\s*[A-ZÁÉÍÓÚÑ¿¡\"'“][^\n]*[.!?:]\s*")


def code_lines(text: str) -> list[str]:
    """The lines of ``text`` that Markdown shows as code, and that are code rather than words: inside a fence,
    or indented by four spaces or a tab after a blank line (or another such line), unless they belong to a
    list item; not a comment, nor a sentence of four words or more. A passage may start inside a fence: when
    its fences are odd in number and the first has no language, it is taken to close one."""
    rows = text.split("\n")
    fences = [line for line in rows if _FENCE.fullmatch(line)]
    fenced = len(fences) % 2 == 1 and not _FENCE.fullmatch(fences[0]).group(2).strip()  # type: ignore[union-attr]
    lines, indented, blank, listed = [], False, True, False
    for line in rows:
        if _FENCE.fullmatch(line):
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
    return [
        line
        for line in lines
        if not _COMMENT.match(line) and not (_SENTENCE.fullmatch(line) and len(line.split()) >= 4)
    ]


def code_quote_stream(pieces: Iterator[str], sources: Sequence[str]) -> Iterator[str]:
    """Streaming :func:`code_quote`: the answer is held back only while it could still be a quote of code (it
    is part of a code span or a code line of a source), until its citation starts. (An answer's "[" comes
    whole with its number and "]": the citation filter before this holds an open bracket back.)"""
    code = [" ".join(c.lower().split()) for source in sources for c in code_texts(source)]

    def decided(held: str) -> bool:
        quote = " ".join(held.split("[", 1)[0].lower().split())
        return "[" in held or bool(quote and not any(quote in c for c in code))

    return held_until(pieces, decided, lambda held: code_quote(held, sources))


def held_until(
    pieces: Iterator[str], ready: Callable[[str], bool], change: Callable[[str], str]
) -> Iterator[str]:
    """``pieces`` with their beginning held back until ``ready`` says it is enough to decide on, then sent as
    ``change`` gives it; the rest as it comes."""
    held, done = "", False
    for piece in pieces:
        if done:
            yield piece
            continue
        held += piece
        if ready(held):
            yield change(held)
            done = True
    if held and not done:
        yield change(held)
