"""Checkpoints that are known to be complete, and the run's per-step metrics file.

The Trainer writes ``checkpoint-N/`` in place (weights, optimizer, scheduler, RNG, trainer_state.json), so a
process killed mid-save leaves a directory that looks like a checkpoint but is not. :class:`MarkComplete`
writes ``COMPLETE`` into the directory after the save returned; resume only trusts directories that have it,
and removes newer half-written ones so the Trainer's own rotation never picks them.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from retrieval.files import write_atomic

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _step(path: Path) -> int:
    m = _CHECKPOINT.match(path.name)
    return int(m.group(1)) if m else -1


def is_complete(path: Path) -> bool:
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return (path / MARKER).is_file() and state.get("global_step") == _step(path)


def latest_complete_checkpoint(checkpoint_dir: Path, clean: bool = True) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones are logged and (if ``clean``) removed."""
    if not checkpoint_dir.is_dir():
        return None
    candidates = sorted((p for p in checkpoint_dir.iterdir() if _step(p) >= 0 and p.is_dir()), key=_step)
    for path in reversed(candidates):
        if is_complete(path):
            return path
        log.warning("ignoring incomplete checkpoint %s (interrupted while saving)", path)
        if clean:
            shutil.rmtree(path, ignore_errors=True)
    return None


class MarkComplete(TrainerCallback):
    """Write the ``COMPLETE`` marker (fsynced) once the Trainer has saved every file of a checkpoint."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = checkpoint_dir

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001 (Trainer callback signature)
        if state.is_world_process_zero:
            path = self.checkpoint_dir / f"checkpoint-{state.global_step}"
            if path.is_dir():
                write_atomic(path / MARKER, str(state.global_step))


class MetricsFile(TrainerCallback):
    """One JSON line per log event in ``metrics.jsonl``: step, loss, learning_rate, grad_norm; evaluations
    add eval_loss and eval_perplexity (exp of the mean token loss)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):  # noqa: ANN001
        if not state.is_world_process_zero or not logs:
            return
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, **logs}
        if "eval_loss" in logs:
            record["eval_perplexity"] = _ppl(logs["eval_loss"])
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


def _ppl(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill
    return out


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records after ``step`` (logged by an interrupted run past its last checkpoint) before resuming."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def plot_losses(metrics_path: Path, png_path: Path) -> Path | None:
    """Training and validation loss against step, as a PNG; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed; no loss plot (pip install matplotlib)")
        return None
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
