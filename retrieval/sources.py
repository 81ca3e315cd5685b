"""Where a configured model comes from: a local directory or a Hugging Face hub id.

Shared by the embedding model (``retrieval.embedding``) and the generator (``finetune.models``), so a setting
like ``models.embedding`` or ``models.generator`` means the same thing and fails the same way.
"""

from __future__ import annotations

from pathlib import Path

from retrieval.errors import model_not_found


def local_or_hub(setting: str, value: str) -> str:
    """``value`` as a local directory (which must exist) or as a hub id, which ``from_pretrained`` resolves
    (cache first, then network). Something that looks like a path but is not a directory is an error."""
    path = Path(value).expanduser()
    looks_local = value.startswith((".", "/", "~")) or path.exists() or value.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise model_not_found(setting, value, "no such directory")
        return str(path)
    return value
