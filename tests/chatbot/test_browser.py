"""The real app in a real browser: `streamlit run` on a free port, driven by Playwright in Debian's headless
Chromium. Asks a question about the sample collection, waits for the streamed answer and its sources, and
saves screenshots of every page (under test-artifacts/, or $ARTIFACTS_DIR)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatbot.settings import load_settings
from retrieval.collection import Collection

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR", ROOT / "test-artifacts"))
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require_browser():
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("the browser test needs `pip install playwright` (make install does it)")
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: .ci/run installs it with apt-get")
        pytest.skip("no chromium on this machine: `apt-get install chromium` to run the browser test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(app_env, monkeypatch, tmp_path):
    _require_browser()
    app_env = {
        **app_env,
        "APP_CHAT__UNSURE_HESITATION": "-50",
    }  # every answer is marked unsure: the note shows
    for key, value in app_env.items():
        monkeypatch.setenv(key, value)
    Collection.open(load_settings(), "sample").sync(ROOT / "data" / "sample")
    with running_app(app_env, tmp_path) as url:
        yield url


@contextmanager
def running_app(app_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """`streamlit run streamlit_app.py` on a free loopback port with ``app_env``; yields its URL."""
    port = _free_port()
    log = open(tmp_path / "streamlit.log", "w")  # noqa: SIM115 - open while the server runs
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "streamlit_app.py",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env={**os.environ, **app_env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError((tmp_path / "streamlit.log").read_text()) from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_question_in_the_browser_gets_a_streamed_answer_with_sources(server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server)
        box = page.get_by_test_id("stChatInputTextArea")
        expect(box).to_be_visible(timeout=60_000)
        box.fill("How do I delete a collection?")
        box.press("Enter")
        messages = page.get_by_test_id("stChatMessage")
        expect(messages).to_have_count(2, timeout=120_000)
        expect(messages.nth(1).get_by_text("Not sure: the model nearly answered")).to_be_visible(
            timeout=120_000
        )
        expander = page.get_by_test_id("stExpander").filter(has_text="Sources (")
        expect(expander.first).to_be_visible(timeout=120_000)
        expander.first.click()
        expect(page.get_by_text("faq.md").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)

        # the conversations key is this browser's cookie, set on the first visit, never the page's address
        key = next(c["value"] for c in page.context.cookies() if c["name"] == "assistant_session")
        assert len(key) == 32 and "s=" not in page.url
        page.goto(f"{server}/documents")
        expect(page.get_by_text("Passages")).to_be_visible(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "documents.png"), full_page=True)
        page.goto(f"{server}/training")
        expect(page.get_by_text("Model versions").first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "training.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "chat.png").stat().st_size > 10_000
