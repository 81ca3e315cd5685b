"""A damaged current version (a truncated vector file, a scribbled-over record database): search names it
and says how to rebuild; the next sync sets it aside and rebuilds the collection from the folder."""

from __future__ import annotations

import pytest

from retrieval import snapshot
from retrieval.collection import Collection, DamagedCollection


def _docs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "otters.md").write_text("# Otters\n\nOtters hold hands while they sleep.\n")
    (docs / "bees.md").write_text("# Bees\n\nBees dance to tell where the flowers are.\n")
    return docs


def _damaged(settings, tmp_path, damaged: str):
    """A collection of two files whose current version then has ``damaged`` truncated or scribbled over."""
    docs = _docs(tmp_path)
    col = Collection.open(settings, "animals")
    col.sync(docs)
    version = snapshot.current(col.root)
    path = version / damaged
    path.write_bytes(
        path.read_bytes()[:100] if damaged == "vectors.faiss" else b"SQLite format 3\0" + b"x" * 500
    )
    return docs, col, version


@pytest.mark.parametrize("damaged", ["vectors.faiss", "records.sqlite"])
def test_a_damaged_version_is_named_then_set_aside_and_rebuilt(settings, tmp_path, damaged):
    docs, col, version = _damaged(settings, tmp_path, damaged)

    fresh = Collection.open(settings, "animals")  # as a new process would open it
    with pytest.raises(DamagedCollection, match=rf"animals.*{version.name}.*damaged.*chatbot index animals"):
        fresh.search("otters", k=1)

    report = Collection.open(settings, "animals").sync(docs)
    assert sorted(report.added) == ["bees.md", "otters.md"]  # rebuilt from the folder
    assert "damaged" in report.failed[f"{version.name}/"] and damaged in report.failed[f"{version.name}/"]
    assert (col.root / f"damaged-{version.name}" / damaged).exists()  # kept aside, for inspection
    assert Collection.open(settings, "animals").search("otters", k=1)[0].source == "otters.md"


@pytest.mark.parametrize("damaged", ["vectors.faiss", "records.sqlite"])
def test_a_sync_that_finds_its_version_damaged_rebuilds_without_a_search_first(settings, tmp_path, damaged):
    docs, col, version = _damaged(settings, tmp_path, damaged)
    (docs / "bees.md").write_text(
        "# Bees\n\nBees dance, and they hum.\n"
    )  # a change: the sync reads the old one

    report = Collection.open(settings, "animals").sync(docs)

    assert sorted(report.added) == ["bees.md", "otters.md"] and "damaged" in report.failed[f"{version.name}/"]
    assert Collection.open(settings, "animals").search("hum", k=1)[0].source == "bees.md"
