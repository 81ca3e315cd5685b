"""API keys for the HTTP API, stored hashed in ``<data_dir>/api_keys.sqlite`` (readable by its owner only).

A key is a random 256-bit token shown once, when ``chatbot api-keys create OWNER`` makes it; only its SHA-256
is stored, so a copy of the data directory gives no usable key. A request's bearer token is hashed and compared
with every active key's hash in constant time. ``OWNER`` names whose conversations the key reaches: several
keys of one owner (say, an old and a new one while rotating) share them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "api_keys.sqlite"
PREFIX = "da-"  # recognisable in a leaked config or log ("domain assistant"), like GitHub's ghp_
OWNER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")  # fullmatch: "$" would let a final newline in

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,          -- public: shown by `list`, used by `revoke`
    owner TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,    -- sha256 of the token, hex
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""


@dataclass(frozen=True)
class ApiKey:
    id: str
    owner: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class ApiKeys:
    """The key store. ``ApiKeys.of(settings.data_dir)``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, data_dir: Path) -> ApiKeys:
        return cls(Path(data_dir) / FILE_NAME)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        db = sqlite3.connect(self.path, timeout=30)
        try:
            if fresh:
                os.chmod(self.path, 0o600)
            db.executescript(SCHEMA)
            with db:
                yield db
        finally:
            db.close()

    def create(self, owner: str) -> tuple[ApiKey, str]:
        """A new key for ``owner``: its record and the token (shown once, never stored)."""
        if not OWNER.fullmatch(owner):
            raise ValueError(
                f"invalid owner {owner!r}: use 1 to 64 letters, digits, '_', '.', '@' or '-' (no spaces)"
            )
        token = PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(secrets.token_hex(4), owner, time.time())
        with self._db() as db:
            db.execute(
                "INSERT INTO api_keys (id, owner, hash, created_at) VALUES (?, ?, ?, ?)",
                (key.id, key.owner, _digest(token), key.created_at),
            )
        return key, token

    def list(self) -> list[ApiKey]:
        if not self.path.exists():
            return []
        with self._db() as db:
            rows = db.execute("SELECT id, owner, created_at, revoked_at FROM api_keys ORDER BY created_at")
            return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        with self._db() as db:
            changed = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            ).rowcount
        found = [k for k in self.list() if k.id == key_id]
        if not found:
            raise KeyError(f"no API key with id {key_id!r} (see `chatbot api-keys list`)")
        if not changed:
            raise ValueError(f"API key {key_id!r} was already revoked")
        return found[0]

    def any_active(self) -> bool:
        return any(k.active for k in self.list())

    def configured(self) -> bool:
        """Whether any key was ever created: from then on every request needs one (revoking them all locks
        the API; it never falls back to serving without keys)."""
        return bool(self.list())

    def check(self, token: str) -> ApiKey | None:
        """The active key whose token is ``token``, or None. Every stored hash is compared, in constant time,
        so the time taken says nothing about how close a guess was."""
        if not self.path.exists():
            return None
        digest = _digest(token)
        found = None
        with self._db() as db:
            rows = db.execute("SELECT id, owner, created_at, revoked_at, hash FROM api_keys").fetchall()
        for key_id, owner, created, revoked, stored in rows:
            if hmac.compare_digest(digest, stored) and revoked is None:
                found = ApiKey(key_id, owner, created, revoked)
        return found
