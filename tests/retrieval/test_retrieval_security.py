"""No pickle anywhere: files planted in a collection never execute code when it is opened or searched."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from retrieval import snapshot, vectors
from retrieval.collection import Collection, DamagedCollection


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_planted_pickles_never_execute(settings, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Some text about ocelots.", encoding="utf-8")
    col = Collection.open(settings, "safe")
    col.sync(docs)
    marker = tmp_path / "marker"
    payload = pickle.dumps(_Payload(marker))
    current = snapshot.current(col.root)
    for folder in (col.root, current):
        for name in ("index.pkl", "bm25.pkl", "chunks.pickle", "docstore.pkl", "index.faiss.pkl", "meta.npy"):
            (folder / name).write_bytes(payload)

    reopened = Collection.open(settings, "safe")
    assert reopened.search("ocelots", k=1)[0].source == "a.txt"
    assert reopened.stats()["files"] == 1
    (docs / "b.txt").write_text("More text.", encoding="utf-8")
    reopened.sync(docs)
    assert not marker.exists()

    # Even the index file itself replaced by a pickle only fails to load (a damaged version); it never runs,
    # and the next sync sets that version aside and rebuilds.
    (snapshot.current(col.root) / vectors.INDEX_NAME).write_bytes(payload)
    with pytest.raises(DamagedCollection, match="vectors.faiss"):
        Collection.open(settings, "safe").search("ocelots", k=1)
    reopened.sync(docs)
    assert Collection.open(settings, "safe").search("ocelots", k=1)[0].source == "a.txt"
    assert not marker.exists()


def test_retrieval_code_never_unpickles():
    source = Path(__file__).resolve().parents[2] / "retrieval"
    banned = (
        "import pickle",
        "from pickle",
        "joblib",
        "torch.load",
        "allow_pickle=True",
        "cloudpickle",
        "dill",
    )
    for path in source.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not [b for b in banned if b in text], path
