"""A sync never caches a failure that the file did not cause, never records a hash of bytes it did not index,
and never empties a collection because it was pointed at the wrong (or an unmounted, empty) folder."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from retrieval_helpers import chunk_table, wait_until
from typer.testing import CliRunner

import chatbot.cli.retrieval_cmds  # noqa: F401  (registers the commands)
from chatbot.cli.app import app
from retrieval import snapshot
from retrieval.collection import Collection
from retrieval.errors import CollectionError
from retrieval.isolation import ParserProcess

PARAGRAPH = "<p>Some words about otters and rivers <b>bold</b> text.</p>\n"


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _notes(count: int) -> dict[str, str]:
    return {f"n{i:02d}.md": f"# Note {i}\n\nNote number {i} about tapirs.\n" for i in range(count)}


def _sources(col) -> set[str]:
    return {source for source, _ in chunk_table(col)}


# -- 1. failures caused by the environment are retried; content failures are retried when a limit changes --


def test_a_parse_timeout_is_not_cached(settings, tmp_path):
    """The reviewer's repro: a too-short load_timeout used to leave the file failed for good."""
    docs = _write(tmp_path / "docs", {"slow.html": f"<html><body>{PARAGRAPH * 8000}</body></html>"})
    col = Collection.open(settings, "timeout")
    settings.retrieval.load_timeout = 0.01  # 480 kB of HTML takes ~0.4 s to parse here: 40 times more
    first = col.sync(docs)
    assert "retrieval.load_timeout" in first.failed["slow.html"]
    assert "tried again at the next sync" in first.failed["slow.html"]
    settings.retrieval.load_timeout = 60.0
    second = col.sync(docs)
    assert second.added == ["slow.html"] and second.failed == {}
    assert _sources(col) == {"slow.html"}


def test_a_file_that_always_times_out_is_tried_three_times_then_kept_as_failed(settings, tmp_path):
    """Each try costs up to load_timeout and a new version: after PARSER_TRIES in a row, the failure is kept
    like any other, and a sync with nothing changed writes nothing."""
    docs = _write(tmp_path / "docs", {"slow.html": f"<html><body>{PARAGRAPH * 8000}</body></html>"})
    col = Collection.open(settings, "stubborn")
    settings.retrieval.load_timeout = 0.01
    reasons = [col.sync(docs).failed["slow.html"] for _ in range(3)]
    assert "(1 of 3)" in reasons[0] and "(2 of 3)" in reasons[1]
    assert "3 tries; read again when the file or the retrieval limits change" in reasons[2]
    version = snapshot.current(col.root)
    fourth = col.sync(docs)
    assert "3 tries" in fourth.failed["slow.html"] and snapshot.current(col.root) == version  # not read
    settings.retrieval.load_timeout = 60.0  # a changed limit: read again, and it loads
    assert col.sync(docs).added == ["slow.html"]


def _kill_parser_after(monkeypatch, after: str):
    """A progress callback that kills the parser child once ``after`` is indexed: the next file finds it dead."""
    started: list = []
    original = ParserProcess._start

    def spy(self):
        proc = original(self)
        started.append(proc)
        return proc

    monkeypatch.setattr(ParserProcess, "_start", spy)

    def progress(done: int, total: int, rel: str) -> None:
        if rel == after:
            os.kill(started[-1].pid, signal.SIGKILL)

    return progress


def test_a_killed_parser_keeps_the_previous_version_and_is_retried(settings, tmp_path, monkeypatch):
    docs = _write(tmp_path / "docs", {"a.md": "# A\n\nAbout ants.\n", "b.md": "# B\n\nAbout bees.\n",
                                      "c.md": "# C\n\nAbout cats.\n"})  # fmt: skip
    col = Collection.open(settings, "killed")
    assert sorted(col.sync(docs).added) == ["a.md", "b.md", "c.md"]
    _write(
        docs,
        {"a.md": "# A\n\nAbout aardvarks.\n", "b.md": "# B\n\nAbout bison.\n", "d.md": "# D\n\nDingo.\n"},
    )

    killed = col.sync(docs, progress=_kill_parser_after(monkeypatch, "a.md"))
    assert "the parser process died (signal SIGKILL)" in killed.failed["b.md"]
    assert "the version indexed before is kept" in killed.failed["b.md"]
    assert killed.updated == ["a.md"] and killed.added == ["d.md"]  # the next file got a fresh process
    assert col.search("bees", k=1, mode="bm25")[0].source == "b.md"  # the old passages are still searchable

    monkeypatch.undo()
    again = col.sync(docs)
    assert again.updated == ["b.md"] and again.failed == {}
    assert col.search("bison", k=1, mode="bm25")[0].source == "b.md" and not col.search("bees", mode="bm25")


