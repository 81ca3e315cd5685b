"""The browser app: chat, documents and training pages. Run with `make run`
(or `streamlit run streamlit_app.py`).

Pages only (chatbot/ui/*_page.py): every answer, sync and training run comes from the services, which are built
once per server process in st.cache_resource.
"""

from __future__ import annotations

import streamlit as st

from chatbot.ui.access import exposure_gate, login_gate
from chatbot.ui.i18n import LANGUAGES, translator
from chatbot.ui.state import get_service, language

st.set_page_config(page_title="Domain Assistant", page_icon="💬", layout="wide")

settings = get_service().settings
t = translator(language(settings))

if exposure_gate(settings, t) and login_gate(settings, t):
    st.sidebar.selectbox(
        t("language"),
        LANGUAGES,
        index=LANGUAGES.index(language(settings)),
        key="language",
        format_func=lambda code: {"en": "English", "es": "Español"}[code],
    )
    pages = [
        st.Page(
            "chatbot/ui/chat_page.py",
            title=t("page_chat"),
            icon=":material/chat:",
            url_path="chat",
            default=True,
        ),
        st.Page(
            "chatbot/ui/documents_page.py",
            title=t("page_documents"),
            icon=":material/description:",
            url_path="documents",
        ),
        st.Page(
            "chatbot/ui/training_page.py",
            title=t("page_training"),
            icon=":material/model_training:",
            url_path="training",
        ),
    ]
    st.navigation(pages).run()
