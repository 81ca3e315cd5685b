"""Screenshots of the three pages for the README, from a running app.

    make run &                                   # or any running instance with the sample collection
    python docs/make_screenshots.py --url http://localhost:8501 --question "Which file formats can I index?"

Needs playwright (dev extra) and Debian's chromium.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

OUT = Path(__file__).resolve().parent / "screenshots"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://localhost:8501")
    parser.add_argument("--question", default="Which file formats can I index?")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(args.url)
        box = page.get_by_test_id("stChatInputTextArea")
        expect(box).to_be_visible(timeout=120_000)
        box.fill(args.question)
        box.press("Enter")
        expect(page.get_by_text("Was this answer good?")).to_be_visible(timeout=300_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUT / "chat.png"))
        page.goto(f"{args.url}/documents")  # the same conversations: this browser's cookie keys them
        expect(page.get_by_text("Passages")).to_be_visible(timeout=60_000)
        page.screenshot(path=str(OUT / "documents.png"))
        page.goto(f"{args.url}/training")
        expect(page.get_by_text("Model versions").first).to_be_visible(timeout=60_000)
        page.wait_for_timeout(2500)
        page.screenshot(path=str(OUT / "training.png"))
        browser.close()


if __name__ == "__main__":
    main()
