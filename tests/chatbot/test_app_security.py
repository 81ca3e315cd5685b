"""The browser app as an attacker would try it (streamlit.testing AppTest on the real pages): uploads and
folder syncs confined, no silent overwrite, a network address without login refused, wrong passwords
throttled, and `make run` bound to this machine."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import streamlit as st
from test_app import OWNER_KEY, ROOT, TIMEOUT, loopback, page

from chatbot.memory import Conversations
from chatbot.settings import load_settings
from chatbot.ui.access import LoginThrottle, client_group
from chatbot.ui.sync_jobs import sync_jobs
from retrieval.collection import Collection


@pytest.fixture
def env(app_env, monkeypatch):
    for key, value in app_env.items():
        monkeypatch.setenv(key, value)
    st.cache_resource.clear()
    with loopback():
        yield monkeypatch


def _wait_sync(name: str) -> None:
    deadline = time.time() + 60
    while (job := sync_jobs().get(name)) is not None and job.running and time.time() < deadline:
        time.sleep(0.1)


def _button(at, label: str):
    found = [b for b in at.button if b.label == label]
    assert found, (at.exception, [b.label for b in at.button], [e.value for e in at.error])
    return found[0]


def test_uploads_never_land_in_a_server_folder(env, tmp_path):
    """The reproduced attack: a collection synced from a server folder took uploads into that folder."""
    server_folder = tmp_path / "srv"
    server_folder.mkdir()
    (server_folder / "policy.md").write_text("# Policy\n\nThe office opens at nine.\n")
    Collection.open(load_settings(), "handbook").sync(server_folder)  # the operator's `chatbot index`
    at = page("documents")
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox[0].value == "handbook"
    assert not at.file_uploader  # this collection takes no uploads ...
    assert any("synced from the server folder" in c.value for c in at.caption)
    assert not [w for w in at.text_input if w.label == "Folder path"]  # ... and no folder sync by default
    assert sorted(p.name for p in server_folder.iterdir()) == ["policy.md"]


def test_uploads_go_to_the_data_directory_and_replace_only_with_consent(env):
    at = page("documents")
    at.run()
    at.text_input[0].set_value("team")
    at.button[0].click().run()  # create the collection
    at.file_uploader[0].set_value(("hours.md", b"# Hours\n\nOpen at nine.\n", "text/markdown")).run()
    _button(at, "Add and index").click().run()
    _wait_sync("team")
    stored = load_settings().data_dir / "uploads" / "team" / "hours.md"
    assert stored.read_bytes() == b"# Hours\n\nOpen at nine.\n"

    at.run()
    at.file_uploader[0].set_value(("hours.md", b"# Hours\n\nOpen at ten.\n", "text/markdown")).run()
    _button(at, "Add and index").click().run()
    assert any("Already uploaded: hours.md" in w.value for w in at.warning)
    assert stored.read_bytes() == b"# Hours\n\nOpen at nine.\n"  # not silently overwritten
    at.checkbox(key="replace-team").check()
    _button(at, "Add and index").click().run()
    _wait_sync("team")
    assert stored.read_bytes() == b"# Hours\n\nOpen at ten.\n"

    at.run()
    at.file_uploader[0].set_value(("evil\x00.md", b"x", "text/markdown")).run()
    _button(at, "Add and index").click().run()
    assert not at.exception, at.exception  # a clear error, not a crash
    assert any("control character" in e.value for e in at.error)


def test_a_folder_outside_the_sync_roots_is_refused(env, tmp_path):
    allowed = tmp_path / "shared"
    allowed.mkdir()
    (allowed / "a.md").write_text("# A\n\nAbout otters.\n")
    elsewhere = tmp_path / "private"
    elsewhere.mkdir()
    (elsewhere / "b.md").write_text("# B\n\nAbout secrets.\n")
    env.setenv("APP_UI__SYNC_ROOTS", json.dumps([str(allowed)]))
    st.cache_resource.clear()
    at = page("documents")
    at.run()
    at.text_input[0].set_value("shared")
    at.button[0].click().run()
    for folder in (elsewhere, allowed / ".." / "private", Path("/etc"), Path("/no/such/folder")):
        [w for w in at.text_input if w.label == "Folder path"][0].set_value(str(folder))
        _button(at, "Sync").click().run()
        assert any("ui.sync_roots" in e.value for e in at.error), folder
        assert sync_jobs().get("shared") is None
    [w for w in at.text_input if w.label == "Folder path"][0].set_value(str(allowed))
    _button(at, "Sync").click().run()
    _wait_sync("shared")
    assert sync_jobs().get("shared").report.added == ["a.md"]


def test_the_training_page_refuses_server_paths_and_shows_its_command_as_code(env, tmp_path):
    secret = tmp_path / "private"
    secret.mkdir()
    (secret / "note.txt").write_text("Internal note: the root password is hunter2.")
    at = page("training")
    at.run()
    docs = [w for w in at.text_input if w.label.endswith("(--docs)")][0]
    for path in (str(secret), "/", str(ROOT / "data" / ".." / "..")):
        docs.set_value(path)
        at.button(key="train-go").click().run()
        assert any("training page reads only" in e.value for e in at.error), path
        assert not (load_settings().data_dir / "ui" / "training.json").exists()  # no job started
    # a job's command holding a backtick cannot close its code span: an image after it stays text
    state = load_settings().data_dir / "ui" / "training.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    planted = "data/sample` ![t](https://evil.example/px.png) `"
    job = {
        "pid": os.getpid(),
        "command": ["python", "-m", "train", "--docs", planted],
        "log": "",
        "started": 0,
    }
    state.write_text(json.dumps(job))  # a running job (this process is alive) started with that path
    at = page("training")
    at.run()
    assert [i.value for i in at.info] == [
        f"Training is running: `` train --docs {planted} `` (pid {os.getpid()})"
    ]


def test_switching_a_collection_to_another_folder_needs_the_box_ticked(env, tmp_path):
    """The documents page refuses a sync that would switch folders (and so delete every file indexed), and
    says so; ticking the box allows it."""
    root = tmp_path / "shared"
    for sub, text in (("old", "About otters."), ("new", "About bison.")):
        (root / sub).mkdir(parents=True)
        (root / sub / f"{sub}.md").write_text(f"# {sub}\n\n{text}\n")
    (root / "old" / "more.md").write_text("# More\n\nAbout more otters.\n")
    env.setenv("APP_UI__SYNC_ROOTS", json.dumps([str(root)]))
    st.cache_resource.clear()
    Collection.open(load_settings(), "team").sync(root / "old")
    at = page("documents")
    at.run()
    [w for w in at.text_input if w.label == "Folder path"][0].set_value(str(root / "new"))
    _button(at, "Sync").click().run()
    _wait_sync("team")
    assert "refusing to sync collection 'team'" in sync_jobs().get("team").error
    [w for w in at.text_input if w.label == "Folder path"][0].set_value(str(root / "new"))
    at.checkbox(key="mass-delete-team").check()
    _button(at, "Sync").click().run()
    _wait_sync("team")
    assert sorted(sync_jobs().get("team").report.deleted) == ["more.md", "old.md"]


def test_a_link_never_hands_its_conversations_key_to_whoever_opens_it(env):
    """A link with a conversations key in it (``?s=KEY``, as earlier versions kept it) does not make the
    conversations of whoever opens it land under that key: the key this browser holds stays its own. The
    link's conversations are only offered, and moved into this browser on request."""
    store = Conversations(load_settings().data_dir / "conversations.sqlite")
    sender = "attackerchosen0000000000"
    planted = store.create("Sender's conversation", owner=f"browser:{sender}")
    from streamlit.testing.v1 import AppTest

    fresh = AppTest.from_file(str(ROOT / "chatbot" / "ui" / "chat_page.py"), default_timeout=TIMEOUT)
    fresh.query_params["s"] = sender  # a browser with no key of its own yet opens the link
    fresh.run()
    assert not fresh.exception, fresh.exception
    assert len(fresh.session_state["owner_key"]) == 32 and fresh.session_state["owner_key"] != sender
    at = page("chat")  # a browser with its key
    at.query_params["s"] = sender
    at.run()
    assert not any(b.key == f"conv-{planted}" for b in at.sidebar.button)  # not adopted
    assert "1 conversation(s)" in at.sidebar.info[0].value
    at.sidebar.button(key="legacy_move").click().run()
    assert [c.id for c in store.list(owner=f"browser:{OWNER_KEY}")] == [planted]
    assert store.list(owner=f"browser:{sender}") == []  # the link no longer shows them
    assert "s" not in at.query_params and any(b.key == f"conv-{planted}" for b in at.sidebar.button)


