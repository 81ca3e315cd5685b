"""What every page shares: the services (built once per process), the language, who the user is."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from chatbot.service import ChatService
from chatbot.settings import Settings, load_settings
from chatbot.ui.i18n import LANGUAGES, pick_language, translator

SESSION_COOKIE = "assistant_session"  # keys an anonymous browser's conversations (no login to tie them to)
LEGACY_PARAM = (
    "s"  # where earlier versions kept that key: the page's URL, which a link could hand to someone else
)
_KEY = re.compile(r"[0-9a-f]{32}")


@st.cache_resource(show_spinner=False)
def get_service() -> ChatService:
    """One service per server process: models and indexes are loaded once and shared by all sessions."""
    return ChatService(load_settings())


@dataclass
class PageContext:
    service: ChatService
    settings: Settings
    t: Callable[[str], str]
    language: str
    owner: str


def language(settings: Settings) -> str:
    chosen = st.session_state.get("language")
    if chosen in LANGUAGES:
        return chosen
    return pick_language(settings.ui.language, st.context.locale)


def owner(settings: Settings) -> str:
    """Whose conversations this session sees: the logged-in user, else a random key kept in a cookie of this
    browser (so a reload or a server restart keeps them, and another browser does not see them).

    The key is never taken from the URL: a link carrying one (as earlier versions made) would file the
    conversations of whoever opens it under the key of whoever sent it (:func:`legacy_key` offers to move a
    link's conversations into this browser instead)."""
    if settings.ui.auth == "oidc" and getattr(st.user, "is_logged_in", False):
        return f"oidc:{st.user.get('sub') or st.user.get('email')}"
    key = st.session_state.get("owner_key") or _cookie() or ""
    if not _KEY.fullmatch(key):
        key = secrets.token_hex(16)
    if st.session_state.get("owner_key") != key:
        st.session_state["owner_key"] = key
    if not st.session_state.get("cookie_sent"):
        # our own script with our own hex key in it (nothing from a user or a model): the cookie this browser
        # sends from its next visit on, written again at every visit so that its year runs from the last one;
        # Lax: sent when a link from elsewhere opens the app (Strict would lose the list), never on other sites' forms
        st.html(
            f"<script>document.cookie = '{SESSION_COOKIE}={key}; path=/; max-age=31536000; SameSite=Lax'"
            " + (location.protocol === 'https:' ? '; Secure' : '');</script>",
            unsafe_allow_javascript=True,
        )
        st.session_state["cookie_sent"] = True
    return f"browser:{key}"


def _cookie() -> str | None:
    """The session cookie this browser sent when the page was opened, if any."""
    value = st.context.cookies.get(SESSION_COOKIE)
    return value if isinstance(value, str) else None  # (a test harness without a browser has no cookies)


def legacy_key() -> str | None:
    """The conversation key of an earlier version's URL (``?s=...``), if this page was opened with one."""
    key = st.query_params.get(LEGACY_PARAM) or ""
    return key if len(key) >= 16 and key.isalnum() else None


def page_context() -> PageContext:
    service = get_service()
    lang = language(service.settings)
    return PageContext(service, service.settings, translator(lang), lang, owner(service.settings))