def test_a_new_file_whose_parser_died_is_retried(settings, tmp_path, monkeypatch):
    docs = _write(tmp_path / "docs", {"a.md": "# A\n\nAbout ants.\n", "b.md": "# B\n\nAbout bees.\n"})
    col = Collection.open(settings, "died")
    first = col.sync(docs, progress=_kill_parser_after(monkeypatch, "a.md"))
    assert first.added == ["a.md"] and "the parser process died" in first.failed["b.md"]
    monkeypatch.undo()
    again = col.sync(docs)
    assert again.added == ["b.md"] and again.unchanged == ["a.md"] and again.failed == {}


def test_a_content_failure_is_cached_until_a_loader_limit_changes(settings, tmp_path):
    deep = "<html><body>" + "<div>" * 100 + "Deep words about lynxes." + "</div>" * 100 + "</body></html>"
    docs = _write(tmp_path / "docs", {"deep.html": deep, "ok.md": "# Ok\n\nFine.\n"})
    col = Collection.open(settings, "depth")
    settings.retrieval.max_html_depth = 50
    assert "retrieval.max_html_depth" in col.sync(docs).failed["deep.html"]
    cached = col.sync(docs)
    assert "retrieval.max_html_depth" in cached.failed["deep.html"]  # reported, not read again ...
    assert col.stats()["version"] == "v000001"  # ... so the sync had nothing to write
    settings.retrieval.max_html_depth = 500  # the operator raises the limit
    raised = col.sync(docs)
    assert raised.added == ["deep.html"] and raised.unchanged == ["ok.md"] and raised.failed == {}
    assert raised.chunks_embedded == 1  # only the retried file: nothing else was re-indexed


# -- 3. the stored hash is the hash of the bytes indexed ------------------------------------------------------


def _rewrite_during_sync(docs: Path, after: str, name: str, text: str):
    def progress(done: int, total: int, rel: str) -> None:
        if rel == after:
            (docs / name).write_text(text, encoding="utf-8")

    return progress


def test_a_file_rewritten_during_indexing_is_not_left_stale(settings, tmp_path):
    original = "# B\n\nAbout bees.\n"
    docs = _write(tmp_path / "docs", {"a.md": "# A\n\nAbout ants.\n", "b.md": original})
    col = Collection.open(settings, "rewritten")
    col.sync(docs, progress=_rewrite_during_sync(docs, "a.md", "b.md", "# B\n\nAbout beetles.\n"))
    (docs / "b.md").write_text(original, encoding="utf-8")  # back to what the plan had hashed
    again = col.sync(docs)
    assert again.updated == ["b.md"]
    assert col.search("bees", k=1, mode="bm25")[0].source == "b.md" and not col.search("beetles", mode="bm25")


def test_a_file_caught_half_written_is_not_stuck_as_failed(settings, tmp_path):
    whole = '[{"q": "When does the library open?", "a": "At nine."}]'
    docs = _write(tmp_path / "docs", {"a.md": "# A\n\nAbout ants.\n", "b.json": whole})
    col = Collection.open(settings, "half")
    first = col.sync(docs, progress=_rewrite_during_sync(docs, "a.md", "b.json", whole[:20]))
    assert "b.json" in first.failed
    (docs / "b.json").write_text(whole, encoding="utf-8")  # the writer finishes: the content planned
    again = col.sync(docs)
    assert again.added == ["b.json"] and again.failed == {}


# -- 2. a wrong or empty folder never empties a collection by accident ----------------------------------------


def test_an_emptied_folder_is_refused_unless_allowed(settings, tmp_path):
    docs = _write(tmp_path / "docs", _notes(3))
    col = Collection.open(settings, "mount")
    col.sync(docs)
    for path in docs.iterdir():  # an unmounted mount point: the folder is there, empty
        path.unlink()
    with pytest.raises(CollectionError) as err:
        col.sync(docs)
    message = str(err.value)
    assert "'mount'" in message and str(docs) in message and "delete all 3 files" in message
    assert "allow_mass_delete=True" in message and "--replace" in message
    assert len(_sources(col)) == 3 and col.stats()["version"] == "v000001"  # nothing written
    report = col.sync(docs, allow_mass_delete=True)
    assert len(report.deleted) == 3 and _sources(col) == set()


