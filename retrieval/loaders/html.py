"""HTML: the visible text only (no scripts, styles, navigation), sections follow h1-h6."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from retrieval.loaders import Loaded
from retrieval.loaders.plain import markdown_document
from retrieval.text import decode

if TYPE_CHECKING:
    from retrieval.config import RetrievalSettings

DROPPED = ["script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "svg",
           "iframe", "object", "embed", "canvas", "button", "select", "head"]  # fmt: skip
BLOCKS = ["p", "div", "li", "ul", "ol", "pre", "blockquote", "table", "tr", "section", "article", "main",
          "dl", "dt", "dd", "figure", "figcaption", "br", "hr"]  # fmt: skip
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANKS = re.compile(r"\n\s*\n\s*")


def load(data: bytes, source: str, settings: RetrievalSettings) -> Loaded:
    return Loaded([html_document(decode(data), source)])


def html_to_markdown(html: str) -> tuple[str, str | None]:
    """Visible text of ``html`` with headings turned into ``#`` lines, and the page title."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup.find_all(DROPPED):
        tag.decompose()
    for tag in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):
        text = _SPACES.sub(" ", tag.get_text(" ", strip=True))
        tag.replace_with(f"\n\n{'#' * int(tag.name[1])} {text}\n\n" if text else "")
    for tag in soup.find_all(["td", "th"]):
        tag.insert_after(" | ")
    for tag in soup.find_all(BLOCKS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    lines = [_SPACES.sub(" ", line).strip() for line in soup.get_text().splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip(), title or None


def html_document(html: str, source: str):
    text, title = html_to_markdown(html)
    doc = markdown_document(text, source, title=title)
    doc.title = title or doc.title
    return doc
