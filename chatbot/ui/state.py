"""What every page shares: the services (built once per process), the language, who the user is."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from chatbot.service import ChatService
from chatbot.settings import Settings, load_settings
from chatbot.ui.i18n import LANGUAGES, pick_language, translator

OWNER_PARAM = "s"  # the URL query parameter that keys an anonymous browser session's conversations


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
    """Whose conversations this session sees: the logged-in user, else a random key kept in the URL (so a
    reload or a server restart keeps them, and another browser does not see them)."""
    if settings.ui.auth == "oidc" and getattr(st.user, "is_logged_in", False):
        return f"oidc:{st.user.get('sub') or st.user.get('email')}"
    key = st.query_params.get(OWNER_PARAM)
    if not key or len(key) < 16 or not key.isalnum():
        key = secrets.token_hex(16)
        st.query_params[OWNER_PARAM] = key
    return f"browser:{key}"


def page_context() -> PageContext:
    service = get_service()
    lang = language(service.settings)
    return PageContext(service, service.settings, translator(lang), lang, owner(service.settings))
