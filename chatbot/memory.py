"""Conversations, their messages and feedback, persisted in SQLite (``<data_dir>/conversations.sqlite``).

Each call opens its own connection, so one store can be shared by Streamlit sessions and API workers. WAL mode
lets readers go on while a message is written.

Every conversation has an owner (a login name, a browser session's key, an API key's owner). The methods that
read or change one conversation take an optional ``owner``: given, a conversation of someone else is reported
as not found, exactly like one that does not exist; None (the operator's CLI) reaches every conversation.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.feedback import FEEDBACK_TABLE

CHAT_TABLES = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL DEFAULT '',  -- who may see it: a login name, or a browser session's key
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    sources TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    unsure INTEGER NOT NULL DEFAULT 0  -- an answer the model nearly declined (chatbot.service.ChatAnswer.unsure)
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations(owner, updated_at);
"""
# The feedback table is read by finetune/ to build chat examples (answers rated +1, and corrections): its one
# definition lives there (finetune may not import chatbot), so writer and reader cannot disagree.
SCHEMA = CHAT_TABLES + FEEDBACK_TABLE


class ConversationNotFound(KeyError):
    def __str__(self) -> str:
        return f"no conversation with id {self.args[0]!r}"


@dataclass
class Message:
    id: int
    role: str
    content: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = 0.0
    unsure: bool = False


@dataclass
class Conversation:
    id: str
    owner: str
    title: str
    created_at: float
    updated_at: float
    messages: int = 0


