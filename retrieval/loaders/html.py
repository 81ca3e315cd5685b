"""HTML: the visible text only (no scripts, styles, navigation), sections follow h1-h6."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from retrieval.errors import LoadError
from retrieval.loaders import Loaded
from retrieval.loaders.plain import markdown_document
from retrieval.text import decode

if TYPE_CHECKING:
    from retrieval.config import RetrievalSettings

DROPPED = ["script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "svg",
           "iframe", "object", "embed", "canvas", "button", "select", "head"]  # fmt: skip
BLOCKS = ["p", "div", "li", "ul", "ol", "pre", "blockquote", "table", "tr", "section", "article", "main",
          "dl", "dt", "dd", "figure", "figcaption", "br", "hr"]  # fmt: skip
_DROPPED, _BLOCKS = frozenset(DROPPED), frozenset(BLOCKS)
_HEADINGS = frozenset(["h1", "h2", "h3", "h4", "h5", "h6"])
_SPACES = re.compile(r"[ \t\u00a0]+")
_TAG = re.compile(r"<(/?)([A-Za-z][^\s/>]*)[^>]*?(/?)>")
_RAW_TEXT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
_BLANKS = re.compile(r"\n\s*\n\s*")


def load(data: bytes, source: str, settings: RetrievalSettings) -> Loaded:
    return Loaded([html_document(decode(data), source, settings.max_html_depth)])


def html_to_markdown(html: str, max_depth: int = 2048) -> tuple[str, str | None]:
    """Visible text of ``html`` with headings turned into ``#`` lines, and the page title. LoadError when
    elements nest deeper than ``max_depth``, checked before parsing: the parser's time grows with the square
    of the depth (100,000 nested ``<div>``s: over 30 s; 2,000: a few milliseconds)."""
    from bs4 import BeautifulSoup

    if markup_depth(html, max_depth) > max_depth:
        raise LoadError(f"HTML nested more than {max_depth} levels deep (retrieval.max_html_depth)")
    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    lines = [_SPACES.sub(" ", line).strip() for line in _visible_text(soup).splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip(), title or None


def _visible_text(soup) -> str:
    """The text of ``soup`` without DROPPED elements; headings as ``#`` lines, `` | `` after table cells,
    blank lines around blocks. One pass over the tree, in document order: editing the tree instead
    (insert_before/after) is quadratic in the number of siblings (a 1 MB page of paragraphs took 48 s)."""
    from bs4 import NavigableString

    wanted = soup.interesting_string_types  # what get_text() would keep: no comments, no doctype
    out: list[str] = []
    stack: list[object] = [soup]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if not isinstance(node, NavigableString):  # a separator pushed below
                out.append(node)
            elif type(node) in wanted:
                out.append(str(node))
            continue
        name = node.name
        if name in _DROPPED:
            continue
        if name in _HEADINGS:
            text = _SPACES.sub(" ", " ".join(_strings(node, wanted)))
            out.append(f"\n\n{'#' * int(name[1])} {text}\n\n" if text else "")
            continue
        if name in _BLOCKS:
            out.append("\n\n")
            stack.append("\n\n")
        elif name in ("td", "th"):
            stack.append(" | ")
        stack.extend(reversed(node.contents))
    return "".join(out)


def _strings(tag, wanted) -> list[str]:
    """The stripped, non-empty strings under ``tag`` outside DROPPED elements (``get_text(" ", strip=True)``
    once those are removed)."""
    from bs4 import NavigableString

    found, stack = [], [tag]
    while stack:
        node = stack.pop()
        if isinstance(node, NavigableString):
            if type(node) in wanted and (text := node.strip()):
                found.append(text)
        elif node.name not in _DROPPED:
            stack.extend(reversed(node.contents))
    return found


def markup_depth(html: str, limit: int) -> int:
    """How deep the parser will nest the elements of ``html`` (counting no further than ``limit + 1``), from
    its tags alone: like html.parser under BeautifulSoup, an unclosed tag nests what follows, an end tag closes
    up to the open element of its name, and void elements and script/style content do not nest."""
    html = _RAW_TEXT.sub("", html)
    stack: list[str] = []
    open_names: dict[str, int] = {}
    deepest = 0
    for match in _TAG.finditer(html):
        closing, name, self_closing = match.groups()
        name = name.lower()
        if closing:
            if open_names.get(name):
                while (top := stack.pop()) != name:
                    open_names[top] -= 1
                open_names[name] -= 1
        elif name not in _VOID and not self_closing:
            stack.append(name)
            open_names[name] = open_names.get(name, 0) + 1
            if len(stack) > deepest:
                deepest = len(stack)
                if deepest > limit:
                    break
    return deepest


def html_document(html: str, source: str, max_depth: int = 2048):
    text, title = html_to_markdown(html, max_depth)
    doc = markdown_document(text, source, title=title)
    doc.title = title or doc.title
    return doc
