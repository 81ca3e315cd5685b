"""The Streamlit chat page, driven by streamlit.testing.v1.AppTest on the tiny models."""

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from chatbot.settings import load_settings
from retrieval.collection import Collection

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def app(app_env, monkeypatch):
    for key, value in app_env.items():
        monkeypatch.setenv(key, value)
    Collection.open(load_settings(), "sample").sync(ROOT / "data" / "sample")
    st.cache_resource.clear()  # the service is cached per process: build it from this test's settings
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_chat_answers_with_sources_and_keeps_the_conversation(app):
    assert app.selectbox[0].value == "sample"
    app.chat_input[0].set_value("How do I delete a collection?").run()
    assert not app.exception, app.exception
    messages = app.chat_message
    assert [m.name for m in messages] == ["user", "assistant"]
    assert messages[0].markdown[0].value == "How do I delete a collection?"
    assert app.expander[0].label.startswith("Sources (")
    conversation_id = app.session_state["conversation_id"]

    app.chat_input[0].set_value("And is the folder touched?").run()
    assert [m.name for m in app.chat_message] == ["user", "assistant", "user", "assistant"]
    assert app.session_state["conversation_id"] == conversation_id  # one conversation across reruns

    app.sidebar.button[0].click().run()  # New conversation
    assert len(app.chat_message) == 0 and "conversation_id" not in app.session_state


def test_answer_markdown_never_loads_images():
    from chatbot.ui.render import safe_markdown

    text = "See ![logo](http://evil.example/x.png) and ![][ref] here <img src=x onerror=alert(1)>"
    out = safe_markdown(text)
    assert "](http" not in out and "[image: logo]" in out
    assert "![" not in out
