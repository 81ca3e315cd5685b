"""The ``chatbot`` command. Each module below adds its commands to the one Typer app."""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys

from chatbot.cli import (  # noqa: F401  (each module registers its commands)
    api_cmds,
    chat_cmds,
    eval_cmds,
    retrieval_cmds,
    settings_cmds,
    train_cmds,
)
from chatbot.cli.app import app, plain
from finetune.data import DataError
from finetune.qa import QAFileError
from finetune.registry import RegistryError
from retrieval.errors import RetrievalError

log = logging.getLogger("chatbot.cli")


def main() -> None:
    # SIGINT stops a command cleanly (a training run at its checkpoint, a --watch between syncs), and it is
    # how the training page's Stop button ends a job. A process started by a shell in the background inherits
    # SIGINT *ignored* (e.g. `make run &` and every job the app then starts): take it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        app()
    except (RetrievalError, OSError, sqlite3.DatabaseError, DataError, QAFileError, RegistryError) as exc:
        # what the commands do not handle themselves (a full disk, a damaged index or database, an unreadable
        # data directory, a question file that cannot be read, a registry entry that names a missing
        # version): one line naming it, not a traceback; --verbose adds the traceback
        log.debug("traceback", exc_info=exc)
        kind = "damaged database" if isinstance(exc, sqlite3.DatabaseError) else type(exc).__name__
        print(f"error: {kind}: {plain(str(exc))} (run with --verbose for the details)", file=sys.stderr)
        sys.exit(1)
