"""Exceptions raised by videoprism, in one place."""

from __future__ import annotations

# --------------------------------------------------------------------------------------------------------------------
# Embedding store


class StoreError(ValueError):
    """Base class of the errors raised by the embedding store."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """There is no embedding store at the given path."""


class StoreCorruptedError(StoreError):
    """The store's files are unreadable or inconsistent."""


class StoreMismatchError(StoreError):
    """The store holds embeddings of another model, dimension or frame count than requested."""


class StoreLockedError(StoreError):
    """Another process holds the store's writer lock."""


class EmptyStoreError(StoreError):
    """The store has no embeddings to search."""
