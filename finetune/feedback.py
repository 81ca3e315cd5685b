"""Feedback from the chat app as chat examples, read defensively from ``<data_dir>/conversations.sqlite``.

The chat layer owns the database; this module only reads it. The interface it relies on is one table::

    CREATE TABLE feedback (
        id              INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        message_id      TEXT NOT NULL,
        question        TEXT NOT NULL,     -- the user's question as asked
        answer          TEXT NOT NULL,     -- the assistant's answer that was rated
        rating          INTEGER NOT NULL,  -- +1 (good) or -1 (bad)
        correction      TEXT NULL,         -- the answer a user says it should have been
        created_at      TEXT NOT NULL      -- ISO 8601, UTC
    );

An answer rated +1 becomes the example (question -> answer); a correction becomes (question -> correction),
whatever the rating. An answer rated -1 without a correction teaches nothing and is skipped. A missing
database, a missing table or missing columns mean "no feedback", never an error.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = {"id", "question", "answer", "rating"}


def feedback_conversations(db_path: Path) -> Iterator[tuple[str, tuple[tuple[str, str], ...]]]:
    """(source, ((role, content), ...)) for each usable feedback row, oldest first."""
    if not db_path.is_file():
        return
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        log.warning("cannot open feedback database %s: %s", db_path, exc)
        return
    try:
        columns = {row[1] for row in con.execute("PRAGMA table_info(feedback)")}
        if not columns >= REQUIRED_COLUMNS:
            if columns:
                log.warning(
                    "%s: table feedback lacks columns %s; ignored", db_path, REQUIRED_COLUMNS - columns
                )
            return
        correction = "correction" if "correction" in columns else "NULL"
        rows = con.execute(f"SELECT id, question, answer, rating, {correction} FROM feedback ORDER BY id")
        for fid, question, answer, rating, fixed in rows:
            if not isinstance(question, str) or not question.strip():
                continue
            reply = (
                fixed
                if isinstance(fixed, str) and fixed.strip()
                else answer
                if rating and rating > 0
                else None
            )
            if isinstance(reply, str) and reply.strip():
                yield f"{db_path}:feedback:{fid}", (("user", question), ("assistant", reply))
    except sqlite3.Error as exc:
        log.warning("cannot read feedback from %s: %s", db_path, exc)
    finally:
        con.close()
