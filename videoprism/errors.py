"""Every exception the package raises on purpose, in one place; each is also importable from `videoprism`.

All of them derive from a built-in exception (ValueError, FileNotFoundError, ...), so code that catches those keeps
working.
"""

from __future__ import annotations

# Collection tools and video decoding


class VideoDecodeError(ValueError):
    """A video could not be opened or decoded. The message names the source and the cause."""


class VideoInputNotFoundError(FileNotFoundError):
    """An input names no existing file or folder, a glob matches nothing, or an ``@list`` file is unreadable."""


class NoVideosFoundError(ValueError):
    """The inputs hold no video files."""


class EmbedSettingsError(ValueError):
    """Invalid embedding settings, or settings that differ from those the store was written with."""


class DecodingWorkerError(RuntimeError):
    """The decoding worker processes keep exiting before they read any video."""


class RayNotInstalledError(ImportError):
    """Ray (with Ray Data) is not installed, and the Ray engine needs it."""


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
