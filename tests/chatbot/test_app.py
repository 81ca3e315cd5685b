"""The Streamlit app, page by page, driven by streamlit.testing.v1.AppTest on the tiny models."""

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import streamlit as st
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from chatbot.memory import Conversations
from chatbot.settings import load_settings
from retrieval.collection import Collection

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # seconds: the first question loads the model
OWNER_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def env(app_env, monkeypatch):
    for key, value in app_env.items():
        monkeypatch.setenv(key, value)
    st.cache_resource.clear()  # services are cached per process: rebuild them from this test's settings
    with loopback():
        yield app_env


@contextmanager
def loopback(address: str = "127.0.0.1"):
    """The app as served on ``address`` (as `make run` and .streamlit/config.toml serve it: 127.0.0.1),
    whatever folder the tests run from."""
    before = st_config.get_option("server.address")
    st_config.set_option("server.address", address)
    try:
        yield
    finally:
        st_config.set_option("server.address", before)


@pytest.fixture
def indexed(env):
    Collection.open(load_settings(), "sample").sync(ROOT / "data" / "sample")
    return env


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "chatbot" / "ui" / f"{name}_page.py"), default_timeout=TIMEOUT)
    at.session_state["owner_key"] = OWNER_KEY  # this browser's key (a real browser sends it as a cookie)
    return at


def test_main_script_shows_the_chat_page(indexed):
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert at.chat_input[0].placeholder == "Ask a question about the documents"


def test_chat_streams_answer_with_sources_and_keeps_the_conversation(indexed):
    at = page("chat")
    at.run()
    assert not at.exception, at.exception
    assert at.sidebar.selectbox[0].value == "sample"
    at.chat_input[0].set_value("How do I delete a collection?").run()
    assert not at.exception, at.exception
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert at.chat_message[0].markdown[0].value == "How do I delete a collection?"
    assert at.expander[0].label.startswith("Sources (")
    conversation_id = at.session_state["conversation_id"]

    at.chat_input[0].set_value("And is the folder touched?").run()
    assert [m.name for m in at.chat_message] == ["user", "assistant", "user", "assistant"]
    assert at.session_state["conversation_id"] == conversation_id
    # persisted, under this browser session's owner key
    store = Conversations(load_settings().data_dir / "conversations.sqlite")
    assert [c.id for c in store.list(owner=f"browser:{OWNER_KEY}")] == [conversation_id]


@pytest.mark.parametrize("threshold, marked", [(-50.0, True), (50.0, False)])
def test_an_unsure_answer_says_so_under_it(indexed, monkeypatch, threshold, marked):
    monkeypatch.setenv("APP_CHAT__UNSURE_HESITATION", str(threshold))  # -50: every answer; 50: none
    st.cache_resource.clear()
    at = page("chat")
    at.run()
    at.chat_input[0].set_value("How do I delete a collection?").run()
    assert not at.exception, at.exception
    notes = [c.value for c in at.chat_message[1].caption if c.value.startswith("⚠️ Not sure")]
    assert len(notes) == int(marked)
    stored = Conversations(load_settings().data_dir / "conversations.sqlite")
    assert stored.messages(at.session_state["conversation_id"])[1].unsure is marked


def test_conversations_are_listed_switched_renamed_deleted(indexed):
    at = page("chat")
    at.run()
    at.chat_input[0].set_value("How do I delete a collection?").run()
    conv = at.session_state["conversation_id"]
    at.sidebar.button(key="new_conversation").click().run()
    assert "conversation_id" not in at.session_state and len(at.chat_message) == 0
    at.sidebar.button(key=f"conv-{conv}").click().run()  # switch back
    assert at.session_state["conversation_id"] == conv and len(at.chat_message) == 2
    at.sidebar.text_input(key=f"title-{conv}").set_value("Deleting").run()
    at.sidebar.button(key="rename").click().run()
    assert Conversations(load_settings().data_dir / "conversations.sqlite").get(conv).title == "Deleting"
    at.sidebar.text_input(key=f"title-{conv}").set_value("   ").run()
    at.sidebar.button(key="rename").click().run()  # an empty title: said, not a traceback; the title kept
    assert not at.exception and [e.value for e in at.sidebar.error] == ["A conversation needs a title."]
    assert Conversations(load_settings().data_dir / "conversations.sqlite").get(conv).title == "Deleting"
    # the model is served by llama.cpp here: beam search is offered disabled, with why
    beams = [w for w in at.sidebar.number_input if w.label == "num_beams"][0]
    assert beams.disabled and "transformers" in beams.help
    at.sidebar.button(key="delete").click().run()
    assert Conversations(load_settings().data_dir / "conversations.sqlite").list() == []