class Conversations:
    """The conversation store. ``Conversations(settings.data_dir / "conversations.sqlite")``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # what people asked is for them: the store (and SQLite's -wal/-shm beside it, which take its mode) is
        # readable by the service's user only; a store already there keeps its mode (and may be read-only)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        with self._db() as db:
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
            if "unsure" not in columns:  # a store written before answers could be marked unsure
                try:
                    db.execute("ALTER TABLE messages ADD COLUMN unsure INTEGER NOT NULL DEFAULT 0")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def create(self, title: str = "New conversation", owner: str = "") -> str:
        conv_id = uuid.uuid4().hex
        now = time.time()
        with self._db() as db:
            db.execute(
                "INSERT INTO conversations (id, owner, title, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (conv_id, owner, title, now, now),
            )
        return conv_id

    def save_turn(
        self,
        conv_id: str | None,
        question: str,
        answer: str,
        sources: list[dict[str, Any]] | None = None,
        owner: str = "",
        title: str | None = None,
        unsure: bool = False,
    ) -> tuple[str, int]:
        """Store a question and its answer (``unsure``: marked so) in one transaction; ``conv_id`` None creates
        the conversation (so a conversation exists only once its first answer does). Returns (conversation id,
        answer message id)."""
        now = time.time()
        with self._db() as db:
            if conv_id is None:
                conv_id = uuid.uuid4().hex
                db.execute(
                    "INSERT INTO conversations (id, owner, title, created_at, updated_at) VALUES (?,?,?,?,?)",
                    (conv_id, owner, (title or question[:60]).strip() or "New conversation", now, now),
                )
            else:
                _touch(db, conv_id, now)
            _insert(db, conv_id, "user", question, None, now)
            return conv_id, _insert(db, conv_id, "assistant", answer, sources, now, unsure)

    def exists(self, conv_id: str, owner: str | None = None) -> bool:
        with self._db() as db:
            return _owned(db, conv_id, owner)

    def get(self, conv_id: str, owner: str | None = None) -> Conversation:
        with self._db() as db:
            row = db.execute(
                "SELECT c.id, c.owner, c.title, c.created_at, c.updated_at, COUNT(m.id) FROM conversations c "
                "LEFT JOIN messages m ON m.conversation_id = c.id WHERE c.id = ? GROUP BY c.id",
                (conv_id,),
            ).fetchone()
        if row is None or (owner is not None and row[1] != owner):
            raise ConversationNotFound(conv_id)
        return Conversation(*row)

    def list(self, owner: str | None = None) -> list[Conversation]:
        """Conversations (of ``owner`` only, when given), most recently active first."""
        where, args = ("WHERE c.owner = ?", (owner,)) if owner is not None else ("", ())
        with self._db() as db:
            rows = db.execute(
                "SELECT c.id, c.owner, c.title, c.created_at, c.updated_at, COUNT(m.id) FROM conversations c "
                f"LEFT JOIN messages m ON m.conversation_id = c.id {where} GROUP BY c.id "
                "ORDER BY c.updated_at DESC",
                args,
            ).fetchall()
        return [Conversation(*r) for r in rows]

    def rename(self, conv_id: str, title: str, owner: str | None = None) -> None:
        title = title.strip()
        if not title:
            raise ValueError("a conversation title cannot be empty")
        with self._db() as db:
            if not _owned(db, conv_id, owner):
                raise ConversationNotFound(conv_id)
            db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conv_id))

    def delete(self, conv_id: str, owner: str | None = None) -> None:
        with self._db() as db:
            if not _owned(db, conv_id, owner):
                raise ConversationNotFound(conv_id)
            db.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))

    def move_owner(self, old: str, new: str) -> int:
        """Give every conversation of ``old`` to ``new``; how many moved."""
        with self._db() as db:
            return db.execute("UPDATE conversations SET owner = ? WHERE owner = ?", (new, old)).rowcount

    def add_message(
        self, conv_id: str, role: str, content: str, sources: list[dict[str, Any]] | None = None
    ) -> int:
        now = time.time()
        with self._db() as db:
            _touch(db, conv_id, now)
            return _insert(db, conv_id, role, content, sources, now)

    def messages(self, conv_id: str, owner: str | None = None) -> list[Message]:
        with self._db() as db:
            if not _owned(db, conv_id, owner):
                raise ConversationNotFound(conv_id)
            rows = db.execute(
                "SELECT id, role, content, sources, created_at, unsure FROM messages WHERE conversation_id = ? "
                "ORDER BY id",
                (conv_id,),
            ).fetchall()
        return [Message(r[0], r[1], r[2], json.loads(r[3]), r[4], bool(r[5])) for r in rows]

    def add_feedback(self, message_id: int, rating: int, correction: str | None = None) -> None:
        """Rate an assistant answer (+1 good, -1 bad, 0 neutral) and optionally give a corrected answer.

        Rating the same answer again replaces the earlier feedback.
        """
        if rating not in (-1, 0, 1):
            raise ValueError(f"rating must be -1, 0 or 1, got {rating!r}")
        with self._db() as db:
            row = db.execute(
                "SELECT conversation_id, role, content FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None or row[1] != "assistant":
                raise ValueError(f"message {message_id} is not an assistant answer")
            question = db.execute(
                "SELECT content FROM messages WHERE conversation_id = ? AND id < ? AND role = 'user' "
                "ORDER BY id DESC LIMIT 1",
                (row[0], message_id),
            ).fetchone()
            db.execute(
                "INSERT INTO feedback (conversation_id, message_id, question, answer, rating, correction, "
                "created_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(message_id) DO UPDATE SET "
                "rating = excluded.rating, correction = excluded.correction, created_at = excluded.created_at",
                (
                    row[0],
                    message_id,
                    question[0] if question else "",
                    row[2],
                    rating,
                    (correction or "").strip() or None,
                    time.time(),
                ),
            )

    def feedback(self) -> list[dict[str, Any]]:
        with self._db() as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM feedback ORDER BY id")]


def _owned(db: sqlite3.Connection, conv_id: str, owner: str | None) -> bool:
    """``conv_id`` exists and (when ``owner`` is given) belongs to ``owner``."""
    row = db.execute("SELECT owner FROM conversations WHERE id = ?", (conv_id,)).fetchone()
    return row is not None and (owner is None or row[0] == owner)


def _touch(db: sqlite3.Connection, conv_id: str, now: float) -> None:
    """Mark ``conv_id`` active at ``now``; :class:`ConversationNotFound` if there is no such conversation."""
    if db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conv_id)).rowcount == 0:
        raise ConversationNotFound(conv_id)


def _insert(
    db: sqlite3.Connection,
    conv_id: str,
    role: str,
    content: str,
    sources: list[dict[str, Any]] | None,
    now: float,
    unsure: bool = False,
) -> int:
    """Append one message to ``conv_id``; its id."""
    cur = db.execute(
        "INSERT INTO messages (conversation_id, role, content, sources, created_at, unsure) VALUES (?,?,?,?,?,?)",
        (conv_id, role, content, json.dumps(sources or [], ensure_ascii=False), now, int(unsure)),
    )
    return int(cur.lastrowid)
