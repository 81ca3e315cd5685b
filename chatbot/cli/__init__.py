"""The ``chatbot`` command. Each module below adds its commands to the one Typer app."""

from __future__ import annotations

from chatbot.cli import chat_cmds, retrieval_cmds  # noqa: F401  (registers commands)
from chatbot.cli.app import app


def main() -> None:
    app()