def test_another_folder_is_refused_unless_allowed(settings, tmp_path):
    docs = _write(tmp_path / "docs", _notes(3))
    other = _write(tmp_path / "other", {"n00.md": _notes(1)["n00.md"], "x.md": "# X\n\nAbout yaks.\n"})
    col = Collection.open(settings, "moved")
    col.sync(docs)
    with pytest.raises(CollectionError) as err:
        col.sync(other)
    message = str(err.value)
    assert str(docs) in message and str(other) in message and "delete 2 of its 3 files" in message
    report = col.sync(other, allow_mass_delete=True)
    assert report.deleted == ["n01.md", "n02.md"] and report.added == ["x.md"]
    assert col.stats()["folder"] == str(other)


def test_a_moved_folder_with_the_same_files_is_synced(settings, tmp_path):
    docs = _write(tmp_path / "docs", _notes(3))
    col = Collection.open(settings, "renamed")
    col.sync(docs)
    moved = docs.rename(tmp_path / "moved")
    assert sorted(col.sync(moved).unchanged) == sorted(_notes(3))  # nothing deleted: nothing to refuse


def test_losing_more_than_half_of_a_large_collection_is_refused(settings, tmp_path):
    docs = _write(tmp_path / "docs", _notes(12))
    col = Collection.open(settings, "half")
    col.sync(docs)
    for i in range(6):
        (docs / f"n{i:02d}.md").unlink()
    assert len(col.sync(docs).deleted) == 6  # half of 12: allowed
    for i in range(6, 10):
        (docs / f"n{i:02d}.md").unlink()  # 4 of the 6 left (a collection of under 10: not all, allowed)
    assert len(col.sync(docs).deleted) == 4
    docs2 = _write(tmp_path / "big", _notes(10))
    big = Collection.open(settings, "big")
    big.sync(docs2)
    for i in range(6):
        (docs2 / f"n{i:02d}.md").unlink()
    with pytest.raises(CollectionError, match="delete 6 of its 10 files"):
        big.sync(docs2)


@pytest.mark.parametrize("count", [1, 2])
def test_a_small_upload_folder_can_lose_a_file(settings, tmp_path, count):
    """The browser's uploads: a user removing one of their one or two files is normal."""
    docs = _write(tmp_path / "uploads", _notes(count))
    col = Collection.open(settings, "uploads")
    col.sync(docs)
    (docs / "n00.md").unlink()
    assert col.sync(docs).deleted == ["n00.md"]


def test_index_cli_refuses_an_empty_folder_without_replace(config_file, settings, tmp_path):
    docs = _write(tmp_path / "docs", _notes(3))
    empty = tmp_path / "emptydir"
    empty.mkdir()
    runner = CliRunner()
    assert runner.invoke(app, ["--config", str(config_file), "index", "killcol", str(docs)]).exit_code == 0
    refused = runner.invoke(app, ["--config", str(config_file), "index", "killcol", str(empty)])
    assert refused.exit_code == 1 and "delete all 3 files" in refused.output and "--replace" in refused.output
    col = Collection.open(settings, "killcol")
    assert len(_sources(col)) == 3
    replaced = runner.invoke(app, ["--config", str(config_file), "index", "killcol", str(empty), "--replace"])
    assert replaced.exit_code == 0, replaced.output
    assert "3 deleted" in replaced.output
    assert _sources(col) == set() and snapshot.current(col.root).name == "v000002"


def test_watch_says_once_that_it_refuses_an_emptied_folder_and_syncs_when_it_comes_back(
    settings, tmp_path, caplog
):
    """An unmounted share looks empty: the watcher refuses to empty the collection, says so once (not at every
    retry), and syncs again once the files are back."""
    import logging
    import threading
    import time

    from retrieval.watch import watch

    docs = _write(tmp_path / "docs", _notes(3))
    col = Collection.open(settings, "share")
    col.sync(docs)
    reports, stop = [], threading.Event()
    kwargs = {"debounce": 0.2, "poll_seconds": 0.3, "retry_seconds": 0.2}
    watcher = threading.Thread(target=watch, args=(col, docs, reports.append, stop), kwargs=kwargs)
    with caplog.at_level(logging.ERROR, logger="retrieval.watch"):
        watcher.start()
        try:
            time.sleep(0.5)
            for path in sorted(docs.iterdir()):
                path.unlink()
            time.sleep(3)  # several changes and polls while it is empty
            refusals = caplog.text.count("waiting for the folder to change")
            _write(docs, {"n00.md": _notes(3)["n00.md"], "n01.md": _notes(3)["n01.md"]})
            wait_until(lambda: any(r.deleted == ["n02.md"] for r in reports))
        finally:
            stop.set()
            watcher.join(10)
    assert refusals == 1
    assert any(r.deleted == ["n02.md"] for r in reports) and len(_sources(col)) == 2


