"""Training started from the app: a ``chatbot train``/``retrain`` child process in its own session, recorded
on disk (``<data_dir>/ui/training.json``), so it survives page reloads and app restarts and can be stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from chatbot.settings import Settings
from retrieval.files import write_atomic


@dataclass
class TrainingJob:
    pid: int
    command: list[str]
    log: str
    started: float

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        stat = Path(f"/proc/{self.pid}/stat")
        return not (stat.exists() and stat.read_text().split()[2] == "Z")  # a zombie has finished

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = Path(self.log).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        # tqdm redraws with carriage returns: keep the last state of each line
        return "\n".join(line.split("\r")[-1] for line in text.splitlines()[-lines:])


def _state_file(settings: Settings) -> Path:
    return settings.data_dir / "ui" / "training.json"


def current_job(settings: Settings) -> TrainingJob | None:
    path = _state_file(settings)
    if not path.is_file():
        return None
    return TrainingJob(**json.loads(path.read_text()))


def start_job(settings: Settings, args: list[str]) -> TrainingJob:
    """Start ``chatbot <args>`` in the background; refuses while another started here is running."""
    running = current_job(settings)
    if running is not None and running.alive():
        raise RuntimeError(
            f"a training job is already running (pid {running.pid}): {' '.join(running.command)}"
        )
    folder = _state_file(settings).parent
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"training-{time.strftime('%Y%m%d-%H%M%S')}.log"
    command = [sys.executable, "-m", "chatbot", *args]
    env = {**os.environ, "APP_DATA_DIR": str(settings.data_dir.resolve()), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    job = TrainingJob(proc.pid, command, str(log_path), time.time())
    write_atomic(_state_file(settings), json.dumps(asdict(job)))
    return job


def stop_job(job: TrainingJob) -> None:
    """Interrupt the job's process group; the trainer's checkpoints let `--resume` continue it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(job.pid, signal.SIGINT)


def latest_metrics(settings: Settings) -> list[dict]:
    """The per-step records of the most recently written training run."""
    from finetune.checkpoints import read_metrics
    from finetune.train import runs_dir

    runs = runs_dir(settings)
    files = sorted(runs.glob("*/metrics.jsonl"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    return read_metrics(files[-1]) if files else []
