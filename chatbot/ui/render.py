"""Rendering model output and document text safely.

Text goes through ``st.markdown`` without ``unsafe_allow_html``, so raw HTML is shown as text, never run.
Markdown images are turned into their alt text so an answer cannot make the browser fetch a URL.
"""

from __future__ import annotations

import re

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]*)\)")
_REF_IMAGE = re.compile(r"!\[([^\]]*)\]\[[^\]]*\]")


def safe_markdown(text: str) -> str:
    """``text`` with Markdown images replaced by ``[image: alt]``."""
    text = _IMAGE.sub(lambda m: f"[image: {m.group(1) or 'no description'}]", text)
    return _REF_IMAGE.sub(lambda m: f"[image: {m.group(1) or 'no description'}]", text)


def plain_passage(text: str, limit: int = 1200) -> str:
    """A source passage for display as preformatted text (no Markdown interpretation at all)."""
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " …"
