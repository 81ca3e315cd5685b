"""Reliability of a sync against what real folders hold: a generated corpus of nasty files (nested HTML,
oversized DOCX, links out of the folder, unreadable files and folders, a file vanishing mid-sync...) is reported
file by file, the sync goes on, and nothing indexed before is lost because its source could not be read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nasty_corpus import KINDS, LIMITS, ODD_NAMES, make_corpus, sync_unprivileged, unprivileged
from retrieval_helpers import chunk_table

from chatbot.settings import load_settings
from retrieval.collection import Collection

GOOD = {
    "good.md": "# Otters\n\nOtters hold hands while they sleep.\n",
    "team/one.md": "# Herons\n\nHerons stand still for hours.\n",
    "team/two.md": "# Newts\n\nNewts regrow their legs.\n",
    "later-unreadable.md": "# Voles\n\nVoles dig long tunnels.\n",
}


def _write(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


def _sources(col) -> set[str]:
    return {source for source, _ in chunk_table(col)}


def test_nasty_corpus_is_reported_file_by_file_and_nothing_indexed_is_lost(app_env, monkeypatch, tmp_path):
    env = {**app_env, **LIMITS}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    docs = tmp_path / "docs"
    _write(docs, GOOD)
    col = Collection.open(load_settings(), "nasty")
    assert sorted(col.sync(docs).added) == sorted(GOOD)

    expected = make_corpus(docs)
    _write(
        docs, {"a-fresh.md": "# Moles\n\nMoles are nearly blind.\n", "zz-vanishing.md": "# Gone\n\nSoon.\n"}
    )
    (docs / "new-unreadable.md").write_text("# Secret\n\nNot for the indexer.\n")
    for path, mode in (
        (docs / "team", 0o000),
        (docs / "later-unreadable.md", 0o000),
        (docs / "new-unreadable.md", 0o000),
    ):
        path.chmod(mode)
    try:
        report = sync_unprivileged(env, "nasty", docs, after="a-fresh.md", vanish="zz-vanishing.md")
    finally:
        for path in (docs / "team", docs / "later-unreadable.md", docs / "new-unreadable.md"):
            path.chmod(0o755)
    expected |= {
        "team/": "cannot read folder: Permission denied; the 2 files indexed from it before are kept",
        "later-unreadable.md": "cannot read: Permission denied; the version indexed before is kept",
        "new-unreadable.md": "cannot read: Permission denied",
        "zz-vanishing.md": "cannot read: No such file or directory",
    }
    assert len(KINDS) + len(ODD_NAMES) >= 15
    for rel, reason in expected.items():
        assert reason in report["failed"].get(rel, ""), (rel, report["failed"].get(rel))
    assert set(report["failed"]) == set(expected)
    assert sorted(report["added"]) == sorted(["a-fresh.md", *ODD_NAMES.values()]) and report["deleted"] == []
    # Nothing indexed before is lost: the unreadable folder's and file's passages are all still there.
    assert _sources(col) == {*GOOD, "a-fresh.md", *ODD_NAMES.values()}
    assert col.search("herons stand still", k=1, mode="bm25")[0].source == "team/one.md"
    assert not any("root:" in text for _, text in chunk_table(col))  # /etc/passwd never indexed

    # Readable again: the kept files are simply unchanged; the vanished one never got in.
    again = col.sync(docs)
    assert sorted(again.unchanged) == sorted([*GOOD, "a-fresh.md", *ODD_NAMES.values()])
    assert again.added == ["new-unreadable.md"]
    assert again.deleted == ["zz-vanishing.md"]  # its failure record: it never was indexed
    assert set(again.failed) == set(make_corpus_reasons()) | {"loop-b.md"}


def make_corpus_reasons() -> dict[str, str]:
    return {name: reason for name, (_, reason) in KINDS.items()}


def test_a_file_too_slow_to_parse_is_stopped_and_the_sync_goes_on(settings, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a-small.html").write_text("<h1>Small</h1><p>Warms up the parser about lynxes.</p>")
    paragraph = "<p>Some words about otters and rivers <b>bold</b> text.</p>\n"
    (docs / "slow.html").write_text(
        f"<html><body>{paragraph * 48_000}</body></html>"
    )  # 3 MB: seconds to parse
    (docs / "z-after.md").write_text("# After\n\nIndexed after the slow file, about pumas.\n")
    settings.retrieval.load_timeout = 1.0
    started = time.perf_counter()
    report = Collection.open(settings, "slow").sync(docs)
    elapsed = time.perf_counter() - started
    print(f"\n[loader deadline] slow.html stopped; sync of 3 files took {elapsed:.1f} s")
    assert "retrieval.load_timeout" in report.failed["slow.html"]
    assert sorted(report.added) == ["a-small.html", "z-after.md"]


def test_a_file_needing_too_much_memory_fails_alone(settings, tmp_path):
    import json

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "huge.json").write_text(json.dumps([{"k": i, "v": "x"} for i in range(1_500_000)]))  # 38 MB
    (docs / "ok.md").write_text("# Fine\n\nAbout ocelots.\n")
    settings.retrieval.loader_memory_mb = 256
    report = Collection.open(settings, "memory").sync(docs)
    assert "retrieval.loader_memory_mb" in report.failed["huge.json"]
    assert report.added == ["ok.md"]


def test_an_unreadable_file_never_stops_watch(app_env, tmp_path):
    """`chatbot index --watch` goes on syncing after a file it cannot read appears (it used to end)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "first.md").write_text("# First\n\nAbout badgers.\n")
    command = unprivileged([sys.executable, "-m", "chatbot", "index", "w", str(docs), "--watch"])
    proc = subprocess.Popen(
        command, env={**os.environ, **app_env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        col = Collection.open(load_settings(data_dir=app_env["APP_DATA_DIR"]), "w")
        _wait_for(lambda: "first.md" in _sources(col))
        (docs / "locked.md").write_text("# Locked\n\nNobody reads this.\n")
        (docs / "locked.md").chmod(0o000)
        time.sleep(2)  # a sync runs with the unreadable file
        (docs / "second.md").write_text("# Second\n\nAbout weasels.\n")
        _wait_for(lambda: "second.md" in _sources(col))
        assert proc.poll() is None  # still watching
        assert "locked.md" in col.stats()["failures"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        (docs / "locked.md").chmod(0o644)


def _wait_for(condition, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.3)
