"""Errors of the retrieval package; each message names the file, collection or setting involved."""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class of the errors below."""


class LoadError(RetrievalError):
    """A file cannot be indexed; the message is the specific reason shown in the sync report."""


class ParserFailure(LoadError):
    """The parser process, not necessarily the file, failed: stopped at ``retrieval.load_timeout``, killed or
    crashed, or never started. On a calmer machine the same file may load, so the failure is not cached."""


class CollectionError(RetrievalError, ValueError):
    """A collection name is invalid, or the collection does not exist."""


class BrokenPointer(RetrievalError):
    """A collection's CURRENT file names no snapshot folder there (one removed by hand, a partial restore of a
    backup); the next sync points it at the newest complete version, or rebuilds the collection."""


class CollectionLockedError(RetrievalError):
    """Another sync of the same collection holds its lock; the message names the holder."""


class SettingsError(ValueError):
    """A setting is missing, malformed or points at something that does not exist (shared by every package:
    ``chatbot.settings`` re-exports it)."""


class ModelNotFoundError(SettingsError):
    """A configured model cannot be found or loaded; the message names the setting and what to do."""


def model_not_found(setting: str, value: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"setting {setting} = {value!r}: {why}. Set it (YAML `{setting}` or env "
        f"APP_{setting.upper().replace('.', '__')}) to 'embedded', an existing local model directory, or a "
        "Hugging Face hub id reachable from this machine (a hub id needs network access or a filled HF cache)."
    )
