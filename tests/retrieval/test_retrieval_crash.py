"""A sync killed with SIGKILL leaves the previous snapshot usable; the next sync completes it exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from retrieval_helpers import chunk_table, faiss_count

from retrieval import snapshot
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


def _kill_child_at(phase: str, folder: Path, settings) -> None:
    env = dict(os.environ)
    env.update({
        "APP_DATA_DIR": str(settings.data_dir),
        "APP_MODELS__EMBEDDING": settings.models.embedding,
        "APP_MODELS__DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
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