def _main() -> object:
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT)


def test_a_network_address_without_login_is_refused_unless_allowed(env):
    Collection.open(load_settings(), "sample").sync(ROOT / "data" / "sample")
    with loopback("0.0.0.0"):
        at = _main()
        at.run()
        assert not at.exception, at.exception
        assert not at.chat_input and "with no login" in at.error[0].value
        env.setenv("APP_UI__ALLOW_OPEN_NETWORK", "true")
        st.cache_resource.clear()
        at = _main()
        at.run()
        assert at.chat_input and "anyone who can reach" in at.sidebar.warning[0].value
        env.delenv("APP_UI__ALLOW_OPEN_NETWORK")
        env.setenv("APP_UI__AUTH", "password")
        env.setenv("APP_UI__PASSWORD", "s3cret")
        st.cache_resource.clear()
        at = _main()
        at.run()
        assert not at.error and not at.chat_input and at.text_input[0].label == "Password"


def test_wrong_passwords_are_throttled(env):
    env.setenv("APP_UI__AUTH", "password")
    env.setenv("APP_UI__PASSWORD", "s3cret")
    st.cache_resource.clear()
    for attempt in range(5):
        at = _main()  # a new session each time: the count is per address, not per session
        at.run()
        at.text_input[0].set_value(f"guess-{attempt}")
        at.button[0].click().run()
        assert at.error[0].value == "Wrong password."
    at = _main()
    at.run()
    at.text_input[0].set_value("s3cret")  # even the right password waits out the lockout
    at.button[0].click().run()
    assert "Too many wrong passwords" in at.error[0].value and not at.chat_input