# -- 4. nothing a file contains stops the sync ---------------------------------------------------------------
def test_half_of_an_escaped_emoji_in_json_is_indexed_not_fatal(settings, tmp_path):
    """A lone surrogate ("\\ud83d", half an emoji, common in exported data) reaches no tokenizer or database."""
    docs = _write(tmp_path / "docs", {"ok.txt": "The library opens at nine."})
    (docs / "data.json").write_text(
        '{"titulo": "emoji roto \\ud83d fin", "otro": "perfecto"}', encoding="utf-8"
    )
    (docs / "rows.jsonl").write_text('{"nota": "mitad \\udc00 de un par"}\n', encoding="utf-8")
    report = Collection.open(settings, "c").sync(docs)
    assert sorted(report.added) == ["data.json", "ok.txt", "rows.jsonl"] and report.failed == {}
    texts = dict(chunk_table(Collection.open(settings, "c")))
    assert "emoji roto \ufffd fin" in texts["data.json"] and "mitad \ufffd de un par" in texts["rows.jsonl"]


def test_a_file_that_cannot_be_cut_into_passages_fails_by_name(settings, tmp_path, monkeypatch):
    from retrieval import sync

    real = sync.chunk_document

    def refuse_otters(doc, *args):
        if "otters" in doc.text:
            raise TypeError("TextInputSequence must be str")
        return real(doc, *args)

    monkeypatch.setattr(sync, "chunk_document", refuse_otters)
    docs = _write(tmp_path / "docs", {"a.html": PARAGRAPH, **_notes(2)})
    report = Collection.open(settings, "c").sync(docs)
    assert report.failed == {
        "a.html": "cannot be cut into passages (TypeError: TextInputSequence must be str)"
    }
    assert sorted(report.added) == ["n00.md", "n01.md"]
    assert _sources(Collection.open(settings, "c")) == {"n00.md", "n01.md"}


def test_a_reorganised_folder_is_synced_not_refused(settings, tmp_path):
    """Moving every file into a subfolder (or renaming them) loses nothing: no refusal, no embedding again."""
    docs = _write(tmp_path / "docs", _notes(12))
    col = Collection.open(settings, "c")
    col.sync(docs)
    (docs / "2024").mkdir()
    for path in sorted(docs.glob("*.md")):
        path.rename(docs / "2024" / path.name)
    report = col.sync(docs)
    assert len(report.deleted) == 12 and sorted(report.added) == [f"2024/n{i:02d}.md" for i in range(12)]
    assert report.chunks_embedded == 0 and _sources(col) == {f"2024/n{i:02d}.md" for i in range(12)}
    # what is really gone still counts: 7 of 12 deleted, 5 of them renamed
    for i in range(5):
        (docs / "2024" / f"n{i:02d}.md").rename(docs / f"renamed{i}.md")
    for i in range(5, 12):
        (docs / "2024" / f"n{i:02d}.md").unlink()
    with pytest.raises(CollectionError, match="it would delete 7 of its 12 files"):
        col.sync(docs)


@pytest.mark.parametrize("left", ["an older version", "no version"])
def test_a_current_pointer_naming_a_missing_version_is_repaired_by_the_next_sync(settings, tmp_path, left):
    """A version folder removed by hand, or a partial restore: searches say what to run, in one line; the
    next sync points CURRENT at the newest version left (or rebuilds) and the collection is whole again."""
    from retrieval.errors import BrokenPointer

    docs = _write(tmp_path / "docs", _notes(3))
    col = Collection.open(settings, "c")
    col.sync(docs)
    _write(docs, {"n03.md": "# Note 3\n\nA fourth note about okapis.\n"})
    col.sync(docs)
    newest = snapshot.current(col.root)
    if left == "no version":
        for _, version in snapshot.versions(col.root):
            shutil.rmtree(version)
    else:
        shutil.rmtree(newest)
    with pytest.raises(BrokenPointer, match="chatbot index c FOLDER"):
        Collection.open(settings, "c").search("okapis", k=1)
    report = Collection.open(settings, "c").sync(docs)
    assert "CURRENT/" in report.failed and "which is not there" in report.failed["CURRENT/"]
    assert _sources(Collection.open(settings, "c")) == {"n00.md", "n01.md", "n02.md", "n03.md"}
    assert Collection.open(settings, "c").search("okapis", k=1)[0].source == "n03.md"
