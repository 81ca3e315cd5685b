"""The ``chatbot`` command. Each module below adds its commands to the one Typer app."""

from __future__ import annotations

import signal

from chatbot.cli import (  # noqa: F401  (each module registers its commands)
    api_cmds,
    chat_cmds,
    eval_cmds,
    retrieval_cmds,
    settings_cmds,
    train_cmds,
)
from chatbot.cli.app import app


def main() -> None:
    # SIGINT stops a command cleanly (a training run at its checkpoint, a --watch between syncs), and it is
    # how the training page's Stop button ends a job. A process started by a shell in the background inherits
    # SIGINT *ignored* (e.g. `make run &` and every job the app then starts): take it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    app()