def test_login_throttle_counts_failures_per_address_and_forgets_them():
    now = [0.0]
    throttle = LoginThrottle(max_failures=3, lockout=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.wait("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 60 and throttle.wait("10.0.0.2") == 0
    now[0] = 59.0
    assert throttle.wait("10.0.0.1") == pytest.approx(1.0)
    now[0] = 61.0
    assert throttle.wait("10.0.0.1") == 0
    throttle.failed("10.0.0.1")
    throttle.succeeded("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 0
    # guessers that stopped are forgotten: the record does not grow with every address ever seen
    for i in range(100):
        throttle.failed(f"10.1.0.{i}")
    now[0] = 200.0
    throttle.failed("10.0.0.9")
    assert throttle.counted() == 1


def test_an_ipv6_client_cannot_dodge_the_throttle_by_changing_address():
    now = [0.0]
    throttle = LoginThrottle(max_failures=3, lockout=60, clock=lambda: now[0])
    for i in range(3):  # three addresses of one /64: one machine
        throttle.failed(client_group(f"2001:db8:1:2::{i + 1}"))
    assert throttle.wait(client_group("2001:db8:1:2:ffff::9")) == 60
    assert throttle.wait(client_group("2001:db8:1:3::1")) == 0  # another network
    assert client_group("::ffff:10.0.0.1") == client_group("10.0.0.1") == "10.0.0.1"
    assert client_group(None) == "unknown address"


def test_make_run_serves_this_machine_only():
    plan = subprocess.run(
        ["make", "-n", "run", "VENV=/nonexistent"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "--server.address 127.0.0.1" in plan
    assert 'address = "127.0.0.1"' in (ROOT / ".streamlit" / "config.toml").read_text()
