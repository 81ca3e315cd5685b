"""The ``chatbot`` command. Each module below adds its commands to the one Typer app."""

from __future__ import annotations

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
    app()
