"""Feedback from the chat app as chat examples, read defensively from ``<data_dir>/conversations.sqlite``.

The chat layer writes the database (``chatbot.memory.Conversations.add_feedback``); this module reads it.
The table they share is defined once, here, as :data:`FEEDBACK_TABLE`: ``chatbot.memory`` creates it from this
constant (chatbot may import finetune, not the other way round) and docs/finetune.md quotes it verbatim.

An answer rated +1 becomes the example (question -> answer); a correction becomes (question -> correction),
whatever the rating. An answer rated -1 or 0 without a correction teaches nothing and is skipped. Only the
columns in :data:`REQUIRED_COLUMNS` (and ``correction`` when present) are read, so a table made to the schema
these docs used to give (``message_id``/``created_at`` as TEXT) still works. A missing database, a missing table or
missing columns mean "no feedback", never an error.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# One row per rated answer; rating it again replaces the row (message_id is UNIQUE). It lives in the chat
# database beside the ``messages`` table it refers to, so deleting a conversation deletes its feedback.
FEEDBACK_TABLE = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    message_id INTEGER NOT NULL UNIQUE REFERENCES messages(id) ON DELETE CASCADE,
    question TEXT NOT NULL,  -- the user message just before the answer ('' if none)
    answer TEXT NOT NULL,  -- the assistant answer that was rated, as shown
    rating INTEGER NOT NULL CHECK (rating IN (-1, 0, 1)),  -- +1 good, -1 bad, 0 neutral
    correction TEXT,  -- what the answer should have been; NULL when none was given
    created_at REAL NOT NULL  -- Unix time in seconds (time.time()), as in the other chat tables
);
"""
REQUIRED_COLUMNS = {"id", "question", "answer", "rating"}  # what this module reads (and correction if any)


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