def test_another_browser_session_does_not_see_the_conversation(indexed):
    first = page("chat")
    first.run()
    first.chat_input[0].set_value("How do I delete a collection?").run()
    other = AppTest.from_file(str(ROOT / "chatbot" / "ui" / "chat_page.py"), default_timeout=TIMEOUT)
    other.session_state["owner_key"] = "fedcba9876543210fedcba9876543210"
    other.run()
    assert not any(b.key and b.key.startswith("conv-") for b in other.sidebar.button)


def test_feedback_is_stored_for_the_fine_tuning_data(indexed):
    at = page("chat")
    at.run()
    at.chat_input[0].set_value("How do I delete a collection?").run()
    store = Conversations(load_settings().data_dir / "conversations.sqlite")
    answer_id = store.messages(at.session_state["conversation_id"])[1].id
    at.text_area(key=f"fix-{answer_id}").set_value("Run chatbot collections delete NAME.").run()
    at.button(key=f"save-{answer_id}").click().run()
    rows = store.feedback()
    assert rows and rows[0]["correction"] == "Run chatbot collections delete NAME."
    assert rows[0]["question"] == "How do I delete a collection?"


def test_bad_generation_setting_is_explained(indexed):
    at = page("chat")
    at.run()
    at.sidebar.number_input[0].set_value(0).run()  # top_k = 0 is allowed ...
    assert not at.sidebar.error
    at.sidebar.slider[0].set_value(1.5).run()  # temperature within range
    assert not at.exception


def test_documents_page_creates_syncs_and_shows_stats(env, tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    monkeypatch.setenv("APP_UI__SYNC_ROOTS", json.dumps([str(tmp_path)]))  # server folders the page may sync
    st.cache_resource.clear()
    (docs / "a.md").write_text("# Opening hours\n\nThe office opens at nine.\n")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    (docs / "budget.xlsx").write_bytes(b"PK\x03\x04 a spreadsheet")
    at = page("documents")
    at.run()
    assert not at.exception, at.exception
    at.text_input[0].set_value("handbook")
    at.button[0].click().run()  # the create form's submit button
    assert at.selectbox[0].value == "handbook"
    folder_input = [w for w in at.text_input if w.label == "Folder path"][0]
    folder_input.set_value(str(docs))
    [b for b in at.button if b.label == "Sync"][0].click().run()
    import time

    from chatbot.ui.sync_jobs import sync_jobs

    deadline = time.time() + 60
    while (job := sync_jobs().get("handbook")) is not None and job.running and time.time() < deadline:
        time.sleep(0.2)
    at.run()
    assert any("Sync finished: 1 added" in s.value for s in at.success)
    (warning,) = at.warning
    assert warning.value.startswith("Not indexed, of a type the assistant cannot read:")
    assert "budget.xlsx" in warning.value
    assert at.metric[0].value == "1"  # files
    assert any("broken.pdf" in str(df.value) for df in at.dataframe)
    # deleting: refused with a message while a sync holds the collection, then done
    from chatbot.settings import load_settings
    from retrieval import snapshot
    from retrieval.collection import Collection

    settings = load_settings()
    with snapshot.sync_lock(Collection.open(settings, "handbook").root, "handbook"):
        [b for b in at.button if b.label == "Yes, delete it"][0].click().run()
        assert not at.exception, at.exception
        assert any("being indexed right now" in e.value for e in at.error)
    [b for b in at.button if b.label == "Yes, delete it"][0].click().run()
    assert not at.exception, at.exception
    assert not Collection.exists(settings, "handbook")


def test_training_page_lists_versions_and_is_idle(env):
    at = page("training")
    at.run()
    assert not at.exception, at.exception
    assert any("No training is running" in c.value for c in at.caption)
    assert any("No trained version yet" in c.value for c in at.caption)


def test_spanish_interface(indexed, monkeypatch):
    monkeypatch.setenv("APP_UI__LANGUAGE", "es")
    st.cache_resource.clear()
    at = page("chat")
    at.run()
    assert at.chat_input[0].placeholder == "Haga una pregunta sobre los documentos"
    assert at.sidebar.button(key="new_conversation").label == "Nueva conversación"


def test_password_login(indexed, monkeypatch):
    monkeypatch.setenv("APP_UI__AUTH", "password")
    monkeypatch.setenv("APP_UI__PASSWORD", "s3cret")
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.chat_input  # nothing but the login form
    at.text_input[0].set_value("wrong")
    at.button[0].click().run()
    assert at.error and not at.chat_input
    at.text_input[0].set_value("s3cret")
    at.button[0].click().run()
    assert at.chat_input


def test_answer_markdown_never_loads_images():
    from chatbot.ui.render import safe_markdown

    text = "See ![logo](http://evil.example/x.png) and ![][ref] here <img src=x onerror=alert(1)>"
    out = safe_markdown(text)
    assert "](http" not in out and "[image: logo]" in out
    assert "![" not in out
