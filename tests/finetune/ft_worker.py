"""Run in a subprocess by the resume and distributed tests: ``python ft_worker.py CONFIG RUN RESUME KILL_AT``.

Trains from the YAML settings in CONFIG; with KILL_AT > 0 the process sends itself SIGKILL at the end of that
optimizer step (no cleanup, no atexit: the state of a machine that lost power).
"""

from __future__ import annotations

import os
import signal
import sys

from ft_helpers import trainset_of
from transformers import TrainerCallback

from chatbot.settings import load_settings
from finetune.train import train


class KillAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    config, run, resume, kill_at = sys.argv[1:5]
    settings = load_settings(config)
    callbacks = [KillAt(int(kill_at))] if int(kill_at) > 0 else []
    train(settings, trainset_of(settings), run_name=run, resume=resume == "1", callbacks=callbacks)
