"""Exact resume: a run killed by SIGKILL and resumed logs the same per-step losses as an uninterrupted one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ft_helpers import trainset_of, write_config

from finetune.checkpoints import read_metrics
from finetune.train import TrainError, train

HERE = Path(__file__).parent
STEPS = 10  # checkpoints at 3, 6, 9 (save_steps 3); killed at step 5


def _worker(config: Path, run: str, resume: bool, kill_at: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parents[1])])}
    return subprocess.run(
        [sys.executable, str(HERE / "ft_worker.py"), str(config), run, str(int(resume)), str(kill_at)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _per_step(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


def test_resume_after_sigkill_matches_uninterrupted_run(ft_settings, tmp_path):
    cfg = ft_settings.finetune.model_copy(
        update={"max_steps": STEPS, "lora_dropout": 0.1}
    )  # dropout: RNG too
    settings = ft_settings.model_copy(update={"finetune": cfg})
    straight = train(settings, trainset_of(settings), run_name="straight", register=False)
    config = write_config(settings, tmp_path / "settings.yaml")

    killed = _worker(config, "interrupted", resume=False, kill_at=5)
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = settings.data_dir / "models" / "runs" / "interrupted"
    assert max(_per_step(run_dir)) == 4  # step 4 was logged after checkpoint-3; the kill came before 5 was
    # A checkpoint cut short while saving (no trainer state, no completion marker) must be ignored.
    partial = run_dir / "checkpoints" / "checkpoint-6"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"\0" * 100)

    resumed = _worker(config, "interrupted", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "ignoring incomplete checkpoint" in resumed.stderr

    expected, got = _per_step(straight.run_dir), _per_step(run_dir)
    assert sorted(got) == list(range(1, STEPS + 1))  # each step logged once: replayed steps were dropped
    for step in range(4, STEPS + 1):
        for key in ("loss", "learning_rate", "grad_norm"):
            assert got[step][key] == pytest.approx(expected[step][key], abs=1e-5, rel=0), (step, key)


def test_resume_with_changed_data_is_refused(ft_settings):
    settings = ft_settings.model_copy(
        update={"finetune": ft_settings.finetune.model_copy(update={"max_steps": 1})}
    )
    trainset = trainset_of(settings)
    train(settings, trainset, run_name="r", register=False)
    (settings.data_dir / "models" / "runs" / "r" / "run.json").write_text(
        '{"status": "running", "data_fingerprint": "other", "started_at": "x"}'
    )
    with pytest.raises(TrainError, match="data changed"):
        train(settings, trainset, run_name="r", resume=True)
