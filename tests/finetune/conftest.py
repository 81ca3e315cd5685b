"""The fine-tuning fixture: tiny-model settings with small training sources (see ft_helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ft_helpers import FINETUNE, write_chats, write_docs


@pytest.fixture
def ft_settings(settings, tmp_path: Path):
    """The tiny-model settings with the small training sources and budget above."""
    from finetune.config import FinetuneSettings

    docs = write_docs(tmp_path / "docs")
    chats = write_chats(tmp_path / "chat.jsonl")
    cfg = FinetuneSettings(**FINETUNE, docs_dirs=[docs], chat_files=[chats])
    return settings.model_copy(update={"finetune": cfg})
