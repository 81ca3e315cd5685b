"""Errors of the retrieval package; each message names the file, collection or setting involved."""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class of the errors below."""


class LoadError(RetrievalError):
    """A file cannot be indexed; the message is the specific reason shown in the sync report."""


class CollectionError(RetrievalError, ValueError):
    """A collection name is invalid, or the collection does not exist."""


class CollectionLockedError(RetrievalError):
    """Another sync of the same collection holds its lock; the message names the holder."""
