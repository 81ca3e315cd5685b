"""A sync killed with SIGKILL leaves the previous snapshot usable; the next sync completes it exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from retrieval_helpers import chunk_table, faiss_count

from retrieval import snapshot, store, unfinished
from retrieval.collection import Collection

REPO = Path(__file__).resolve().parents[2]

# Runs a sync in a child process and freezes it at one moment, printing FROZEN, so the test can kill it there.
CHILD = """
import sys, time
from pathlib import Path
from chatbot.settings import load_settings
from retrieval import snapshot, sync
from retrieval.collection import Collection

phase, folder = sys.argv[1], Path(sys.argv[2])

def freeze():
    print("FROZEN", flush=True)
    time.sleep(120)

def progress(done, total, path):
    if phase == "loading" and done == 4:
        freeze()
    if phase == "embedding" and done == 20:  # 16 vectors embedded (in batches of 8), none published
        freeze()

original_stage, original_write = snapshot.stage, snapshot.write_atomic
if phase == "staged":  # the new snapshot is written and fsynced under its final name, CURRENT not switched
    def write_atomic(path, text):
        if path.name == snapshot.POINTER:
            freeze()
        return original_write(path, text)
    snapshot.write_atomic = write_atomic
if phase == "switched":  # CURRENT points at the new snapshot; old versions and last_sync not yet handled
    def write_atomic(path, text):
        original_write(path, text)
        if path.name == snapshot.POINTER:
            freeze()
    snapshot.write_atomic = write_atomic

Collection.open(load_settings(), "crash").sync(folder, progress=progress)
print("FINISHED", flush=True)
"""


def _docs(folder: Path, version: int) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(8):
        text = f"Document {i} about topic{i} in version {version}. " + (
            "Filler sentence. " * 5 if i % 2 else ""
        )
        (folder / f"doc{i}.txt").write_text(text, encoding="utf-8")
    if version == 2:
        (folder / "doc0.txt").unlink()
        (folder / "extra.md").write_text("# Extra\n\nA new file about penguins.", encoding="utf-8")


def _kill_child_at(phase: str, folder: Path, settings, **more_env: str) -> None:
    env = dict(os.environ)
    env.update({
        "APP_DATA_DIR": str(settings.data_dir),
        "APP_MODELS__EMBEDDING": settings.models.embedding,
        "APP_MODELS__DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        **more_env,
    })  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, phase, str(folder)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "FROZEN", f"child did not reach phase {phase!r}: {line!r}"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()


@pytest.mark.parametrize("phase", ["loading", "staged", "switched"])
def test_sigkill_mid_sync_keeps_the_previous_version_and_the_next_sync_completes(settings, tmp_path, phase):
    docs = tmp_path / "docs"
    _docs(docs, version=1)
    col = Collection.open(settings, "crash")
    col.sync(docs)
    before = chunk_table(col)
    _docs(docs, version=2)

    _kill_child_at(phase, docs, settings)

    survivor = Collection.open(settings, "crash")
    expected_version = "v000002" if phase == "switched" else "v000001"
    assert survivor.stats()["version"] == expected_version
    if phase != "switched":
        assert chunk_table(survivor) == before  # the previous snapshot, intact and searchable
        assert survivor.search("topic3", k=1, mode="bm25")[0].text.startswith(
            "Document 3 about topic3 in version 1"
        )
    assert survivor.search("topic3", k=1)  # hybrid search works on whatever is current

    report = survivor.sync(docs)
    reference = Collection.open(settings, "reference")
    reference.sync(docs)
    assert chunk_table(survivor) == chunk_table(reference)  # nothing missing, nothing duplicated
    assert faiss_count(survivor) == len(chunk_table(reference))
    assert survivor.search("penguins", k=1, mode="bm25")[0].source == "extra.md"
    assert survivor.search("topic0", k=3, mode="bm25") == []
    assert not [p for p in survivor.root.iterdir() if p.name.startswith(".staging-")]
    if phase != "switched":
        assert sorted(report.updated) == [f"doc{i}.txt" for i in range(1, 8)] and report.deleted == [
            "doc0.txt"
        ]
    numbers = [n for n, _ in snapshot.versions(survivor.root)]
    assert len(numbers) <= 2 and snapshot.current(survivor.root).name == f"v{max(numbers):06d}"


def test_a_sync_killed_while_embedding_keeps_what_it_embedded_for_the_next(settings, tmp_path):
    """Embedding is most of a large first index: killed after 20 of 30 files, the next sync embeds only what
    the killed one had not (it committed 16 vectors, two batches of 8), and ends with the same collection."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(30):
        (docs / f"note{i:02d}.txt").write_text(
            f"Note {i} is about subject{i} and nothing else.", encoding="utf-8"
        )
    small = settings.model_copy(
        update={"retrieval": settings.retrieval.model_copy(update={"embed_batch_size": 1})}
    )
    _kill_child_at("embedding", docs, small, APP_RETRIEVAL__EMBED_BATCH_SIZE="1")

    col = Collection.open(small, "crash")
    assert col.stats()["version"] is None  # nothing published
    assert (col.root / unfinished.NAME).is_file()
    report = col.sync(docs)
    assert (report.chunks_kept, report.chunks_embedded) == (16, 14)
    reference = Collection.open(small, "reference")
    assert reference.sync(docs).chunks_embedded == 30
    assert chunk_table(col) == chunk_table(reference)
    ours, theirs = _vectors(col), _vectors(reference)
    assert ours.keys() == theirs.keys() and all(np.allclose(ours[k], theirs[k], atol=1e-6) for k in ours)
    assert not (col.root / unfinished.NAME).exists()  # published: the version holds them now


def _vectors(collection) -> dict[str, np.ndarray]:
    conn = store.connect(snapshot.current(collection.root) / store.DB_NAME, readonly=True)
    try:
        return {
            r[0]: np.frombuffer(r[1], dtype=np.float32)
            for r in conn.execute("SELECT source, vector FROM chunks")
        }
    finally:
        conn.close()
