"""The CLI: ``index`` (text and --json), ``search --json``, ``collections list|stats|delete``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import chatbot.cli.retrieval_cmds  # noqa: F401  (registers the commands)
from chatbot.cli.app import app
from retrieval import snapshot
from retrieval.collection import Collection


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "hours.md").write_text("# Hours\n\nThe library opens at nine in the morning.", encoding="utf-8")
    (folder / "bad.pdf").write_bytes(b"%PDF-1.4 broken")
    (folder / "logo.png").write_bytes(b"\x89PNG")
    return folder


def run(config_file, *args: str):
    return CliRunner().invoke(app, ["--config", str(config_file), *args])


def test_index_prints_a_summary_and_json(config_file, docs):
    text = run(config_file, "index", "handbook", str(docs))
    assert text.exit_code == 0, text.output
    assert "1 added, 0 updated, 0 deleted, 0 unchanged, 1 failed, 1 unsupported" in text.output
    assert "bad.pdf: corrupt PDF" in text.output and "logo.png" in text.output

    (docs / "hours.md").write_text("# Hours\n\nThe library opens at ten.", encoding="utf-8")
    result = run(config_file, "index", "handbook", str(docs), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["updated"] == ["hours.md"] and summary["added"] == [] and summary["version"] == "v000002"
    assert "corrupt PDF" in summary["failed"]["bad.pdf"] and summary["unsupported"] == ["logo.png"]


def test_search_json_returns_ranked_hits_with_metadata(config_file, docs):
    assert run(config_file, "index", "handbook", str(docs)).exit_code == 0
    result = run(config_file, "search", "handbook", "library opens", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 1 and hits[0]["source"] == "hours.md" and hits[0]["title"] == "Hours"
    assert hits[0]["score"] > 0 and {"bm25", "dense", "start", "end"} <= set(hits[0]["metadata"])
    plain = run(config_file, "search", "handbook", "library", "--mode", "bm25")
    assert plain.exit_code == 0 and "[1]" in plain.output and "hours.md" in plain.output
    missing = run(config_file, "search", "nope", "library")
    assert missing.exit_code == 1 and "collection 'nope' does not exist" in missing.output


def test_collections_list_stats_delete(config_file, docs):
    assert run(config_file, "index", "handbook", str(docs)).exit_code == 0
    assert json.loads(run(config_file, "collections", "list", "--json").stdout) == ["handbook"]
    stats = json.loads(run(config_file, "collections", "stats", "handbook", "--json").stdout)
    assert stats["files"] == 1 and stats["chunks"] == 1 and stats["last_sync"]
    assert "corrupt PDF" in stats["failures"]["bad.pdf"]
    text = run(config_file, "collections", "stats", "handbook")
    assert "1 files, 1 chunks" in text.output and "failed bad.pdf" in text.output
    refused = run(config_file, "collections", "delete", "handbook", "--json")
    assert refused.exit_code == 2 and "--yes" in refused.output
    deleted = run(config_file, "collections", "delete", "handbook", "--yes", "--json")
    assert json.loads(deleted.stdout) == {"deleted": "handbook", "uploads_deleted": 0}
    assert json.loads(run(config_file, "collections", "list", "--json").stdout) == []
    assert run(config_file, "index", "bad name", str(docs)).exit_code == 2


def test_index_reports_the_lock_holder(config_file, docs, settings):
    col = Collection.open(settings, "handbook")
    with snapshot.sync_lock(col.root, col.name):
        result = run(config_file, "index", "handbook", str(docs))
    assert result.exit_code == 1
    assert "is being synced by another process (pid" in result.output
