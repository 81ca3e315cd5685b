"""The values the retrieval package hands to its callers (chat chain, CLI, UI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk. ``score`` is higher-is-better and comparable within one result list."""

    chunk_id: int
    text: str
    source: str  # path of the source file, relative to the synced folder
    score: float
    title: str | None = None  # document title or the heading the chunk sits under
    page: int | None = None  # 1-based page for paged formats (PDF)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Where the chunk comes from, on one line: "guide.pdf — page 3 — Installing", whatever the file name
        or title holds (the prompt, the CLI and the API all show this)."""
        parts = [self.source]
        if self.page:
            parts.append(f"page {self.page}")
        if self.title:
            parts.append(self.title)
        return " ".join(" — ".join(parts).split())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SyncReport:
    """What one sync of a collection did, file by file (paths relative to the synced folder)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # path -> specific reason
    unsupported: list[str] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_kept: int = 0  # vectors a stopped sync had embedded, taken up instead of embedding them again
    chunks_total: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
