"""Embedded (serverless) store for VideoPrism embeddings, with exact and optional approximate search.

A store is a plain folder of fp16 ``.npy`` shards and Parquet metadata. It is written by one process at a time
(``EmbeddingStore``, used by ``videoprism embed``) and read by any number of processes (``open_store``). Every file
is written under a temporary name, fsynced and renamed into place, and no file is ever modified after that, so a
crash (Ctrl-C, SIGKILL, power loss) loses at most the batch being written and never leaves a metadata row that
points to missing data.

``docs/store-format.md`` describes the on-disk layout, the metadata columns, which rows are live, how to read a
compacted store with pyarrow and numpy alone, and how search works. The package's modules:

* ``format``: layout names, metadata schema, manifest and durable writes;
* ``live``: reading the metadata parts and resolving the live rows;
* ``rows``: ``ConcatenatedRows``, the lazily concatenated view over shard row ranges;
* ``topk``: exact top-k kernels (torch and numpy);
* ``reader``: ``open_store``, ``StoreReader`` and ``SearchHit``;
* ``lance``: the optional LanceDB backend;
* ``writer``: ``EmbeddingStore`` (writer lock, resume state, compaction).
"""

# ``X as X``: layout constants and defaults, importable from here but not in ``__all__``.
from ..errors import (
    EmptyStoreError,
    StoreCorruptedError,
    StoreError,
    StoreLockedError,
    StoreMismatchError,
    StoreNotFoundError,
)
from .format import FORMAT_NAME as FORMAT_NAME
from .format import FORMAT_VERSION as FORMAT_VERSION
from .format import KINDS, METADATA_SCHEMA, file_key
from .format import LANCE_DIR as LANCE_DIR
from .format import LOCK_NAME as LOCK_NAME
from .format import MANIFEST_NAME as MANIFEST_NAME
from .format import META_DIR as META_DIR
from .format import SHARDS_DIR as SHARDS_DIR
from .lance import LANCE_INDEX_MIN_ROWS as LANCE_INDEX_MIN_ROWS
from .reader import SearchHit, StoreReader, open_store
from .rows import ConcatenatedRows
from .topk import DEFAULT_BLOCK_ROWS as DEFAULT_BLOCK_ROWS
from .writer import EmbeddingStore

__all__ = [
    "KINDS",
    "METADATA_SCHEMA",
    "ConcatenatedRows",
    "EmbeddingStore",
    "EmptyStoreError",
    "SearchHit",
    "StoreCorruptedError",
    "StoreError",
    "StoreLockedError",
    "StoreMismatchError",
    "StoreNotFoundError",
    "StoreReader",
    "file_key",
    "open_store",
]
