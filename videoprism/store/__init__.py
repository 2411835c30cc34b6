"""Embedded (serverless) store for VideoPrism embeddings, with exact and optional approximate search.

A store is a plain folder of fp16 ``.npy`` shards and Parquet metadata. It is written by one process at a time
(``EmbeddingStore``, used by ``videoprism embed``) and read by any number of processes (``open_store``). Every file
is written under a temporary name, fsynced and renamed into place, and no file is ever modified after that, so a
crash (Ctrl-C, SIGKILL, power loss) loses at most the batch being written and never leaves a metadata row that
points to missing data.

On-disk layout (format version 1)::

    STORE/
      store.json                           manifest: {"format": "videoprism-embedding-store", "format_version": 1,
                                           "model_id": str, "dim": int, "dtype": "float16", "normalized": true, ...}
      shards/<token>.emb.npy               (rows, dim) float16, every row L2-normalised
      shards/<token>.frames.npy            optional (rows, frames, dim) float16 per-frame embeddings (not normalised),
                                           same row order as the ``.emb.npy`` shard of the same token
      meta/<token>.parquet                 one metadata "part" per committed batch (or per compaction)
      lance/                               optional derived LanceDB index (``backend="lance"``); safe to delete
      .lock                                writer lock (flock); empty
      shards/.tmp-*, meta/.tmp-*           temporaries of an interrupted write; ignored by readers, removed by writers

``<token>`` is ``<first id, 12 digits>-<8 hex chars>``. Every part has the same Parquet schema, one row per clip:

    ===================  ==============  =========================================================================
    column               type            meaning
    ===================  ==============  =========================================================================
    id                   int64           unique row id; ids only grow, in commit order; never reused or renumbered
    path                 string          video path as given by the writer (``videoprism embed`` stores it absolute)
    size                 int64           file size in bytes when embedded
    mtime_ns             int64           file modification time (ns) when embedded
    model_id             string          model that produced the embedding (always the manifest's ``model_id``)
    kind                 string          "clip", "window" (one of several windows of a video) or "video" (pooled)
    start, end           double          window bounds in seconds; NaN when the row covers the whole video
    frame_indices        list<int64>     indices of the decoded frames fed to the model
    duration             double          video duration in seconds (NaN when unknown)
    num_frames_total     int64           number of frames in the video (null when unknown)
    video_rows           int64           rows the video has once fully written (null: all in one batch)
    error                string          null for embeddings; the decode/embedding error for a failed video
    shard                string          ``shards/<token>.emb.npy`` holding the embedding (null for failures)
    row                  int64           row inside ``shard`` (null for failures)
    frames_shard         string          ``shards/<token>.frames.npy`` with per-frame embeddings, or null
    ===================  ==============  =========================================================================

The Parquet key-value metadata of a part may hold ``videoprism.replaces`` (JSON list of part file names that a
compaction merged; readers skip those parts, which only exist if the compaction was interrupted before deleting
them), ``videoprism.next_id`` (the next id to assign, so ids of dropped rows are never reused) and
``videoprism.compacted`` ("1" on a part written by a compaction: all its rows are live and sorted by id).

Live rows. Parts are append-only, so re-embedding a video adds rows instead of rewriting old ones. The live set is
defined over all rows of the non-replaced parts, using ids as commit order:

1. For each ``path``, the row with the highest id gives the current ``(size, mtime_ns)``; rows of that path with a
   different size or mtime are stale (the file was modified since) and dropped.
2. Embedding rows describing the same clip -- same path, kind, start, end and frame_indices -- keep only the one
   with the highest id (a re-run after a kill may rewrite part of a video).
3. A path keeps at most its newest failure row, and only if no embedding row of the path is newer.

``EmbeddingStore.compact()`` physically applies these rules: afterwards ``meta/`` holds one part whose rows are all
live, sorted by id, and ``shards/`` one ``.emb.npy`` (plus one ``.frames.npy`` when any per-frame embeddings exist;
rows without them are NaN there) whose row ``i`` belongs to the ``i``-th embedding row. Reading a compacted store
needs nothing but pyarrow and numpy::

    import numpy as np, pyarrow.parquet as pq, pyarrow.compute as pc
    meta = pq.read_table("STORE/meta")                   # skips the dot-prefixed temporaries
    ok = meta.filter(pc.is_null(meta["error"]))          # embedding rows, in shard order
    emb = np.load("STORE/" + ok["shard"][0].as_py(), mmap_mode="r")
    assert (ok["row"].to_numpy() == np.arange(len(emb))).all()

Reading with this module (``open_store``) applies the rules on any store, compacted or not. ``StoreReader.embeddings``
is an ``np.memmap`` when the live rows are one contiguous run of one shard (always the case after ``compact()``), and
otherwise a lazily concatenated read-only view (``ConcatenatedRows``) over the shards that opens at most a few memory
maps at a time; ``np.asarray(view)`` materialises it. Reading writes nothing (``backend="lance"`` excepted).

Search is exact cosine similarity: queries are L2-normalised, stored rows are already unit norm, and the fp16 matrix
is streamed in blocks (8192 rows) that are converted to float32 into a reused buffer and multiplied with all queries
at once, keeping a running top-k per query with ``np.argpartition``. The conversion is the bottleneck on CPU; the
``torch`` kernel (used when PyTorch is importable) converts with vectorised F16C code and several threads, the
``numpy`` kernel splits it over a thread pool (numpy's fp16 cast is scalar code, about 3x slower than torch's).
Blocks are large so that a search synchronises its threads rarely: many small parallel steps stall badly whenever
another process competes for the cores. ``backend="lance"`` instead searches a LanceDB table built from the store
(IVF-PQ approximate search on large stores; needs ``pip install videoprism[lance]``).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import itertools
import json
import os
import re
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; the single-writer rule is then up to the user.
    fcntl = None

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

FORMAT_NAME = "videoprism-embedding-store"
FORMAT_VERSION = 1
MANIFEST_NAME = "store.json"
SHARDS_DIR = "shards"
META_DIR = "meta"
LANCE_DIR = "lance"
LOCK_NAME = ".lock"
KINDS = ("clip", "window", "video")

_TMP_PREFIX = ".tmp-"
_KV_REPLACES = b"videoprism.replaces"
_KV_NEXT_ID = b"videoprism.next_id"
_KV_COMPACTED = b"videoprism.compacted"
_SHARD_RE = re.compile(r"^shards/[0-9]{12,}-[0-9a-f]{8}\.(emb|frames)\.npy$")
_OPEN_RETRIES = 5
# Rows converted to float32 per matmul. Large blocks keep thread synchronisations rare: with 256-row blocks a 1M-row
# search runs 8000 parallel regions, and each stalls for a scheduler tick whenever another process holds a core
# (measured on 2 cores: 40 s instead of 0.2 s). With a reused buffer, large blocks cost nothing on an idle machine.
DEFAULT_BLOCK_ROWS = 8192
_NUMPY_SUB_ROWS = 256  # numpy kernel, one query: 256 x 768 float32 stays in L2 between conversion and dot
_MAX_SCORES = 1 << 24  # float32 scores per block (64 MiB): bounds memory for many queries
_CHUNK_ROWS = 1 << 16  # rows per copy when compacting or building a Lance table
_MAX_OPEN_SHARDS = 32
LANCE_INDEX_MIN_ROWS = 65_536

METADATA_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_ns", pa.int64(), nullable=False),
        pa.field("model_id", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("start", pa.float64()),
        pa.field("end", pa.float64()),
        pa.field("frame_indices", pa.list_(pa.int64())),
        pa.field("duration", pa.float64()),
        pa.field("num_frames_total", pa.int64()),
        pa.field("video_rows", pa.int64()),
        pa.field("error", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("frames_shard", pa.string()),
    ]
)
_RECORD_KEYS = frozenset(METADATA_SCHEMA.names) - {"id", "shard", "row", "frames_shard"}


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


class SearchHit(NamedTuple):
    """One search result: cosine similarity, row id and the row's metadata."""

    score: float
    id: int
    metadata: dict[str, Any]


class _Vanished(Exception):
    """A file disappeared while being read: a concurrent compaction; the caller retries."""


def file_key(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """Returns the resume key ``(absolute path, size, mtime_ns)`` of a video file, as ``is_done`` expects it.

    Args:
        path: Video file.
    """
    st = os.stat(path)
    return os.path.abspath(os.fspath(path)), st.st_size, st.st_mtime_ns


# --------------------------------------------------------------------------------------------------------------------
# Durable file primitives


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(final: Path) -> Path:
    return final.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}")


def _atomic_write(final: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Writes a file so that ``final`` either does not exist or is complete, even across a crash."""
    tmp = _tmp_name(final)
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)


def _save_npy(final: Path, array: np.ndarray) -> None:
    _atomic_write(final, lambda f: np.save(f, array, allow_pickle=False))


def _save_npy_streaming(final: Path, shape: tuple[int, ...], fill: Callable[[np.ndarray], None]) -> None:
    """Like ``_save_npy`` for an array filled in place through a memory map, so it never has to fit in RAM."""
    tmp = _tmp_name(final)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        fill(out)
        out.flush()
        del out
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)


def _write_part(final: Path, table: pa.Table, kv: Mapping[bytes, bytes]) -> None:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **kv})
    _atomic_write(final, lambda f: pq.write_table(table, f))


def _read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if fortran:
        raise ValueError("Fortran-ordered array")
    return shape, dtype


# --------------------------------------------------------------------------------------------------------------------
# Manifest


def _manifest_path(root: Path) -> Path:
    return root / MANIFEST_NAME


def _read_manifest(root: Path) -> dict[str, Any]:
    path = _manifest_path(root)
    if not path.is_file():
        if (root / META_DIR).is_dir() or (root / SHARDS_DIR).is_dir():
            raise StoreCorruptedError(
                f"{root} has store data but no {MANIFEST_NAME}; restore it from a backup or recreate it with the "
                f"store's model id and dim ({FORMAT_NAME} format {FORMAT_VERSION})"
            )
        raise StoreNotFoundError(
            f"no embedding store at {root} (missing {MANIFEST_NAME}); create one with `videoprism embed VIDEOS "
            f"--out {root}` or EmbeddingStore.open({str(root)!r}, model_id=..., dim=...)"
        )
    try:
        manifest = json.loads(path.read_text())
        ok = (
            isinstance(manifest, dict)
            and manifest.get("format") == FORMAT_NAME
            and isinstance(manifest.get("format_version"), int)
            and isinstance(manifest.get("model_id"), str)
            and isinstance(manifest.get("dim"), int)
            and manifest.get("dtype") == "float16"
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreCorruptedError(f"cannot read the manifest {path}: {e}; restore it from a backup") from e
    if not ok:
        raise StoreCorruptedError(
            f"{path} is not a valid {FORMAT_NAME} manifest (needs format, format_version, model_id, dim and "
            f"dtype='float16'); restore it from a backup"
        )
    if manifest["format_version"] > FORMAT_VERSION:
        raise StoreError(
            f"{root} uses store format {manifest['format_version']}, newer than this videoprism supports "
            f"({FORMAT_VERSION}); upgrade videoprism"
        )
    return manifest


def _check_compatible(root: Path, manifest: Mapping[str, Any], model_id: str | None, dim: int | None) -> None:
    if model_id is not None and model_id != manifest["model_id"]:
        raise StoreMismatchError(
            f"store {root} holds embeddings of model {manifest['model_id']!r}, not {model_id!r}; a store holds one "
            f"model's embeddings, so write to another --out folder"
        )
    if dim is not None and dim != manifest["dim"]:
        raise StoreMismatchError(
            f"store {root} holds {manifest['dim']}-dim embeddings, not {dim}-dim; write to another --out folder"
        )


# --------------------------------------------------------------------------------------------------------------------
# Reading parts and resolving the live rows


@dataclass
class _Snapshot:
    """Metadata of the whole store as of one listing of ``meta/``."""

    root: Path
    manifest: dict[str, Any]
    parts: list[str]  # non-replaced part files
    replaced: list[str]  # part files that a finished compaction merged (only present after a crash)
    all_rows: int  # rows over ``parts``
    ok: pa.Table  # live embedding rows, sorted by id
    failures: pa.Table  # live failure rows, sorted by id
    referenced_shards: set[str] = field(default_factory=set)  # by any row of ``parts``, live or not
    next_id: int = 0


def _empty_table() -> pa.Table:
    return METADATA_SCHEMA.empty_table()


def _load_snapshot(root: Path, manifest: dict[str, Any]) -> _Snapshot:
    meta_dir = root / META_DIR
    names = sorted(p.name for p in meta_dir.glob("*.parquet") if not p.name.startswith((".", "_")))
    tables: dict[str, pa.Table] = {}
    replaced: set[str] = set()
    compacted: set[str] = set()
    next_id = 0
    for name in names:
        path = meta_dir / name
        try:
            table = pq.ParquetFile(path).read()
        except FileNotFoundError as e:
            raise _Vanished(str(path)) from e
        except (OSError, pa.ArrowException) as e:
            raise StoreCorruptedError(f"cannot read metadata part {path}: {e}; move it out of the store") from e
        kv = table.schema.metadata or {}
        try:
            replaced.update(json.loads(kv.get(_KV_REPLACES, b"[]")))
            if kv.get(_KV_COMPACTED) == b"1":
                compacted.add(name)
            next_id = max(next_id, int(kv.get(_KV_NEXT_ID, b"0")))
        except ValueError as e:
            raise StoreCorruptedError(f"bad videoprism key-value metadata in {path}: {e}") from e
        missing = set(METADATA_SCHEMA.names) - set(table.column_names)
        if missing:
            raise StoreCorruptedError(f"metadata part {path} lacks columns {sorted(missing)}")
        try:
            table = table.select(METADATA_SCHEMA.names).replace_schema_metadata(None).cast(METADATA_SCHEMA)
        except (pa.ArrowException, ValueError) as e:
            raise StoreCorruptedError(f"metadata part {path} does not match the store schema: {e}") from e
        if table.num_rows:
            next_id = max(next_id, int(pc.max(table["id"]).as_py()) + 1)
        tables[name] = table
    live_parts = [n for n in names if n not in replaced]
    parts_tables = [
        tables[n].append_column("_part", pa.array(np.full(tables[n].num_rows, i, np.int32)))
        for i, n in enumerate(live_parts)
    ]
    if parts_tables:
        combined = pa.concat_tables(parts_tables)
    else:
        combined = _empty_table().append_column("_part", pa.array([], pa.int32()))
    referenced = set(pc.unique(combined["shard"]).drop_null().to_pylist())
    referenced |= set(pc.unique(combined["frames_shard"]).drop_null().to_pylist())
    for name in referenced:
        if not _SHARD_RE.match(name):
            raise StoreCorruptedError(f"metadata of {root} references {name!r}, which is not a shard file name")
    if len(live_parts) == 1 and live_parts[0] in compacted:
        # compact() wrote only live rows sorted by id: nothing to resolve.
        combined = combined.drop_columns(["_part"])
        ok = combined.filter(pc.is_null(combined["error"]))
        failures = combined.filter(pc.is_valid(combined["error"]))
    else:
        ok, failures = _resolve(combined)
    return _Snapshot(
        root, manifest, live_parts, sorted(replaced & set(names)), combined.num_rows, ok, failures, referenced, next_id
    )


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Dense int codes of a string column (nulls get -1) and the distinct values they index."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = column.dictionary_encode()
    return encoded.indices.fill_null(-1).to_numpy().astype(np.int64), encoded.dictionary


def _first_in_groups(keys: Sequence[np.ndarray], newest_first: np.ndarray) -> np.ndarray:
    """Indices of one row per distinct key tuple: the one that comes first in ``newest_first`` order."""
    order = np.lexsort((newest_first, *reversed(keys)))
    new_group = np.zeros(len(order), bool)
    new_group[0] = True
    for key in keys:
        k = key[order]
        new_group[1:] |= k[1:] != k[:-1]
    return order[new_group]


def _list_hash(column: pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each list<int64> value (wrapping polynomial hash; collisions are astronomically unlikely)."""
    lists = column.combine_chunks()
    lengths = lists.value_lengths().fill_null(0).to_numpy().astype(np.int64)
    values = lists.flatten().to_numpy().astype(np.uint64)  # flatten() skips nulls and honours offsets
    if len(values) == 0:
        return lengths.astype(np.uint64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    pos = np.arange(len(values)) - np.repeat(starts, lengths)
    powers = np.cumprod(np.full(int(lengths.max()), 0x9E3779B97F4A7C15, np.uint64))  # uint64 wraps silently
    mixed = (values + np.uint64(1)) * powers[pos]
    csum = np.concatenate([np.zeros(1, np.uint64), np.cumsum(mixed, dtype=np.uint64)])
    return csum[ends] - csum[starts] + lengths.astype(np.uint64)


def _float_key(column: pa.ChunkedArray) -> np.ndarray:
    x = column.to_numpy().astype(np.float64)
    return np.where(np.isnan(x), -np.inf, x)


def _resolve(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Applies the live-row rules of the module docstring; returns (embedding rows, failure rows), sorted by id."""
    if table.num_rows == 0:
        return _empty_table(), _empty_table()
    ids = table["id"].to_numpy()
    # Duplicate ids only occur when a compaction died between writing its part and deleting the merged ones.
    if not (ids[1:] > ids[:-1]).all():
        uniq, first = np.unique(ids, return_index=True)
        if len(uniq) < len(ids):
            table = table.take(np.sort(first))
            ids = table["id"].to_numpy()
    path, uniq_paths = _codes(table["path"])
    n_paths = len(uniq_paths)
    size = table["size"].to_numpy()
    mtime = table["mtime_ns"].to_numpy()
    newest = _first_in_groups([path], -ids)
    cur_size = np.empty(n_paths, np.int64)
    cur_mtime = np.empty(n_paths, np.int64)
    cur_size[path[newest]] = size[newest]
    cur_mtime[path[newest]] = mtime[newest]
    live = (size == cur_size[path]) & (mtime == cur_mtime[path])
    failed = table["error"].is_valid().to_numpy(zero_copy_only=False)
    ok = live & ~failed

    # Clip duplicates can only exist for paths whose embedding rows span several parts.
    part = table["_part"].to_numpy()
    ok_idx = np.flatnonzero(ok)
    cand = ok_idx[:0]
    if len(ok_idx) and part[ok_idx].min() != part[ok_idx].max():
        order = ok_idx[np.lexsort((part[ok_idx], path[ok_idx]))]
        same_path = path[order][1:] == path[order][:-1]
        multi = np.zeros(n_paths, bool)
        multi[path[order][1:][same_path & (part[order][1:] != part[order][:-1])]] = True
        cand = ok_idx[multi[path[ok_idx]]]
    if len(cand):
        sub = table.take(cand)
        kind, _ = _codes(sub["kind"])
        keys = [path[cand], kind, _float_key(sub["start"]), _float_key(sub["end"]), _list_hash(sub["frame_indices"])]
        ok[cand] = False
        ok[cand[_first_in_groups(keys, -ids[cand])]] = True

    fail = np.zeros(len(ids), bool)
    fail_idx = np.flatnonzero(live & failed)
    if len(fail_idx):
        keep = fail_idx[_first_in_groups([path[fail_idx]], -ids[fail_idx])]
        newest_ok = np.full(n_paths, -1, np.int64)
        related = np.flatnonzero(ok & np.isin(path, path[keep]))  # usually few: ufunc.at is slow on many rows
        np.maximum.at(newest_ok, path[related], ids[related])
        fail[keep[ids[keep] > newest_ok[path[keep]]]] = True

    def take(mask: np.ndarray) -> pa.Table:
        idx = np.flatnonzero(mask)
        if len(idx) == len(ids) and (len(ids) < 2 or (ids[1:] > ids[:-1]).all()):
            return table.drop_columns(["_part"])  # the common case: every row live, already sorted
        return table.take(idx[np.argsort(ids[idx], kind="stable")]).drop_columns(["_part"])

    return take(ok), take(fail)


def _runs(codes: np.ndarray, rows: np.ndarray) -> list[tuple[int, int]]:
    """Maximal [start, stop) ranges over which ``codes`` is constant and ``rows`` increases by one."""
    n = len(rows)
    if n == 0:
        return []
    brk = np.flatnonzero((codes[1:] != codes[:-1]) | (rows[1:] != rows[:-1] + 1)) + 1
    starts = np.concatenate([[0], brk])
    stops = np.concatenate([brk, [n]])
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


# --------------------------------------------------------------------------------------------------------------------
# Lazily concatenated shard rows


@dataclass(frozen=True)
class _Segment:
    start: int  # first global row
    stop: int
    shard: str | None  # relative shard path; None: rows without data (NaN)
    row: int  # first row inside the shard


class ConcatenatedRows:
    """Read-only, lazily concatenated view of row ranges of several memory-mapped ``.npy`` shards.

    Supports ``shape``, ``dtype``, ``len()``, indexing with an int, a slice, an int or bool array (optionally followed
    by more indices in a tuple), and ``np.asarray(view)``, which materialises the whole matrix in memory. At most a
    few shards are memory-mapped at a time, so stores with thousands of shards do not run out of file descriptors.
    """

    def __init__(
        self,
        root: Path,
        segments: list[_Segment],
        row_shape: tuple[int, ...],
        pinned: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self._root = root
        self._segments = segments
        self._starts = np.array([s.start for s in segments], np.int64)
        self._n = segments[-1].stop if segments else 0
        self._row_shape = tuple(row_shape)
        self._pinned = dict(pinned or {})
        self._open: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n, *self._row_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float16)

    @property
    def ndim(self) -> int:
        return 1 + len(self._row_shape)

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"ConcatenatedRows(shape={self.shape}, dtype=float16, segments={len(self._segments)})"

    def _shard(self, name: str) -> np.ndarray:
        if name in self._pinned:
            return self._pinned[name]
        arr = self._open.pop(name, None)
        if arr is None:
            try:
                arr = np.load(self._root / name, mmap_mode="r")
            except FileNotFoundError:
                raise StoreError(
                    f"{self._root / name} was removed (by a compaction) after this reader was opened; reopen the "
                    f"store with open_store"
                ) from None
            while len(self._open) >= _MAX_OPEN_SHARDS:
                self._open.popitem(last=False)
        self._open[name] = arr
        return arr

    def _segment_array(self, seg: _Segment, lo: int = 0, hi: int | None = None) -> np.ndarray:
        hi = seg.stop - seg.start if hi is None else hi
        if seg.shard is None:
            return np.broadcast_to(np.array(np.nan, np.float16), (hi - lo, *self._row_shape))
        return self._shard(seg.shard)[seg.row + lo : seg.row + hi]

    def iter_segments(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yields ``(first global row, rows)`` for each contiguous piece, in row order (no copies)."""
        for seg in self._segments:
            yield seg.start, self._segment_array(seg)

    def _take(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), *self._row_shape), np.float16)
        seg_of = np.searchsorted(self._starts, idx, side="right") - 1
        for s in np.unique(seg_of):
            sel = np.flatnonzero(seg_of == s)
            seg = self._segments[s]
            out[sel] = self._segment_array(seg)[idx[sel] - seg.start]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self._n if key < 0 else 0)
            if not 0 <= i < self._n:
                raise IndexError(f"row {key} out of range for {self._n} rows")
            out = self._take(np.array([i]))[0]
            return out[rest] if rest else out
        if isinstance(key, slice):
            start, stop, step = key.indices(self._n)
            idx = np.arange(start, stop, step)
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                if idx.shape != (self._n,):
                    raise IndexError(f"boolean index of shape {idx.shape} does not match {self._n} rows")
                idx = np.flatnonzero(idx)
            elif not np.issubdtype(idx.dtype, np.integer):
                raise IndexError(f"unsupported index {key!r}")
            idx = np.where(idx < 0, idx + self._n, idx).astype(np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= self._n):
                raise IndexError(f"index out of range for {self._n} rows")
        out = self._take(idx.reshape(-1)).reshape(*idx.shape, *self._row_shape)
        return out[(slice(None),) * idx.ndim + rest] if rest else out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = np.empty(self.shape, np.float16)
        for start, arr in self.iter_segments():
            out[start : start + len(arr)] = arr
        return out if dtype is None else out.astype(dtype, copy=False)


# --------------------------------------------------------------------------------------------------------------------
# Exact top-k kernels


class _Workspace(threading.local):
    """Per-thread scratch buffers reused across searches: first-touching a 48 MiB buffer costs more than a search."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        size = int(np.prod(shape))
        arr = self.arrays.get(name)
        if arr is None or arr.size < size:
            arr = self.arrays[name] = np.empty(size, np.float32)
        return arr[:size].reshape(shape)


_ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray, _Workspace], None]


def _torch_scores() -> _ScoreFn | None:
    try:
        import torch
    except ImportError:
        return None

    def scores(block: np.ndarray, q: np.ndarray, out: np.ndarray, ws: _Workspace) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only memmap: torch warns, we never write through it
            src = torch.from_numpy(np.ascontiguousarray(block))
        buf = torch.from_numpy(ws.get("block", block.shape))
        with torch.no_grad():
            buf.copy_(src)  # vectorised (F16C) and multi-threaded
            torch.mm(torch.from_numpy(q), buf.t(), out=torch.from_numpy(out))

    return scores


def _numpy_scores(pool: ThreadPoolExecutor | None, workers: int) -> _ScoreFn:
    def dot_rows(block: np.ndarray, q: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
        buf = np.empty((_NUMPY_SUB_ROWS, block.shape[1]), np.float32)
        for s in range(lo, hi, _NUMPY_SUB_ROWS):
            e = min(hi, s + _NUMPY_SUB_ROWS)
            np.copyto(buf[: e - s], block[s:e])  # numpy's fp16 cast is scalar code; it releases the GIL
            np.dot(buf[: e - s], q[0], out=out[0, s:e])  # a gemv this small stays single-threaded in BLAS

    def scores(block: np.ndarray, q: np.ndarray, out: np.ndarray, ws: _Workspace) -> None:
        cuts = np.linspace(0, len(block), workers + 1).astype(int)
        parallel = pool is not None and len(block) >= 2 * _NUMPY_SUB_ROWS
        if len(q) == 1:  # one query: each thread converts and scores its rows in L2-sized pieces
            if not parallel:
                dot_rows(block, q, out, 0, len(block))
                return
            for f in [pool.submit(dot_rows, block, q, out, lo, hi) for lo, hi in itertools.pairwise(cuts)]:
                f.result()
            return
        buf = ws.get("block", block.shape)  # several queries: convert in parallel, then one gemm
        if not parallel:
            np.copyto(buf, block)
        else:
            for f in [pool.submit(np.copyto, buf[lo:hi], block[lo:hi]) for lo, hi in itertools.pairwise(cuts)]:
                f.result()
        np.matmul(q, buf.T, out=out)  # in this thread, so BLAS threads are not nested in ours

    return scores


def _exact_topk(
    segments: Iterable[tuple[int, np.ndarray]],
    queries: np.ndarray,
    k: int,
    mask: np.ndarray | None,
    block_rows: int,
    kernel: str,
    workspace: _Workspace,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows by inner product for unit-norm float32 ``queries`` (Q, D); returns (scores, rows), (Q, k')."""
    if kernel not in ("auto", "torch", "numpy"):
        raise ValueError(f"unknown kernel {kernel!r}; expected 'auto', 'torch' or 'numpy'")
    if block_rows < 1:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    fn = _torch_scores() if kernel in ("auto", "torch") else None
    if fn is None and kernel == "torch":
        raise ImportError("kernel='torch' needs PyTorch; use kernel='numpy'")
    with contextlib.ExitStack() as stack:
        if fn is None:
            workers = min(8, os.cpu_count() or 1)
            pool = stack.enter_context(ThreadPoolExecutor(workers)) if workers > 1 else None
            fn = _numpy_scores(pool, workers)
        return _topk_loop(segments, queries, k, mask, block_rows, fn, workspace)


def _topk_loop(
    segments: Iterable[tuple[int, np.ndarray]],
    queries: np.ndarray,
    k: int,
    mask: np.ndarray | None,
    block_rows: int,
    fn: _ScoreFn,
    workspace: _Workspace,
) -> tuple[np.ndarray, np.ndarray]:
    n_q = len(queries)
    q = np.ascontiguousarray(queries, np.float32)
    block_rows = max(1, min(block_rows, _MAX_SCORES // n_q))  # bounds the (Q, block) score matrix
    cand_scores: list[np.ndarray] = []
    cand_rows: list[np.ndarray] = []
    for seg_start, arr in segments:
        for s in range(0, len(arr), block_rows):
            m = min(len(arr), s + block_rows) - s
            out = workspace.get("scores", (n_q, m))  # (Q, rows): the partition below runs along contiguous memory
            fn(arr[s : s + m], q, out, workspace)
            g0 = seg_start + s
            if mask is not None:
                out[:, ~mask[g0 : g0 + m]] = -np.inf
            if k < m:
                idx = np.argpartition(out, m - k, axis=1)[:, m - k :]
                cand_scores.append(np.take_along_axis(out, idx, axis=1))
                cand_rows.append(idx + g0)
            else:
                cand_scores.append(out.copy())
                cand_rows.append(np.broadcast_to(np.arange(g0, g0 + m), (n_q, m)))
    if not cand_scores:
        return np.empty((n_q, 0), np.float32), np.empty((n_q, 0), np.int64)
    scores = np.concatenate(cand_scores, axis=1)
    rows = np.concatenate(cand_rows, axis=1).astype(np.int64)
    k_eff = min(k, scores.shape[1] if mask is None else int(mask.sum()))
    order = np.lexsort((rows, -scores), axis=-1)[:, :k_eff]  # ties: lower row (= lower id) first
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


def _prepare_queries(queries: Any, dim: int) -> tuple[np.ndarray, bool]:
    q = np.asarray(queries, dtype=np.float32)
    single = q.ndim == 1
    if single:
        q = q[None]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape ({dim},) or (Q, {dim}), got {np.shape(queries)}")
    if not np.isfinite(q).all():
        raise ValueError("queries contain NaN or infinite values")
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("queries contain an all-zero vector, which has no direction to search for")
    return q / norms, single


def _kind_mask(metadata: pa.Table, kind: str | Sequence[str] | None) -> np.ndarray | None:
    if kind is None:
        return None
    kinds = [kind] if isinstance(kind, str) else list(kind)
    bad = [x for x in kinds if x not in KINDS]
    if bad:
        raise ValueError(f"unknown kind {bad}; expected some of {list(KINDS)}")
    return pc.is_in(metadata["kind"], value_set=pa.array(kinds, pa.string())).to_numpy(zero_copy_only=False)


# --------------------------------------------------------------------------------------------------------------------
# Reader


def open_store(path: str | os.PathLike[str], *, lance_dir: str | os.PathLike[str] | None = None) -> StoreReader:
    """Opens a store read-only, as a consistent snapshot of its committed rows.

    Args:
        path: Store folder.
        lance_dir: Where ``backend="lance"`` keeps its derived LanceDB table; ``STORE/lance`` when None.

    Raises:
        StoreNotFoundError: No store at ``path``.
        StoreCorruptedError: Unreadable manifest or metadata, or metadata pointing to missing or malformed shards.
    """
    root = Path(path)
    manifest = _read_manifest(root)
    for attempt in range(_OPEN_RETRIES):
        try:
            return StoreReader(_load_snapshot(root, manifest), lance_dir=lance_dir)
        except _Vanished as e:  # a concurrent compaction deleted a file we listed; the next listing is consistent
            if attempt == _OPEN_RETRIES - 1:
                raise StoreCorruptedError(f"{e} is referenced by the metadata of {root} but missing") from None
    raise AssertionError("unreachable")


class StoreReader:
    """Read-only snapshot of a store: metadata, embeddings and search. Create it with ``open_store``.

    Rows are the live embedding rows (see the module docstring) sorted by id; row ``i`` of ``ids``, ``metadata``,
    ``embeddings`` and ``frame_embeddings`` describe the same clip. Failed videos are in ``failures``.
    """

    def __init__(self, snapshot: _Snapshot, *, lance_dir: str | os.PathLike[str] | None = None) -> None:
        self._snap = snapshot
        self.path = snapshot.root
        self.manifest = dict(snapshot.manifest)
        self.model_id: str = snapshot.manifest["model_id"]
        self.dim: int = snapshot.manifest["dim"]
        self.metadata: pa.Table = snapshot.ok
        self.failures: pa.Table = snapshot.failures
        self.ids: np.ndarray = snapshot.ok["id"].to_numpy()
        self._lance_dir = Path(lance_dir) if lance_dir is not None else self.path / LANCE_DIR
        self._embeddings: np.ndarray | ConcatenatedRows | None = None
        self._frames: np.ndarray | ConcatenatedRows | None = None
        self._pinned: dict[str, np.ndarray] = {}
        self._workspace = _Workspace()
        self._emb_segments, self._frame_segments, self._frames_shape = self._plan()

    def _plan(self) -> tuple[list[_Segment], list[_Segment], tuple[int, ...] | None]:
        ok = self.metadata
        n = ok.num_rows
        if n and (ok["shard"].null_count or ok["row"].null_count):
            raise StoreCorruptedError(f"embedding rows of {self.path} without shard/row; the metadata is corrupted")
        rows = ok["row"].to_numpy() if n else np.empty(0, np.int64)
        segments = []
        for column in ("shard", "frames_shard"):
            codes, values = _codes(ok[column])
            names = values.to_pylist()
            segments.append([_Segment(a, b, names[c] if (c := codes[a]) >= 0 else None, int(rows[a]))
                             for a, b in _runs(codes, rows)])  # fmt: skip
        emb, frames = segments
        frames_shape: tuple[int, ...] | None = None
        extent: dict[str, int] = {}
        for seg in emb + frames:
            if seg.shard is not None:
                extent[seg.shard] = max(extent.get(seg.shard, 0), seg.row + seg.stop - seg.start)
        # Map all shards now when there are few (always after compact()), so a concurrent compaction deleting them
        # cannot break this snapshot; with many, only check headers and map lazily.
        pin = len(extent) <= _MAX_OPEN_SHARDS
        for name, needed in extent.items():
            try:
                if pin:
                    arr = np.load(self.path / name, mmap_mode="r")
                    shape, dtype = arr.shape, arr.dtype
                    self._pinned[name] = arr
                else:
                    shape, dtype = _read_npy_header(self.path / name)
            except FileNotFoundError as e:
                raise _Vanished(str(self.path / name)) from e
            except (OSError, ValueError) as e:
                raise StoreCorruptedError(f"cannot read shard {self.path / name}: {e}") from e
            want_ndim = 3 if name.endswith(".frames.npy") else 2
            if dtype != np.float16 or len(shape) != want_ndim or shape[-1] != self.dim or shape[0] < needed:
                raise StoreCorruptedError(
                    f"shard {self.path / name} has shape {shape} and dtype {dtype}; the metadata needs float16 rows "
                    f"0..{needed - 1} of dim {self.dim}"
                )
            if want_ndim == 3:
                if frames_shape is not None and frames_shape != shape[1:]:
                    raise StoreCorruptedError(
                        f"frame shards of {self.path} disagree on shape: {frames_shape} vs {shape}"
                    )
                frames_shape = tuple(shape[1:])
        if frames_shape is None:
            frames = []
        return emb, frames, frames_shape

    def __len__(self) -> int:
        return self.metadata.num_rows

    def __repr__(self) -> str:
        return (
            f"StoreReader({str(self.path)!r}, model_id={self.model_id!r}, dim={self.dim}, rows={len(self)}, "
            f"failures={self.failures.num_rows}, shards={len({s.shard for s in self._emb_segments})})"
        )

    @property
    def is_compacted(self) -> bool:
        """Whether the store is one metadata part with only live rows and one contiguous shard per matrix."""
        return (
            len(self._snap.parts) == 1
            and self._snap.all_rows == len(self) + self.failures.num_rows
            and len(self._emb_segments) <= 1
            and len({seg.shard for seg in self._frame_segments} - {None}) <= 1
            and all(seg.shard is None or seg.row == seg.start for seg in self._frame_segments)
        )

    def _matrix(self, segments: list[_Segment], row_shape: tuple[int, ...]) -> np.ndarray | ConcatenatedRows:
        if not segments:
            return np.empty((0, *row_shape), np.float16)
        view = ConcatenatedRows(self.path, segments, row_shape, self._pinned)
        if len(segments) == 1 and segments[0].shard is not None:
            return view._segment_array(segments[0])  # a plain np.memmap slice
        return view

    @property
    def embeddings(self) -> np.ndarray | ConcatenatedRows:
        """(rows, dim) float16 unit-norm embeddings: an ``np.memmap`` when compacted, else a ``ConcatenatedRows``."""
        if self._embeddings is None:
            self._embeddings = self._matrix(self._emb_segments, (self.dim,))
        return self._embeddings

    @property
    def frame_embeddings(self) -> np.ndarray | ConcatenatedRows | None:
        """(rows, frames, dim) float16 per-frame embeddings (NaN for rows written without them), or None if none."""
        if self._frames_shape is None:
            return None
        if self._frames is None:
            self._frames = self._matrix(self._frame_segments, self._frames_shape)
        return self._frames

    def _iter_embeddings(self) -> Iterator[tuple[int, np.ndarray]]:
        view = ConcatenatedRows(self.path, self._emb_segments, (self.dim,), self._pinned)
        yield from view.iter_segments()

    def row(self, i: int) -> dict[str, Any]:
        """Metadata of row ``i`` as a dict.

        Args:
            i: Row index (not id); ``np.searchsorted(reader.ids, id)`` maps an id to its row.
        """
        return self.metadata.slice(i, 1).to_pylist()[0]

    def _check_searchable(self, k: int) -> None:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if len(self) == 0:
            detail = (
                f" ({self.failures.num_rows} videos failed to decode; see .failures)" if self.failures.num_rows else ""
            )
            raise EmptyStoreError(
                f"store {self.path} has no embeddings to search{detail}; add videos with `videoprism embed VIDEOS "
                f"--out {self.path}`"
            )

    def topk(
        self,
        queries: Any,
        k: int = 10,
        kind: str | Sequence[str] | None = None,
        *,
        block_rows: int = DEFAULT_BLOCK_ROWS,
        kernel: str = "auto",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine top-k as arrays: the fast path under ``search``.

        Args:
            queries: (dim,) or (Q, dim) query embeddings; normalised here.
            k: Results per query; fewer when fewer rows match.
            kind: Only rows of this kind or these kinds ("clip", "window", "video").
            block_rows: Rows scored per step (converted to float32, multiplied with all queries, top-k partitioned).
                Larger blocks mean fewer thread synchronisations, which matters when other processes load the CPU.
            kernel: "torch" (vectorised conversion, multi-threaded), "numpy" (thread pool) or "auto" (torch if
                importable).

        Returns:
            ``(scores, rows)``, each (Q, k') with k' = min(k, matching rows), best first; ``rows`` index ``ids`` and
            ``metadata``. For a (dim,) query both are 1-D.

        Raises:
            ValueError: Malformed, NaN or zero queries, or bad ``k`` / ``kind``.
            EmptyStoreError: The store has no embeddings.
        """
        self._check_searchable(k)
        q, single = _prepare_queries(queries, self.dim)
        mask = _kind_mask(self.metadata, kind)
        scores, rows = _exact_topk(self._iter_embeddings(), q, int(k), mask, int(block_rows), kernel, self._workspace)
        return (scores[0], rows[0]) if single else (scores, rows)

    def search(
        self,
        queries: Any,
        k: int = 10,
        kind: str | Sequence[str] | None = None,
        *,
        backend: str = "exact",
        block_rows: int = DEFAULT_BLOCK_ROWS,
        kernel: str = "auto",
        nprobes: int = 32,
        refine_factor: int | None = 4,
    ) -> list[SearchHit] | list[list[SearchHit]]:
        """Finds the stored clips most similar (cosine) to each query.

        Args:
            queries: (dim,) or (Q, dim) query embeddings (text or video embeddings of the store's model).
            k: Hits per query; fewer when fewer rows match.
            kind: Only rows of this kind or these kinds ("clip", "window", "video").
            backend: "exact" (blocked brute force over the fp16 matrix) or "lance" (LanceDB table built from the
                store on first use, IVF-PQ indexed when it has at least ``LANCE_INDEX_MIN_ROWS`` rows).
            block_rows: Exact backend: rows scored per step (see ``topk``).
            kernel: Exact backend: "auto", "torch" or "numpy" (see ``topk``).
            nprobes: Lance backend: IVF partitions probed per query.
            refine_factor: Lance backend: re-rank ``k * refine_factor`` candidates with full vectors (None: off).

        Returns:
            For a (dim,) query, its hits; for (Q, dim) queries, one list of hits per query. Hits are
            ``SearchHit(score, id, metadata)`` sorted by score, best first.

        Raises:
            ValueError: Malformed, NaN or zero queries, or bad ``k`` / ``kind`` / ``backend``.
            EmptyStoreError: The store has no embeddings.
        """
        scores: Sequence[np.ndarray]
        rows: Sequence[np.ndarray]
        if backend == "exact":
            top_scores, top_rows = self.topk(queries, k, kind, block_rows=block_rows, kernel=kernel)
            scores, rows = np.atleast_2d(top_scores), np.atleast_2d(top_rows)
            single = np.ndim(queries) == 1
        elif backend == "lance":
            self._check_searchable(k)
            q, single = _prepare_queries(queries, self.dim)
            _kind_mask(self.metadata, kind)  # validates kind
            scores, rows = self._lance_topk(q, int(k), kind, nprobes, refine_factor)
        else:
            raise ValueError(f"unknown backend {backend!r}; expected 'exact' or 'lance'")
        flat = [r for rr in rows for r in rr]
        metas = self.metadata.take(np.asarray(flat, np.int64)).to_pylist() if flat else []
        hits: list[list[SearchHit]] = []
        pos = 0
        for sc, rr in zip(scores, rows, strict=True):
            hits.append(
                [SearchHit(float(s), int(m["id"]), m) for s, m in zip(sc, metas[pos : pos + len(rr)], strict=True)]
            )
            pos += len(rr)
        return hits[0] if single else hits

    # ---------------------------------------------------------------------------------------------------------------
    # LanceDB backend

    def _lance_name(self) -> str:
        digest = hashlib.sha1(json.dumps([self.model_id, self.dim, sorted(self._snap.parts)]).encode()).hexdigest()
        return f"emb_{digest[:16]}"

    def lance_table(self, *, index: str = "auto", rebuild: bool = False) -> Any:
        """Returns the LanceDB table mirroring this snapshot, building it (and its index) on first use.

        The table lives in ``lance_dir`` (default ``STORE/lance``) under a name derived from the store's metadata
        parts, so it is rebuilt automatically after the store changes; older tables there are dropped.

        Args:
            index: "auto" (IVF-PQ when the store has at least ``LANCE_INDEX_MIN_ROWS`` rows), "ivf_pq" or "none"
                (exact flat scans in Lance).
            rebuild: Drop and rebuild the table even if it exists.

        Raises:
            ImportError: lancedb is not installed.
        """
        if index not in ("auto", "ivf_pq", "none"):
            raise ValueError(f"unknown index {index!r}; expected 'auto', 'ivf_pq' or 'none'")
        os.environ.setdefault("LANCEDB_LOG", "error")  # lance logs routine warnings (e.g. "creating dataset")
        try:
            import lancedb
        except ImportError as e:
            raise ImportError("backend='lance' needs lancedb: pip install 'videoprism[lance]'") from e
        self._lance_dir.mkdir(parents=True, exist_ok=True)
        name = self._lance_name()
        with _flock(self._lance_dir / LOCK_NAME, blocking=True):
            db = lancedb.connect(str(self._lance_dir))
            listing = db.list_tables()
            existing = list(getattr(listing, "tables", listing))  # a response object in newer lancedb, else a list
            if name in existing and not rebuild:
                table = db.open_table(name)
            else:
                table = db.create_table(name, data=self._lance_batches(), schema=self._lance_schema(), mode="overwrite")
            for other in existing:
                if other != name and other.startswith("emb_"):
                    db.drop_table(other)
            want_index = index == "ivf_pq" or (index == "auto" and len(self) >= LANCE_INDEX_MIN_ROWS)
            if want_index and not table.list_indices():
                from lancedb.index import IvfPq

                sub = next(
                    s
                    for s in (self.dim // 16, self.dim // 8, self.dim // 4, self.dim // 2, 1)
                    if s and self.dim % s == 0
                )
                parts = max(1, min(int(np.sqrt(len(self))), len(self) // 256))
                table.create_index(
                    "vector", config=IvfPq(distance_type="cosine", num_partitions=parts, num_sub_vectors=sub)
                )
        return table

    def _lance_schema(self) -> pa.Schema:
        return pa.schema([("id", pa.int64()), ("kind", pa.string()), ("vector", pa.list_(pa.float16(), self.dim))])

    def _lance_batches(self) -> Iterator[pa.RecordBatch]:
        schema = self._lance_schema()
        for start, arr in self._iter_embeddings():
            for s in range(0, len(arr), _CHUNK_ROWS):
                block = np.ascontiguousarray(arr[s : s + _CHUNK_ROWS])
                lo, hi = start + s, start + s + len(block)
                vectors = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1), pa.float16()), self.dim)
                yield pa.record_batch(
                    [pa.array(self.ids[lo:hi]), self.metadata["kind"].slice(lo, hi - lo).combine_chunks(), vectors],
                    schema=schema,
                )

    def _lance_topk(
        self, q: np.ndarray, k: int, kind: str | Sequence[str] | None, nprobes: int, refine_factor: int | None
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        table = self.lance_table()
        where = None
        if kind is not None:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            where = "kind IN (" + ", ".join(f"'{x}'" for x in kinds) + ")"  # validated against KINDS
        all_scores, all_rows = [], []
        for vec in q:
            query = table.search(vec, vector_column_name="vector").distance_type("cosine").limit(k).nprobes(nprobes)
            if refine_factor:
                query = query.refine_factor(refine_factor)
            if where:
                query = query.where(where, prefilter=True)
            res = query.select(["id", "_distance"]).to_arrow()
            all_rows.append(np.searchsorted(self.ids, res["id"].to_numpy()).astype(np.int64))
            all_scores.append(1.0 - res["_distance"].to_numpy().astype(np.float32))
        return all_scores, all_rows  # per query: approximate search may find fewer than k for some


# --------------------------------------------------------------------------------------------------------------------
# Writer


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass
class _Video:
    """Resume state of one path: its current key and how much of it is stored."""

    size: int
    mtime_ns: int
    ok_rows: int = 0
    expected: int = 0  # max video_rows seen (0: unknown)
    failed: bool = False
    clips: set[tuple[Any, ...]] | None = None  # clip keys, kept only while the video is incomplete

    @property
    def done(self) -> bool:
        return self.failed or (self.ok_rows > 0 and self.ok_rows >= self.expected)


def _nan_none(x: float) -> float | None:
    return None if x is None or x != x else float(x)


def _clip_key(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    return (rec["kind"], _nan_none(rec["start"]), _nan_none(rec["end"]), tuple(rec["frame_indices"]))


class EmbeddingStore:
    """Writer of a store: appends batches durably and tells a resumable pipeline which videos are done.

    Only one ``EmbeddingStore`` may be open on a store at a time (an OS file lock enforces it; it is released on
    ``close()`` or when the process dies). Readers (``open_store``) may run concurrently and see whole batches only.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], lock_fd: int | None) -> None:
        self.path = root
        self.manifest = manifest
        self.model_id: str = manifest["model_id"]
        self.dim: int = manifest["dim"]
        self._lock_fd = lock_fd
        self._videos: dict[str, _Video] = {}
        self._next_id = 0
        self._frames_shape: tuple[int, ...] | None = None
        self._rows = 0
        self._failures = 0
        self._recover()

    # ---------------------------------------------------------------------------------------------------------------
    # Opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        model_id: str | None = None,
        dim: int | None = None,
        create: bool = True,
    ) -> EmbeddingStore:
        """Opens a store for writing, creating it if needed, and cleans up after any interrupted write.

        Args:
            path: Store folder.
            model_id: Model whose embeddings the store holds; required to create, checked when opening.
            dim: Embedding dimension; required to create, checked when opening.
            create: Create the store if it does not exist.

        Raises:
            StoreNotFoundError: No store at ``path`` and ``create`` is False.
            StoreMismatchError: The store holds another model's or dimension's embeddings.
            StoreLockedError: Another process is writing to the store.
            StoreCorruptedError: Unreadable manifest or metadata.
            StoreError: ``path`` is a non-empty folder that is not a store, or creation lacks ``model_id``/``dim``.
        """
        root = Path(path)
        if not _manifest_path(root).is_file():
            if not create:
                _read_manifest(root)  # raises the specific error
            if root.exists() and not root.is_dir():
                raise StoreError(f"{root} exists and is not a folder; choose another store path")
            if root.is_dir() and any(p.name != LOCK_NAME for p in root.iterdir()):
                if (root / META_DIR).is_dir() or (root / SHARDS_DIR).is_dir():
                    _read_manifest(root)  # store data without a manifest: raises StoreCorruptedError
                raise StoreError(f"{root} is a non-empty folder that is not an embedding store; use an empty folder")
            if model_id is None or dim is None:
                raise StoreError(f"creating a store at {root} needs model_id and dim")
            if not isinstance(dim, int) or dim <= 0:
                raise StoreError(f"dim must be a positive int, got {dim!r}")
            root.mkdir(parents=True, exist_ok=True)
        lock_fd = cls._lock(root)
        try:
            if not _manifest_path(root).is_file():  # still absent under the lock: we create it
                (root / SHARDS_DIR).mkdir(exist_ok=True)
                (root / META_DIR).mkdir(exist_ok=True)
                manifest = {
                    "format": FORMAT_NAME,
                    "format_version": FORMAT_VERSION,
                    "model_id": model_id,
                    "dim": dim,
                    "dtype": "float16",
                    "normalized": True,
                    "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                }
                _atomic_write(_manifest_path(root), lambda f: f.write(json.dumps(manifest, indent=2).encode() + b"\n"))
            manifest = _read_manifest(root)
            _check_compatible(root, manifest, model_id, dim)
            for sub in (SHARDS_DIR, META_DIR):
                if not (root / sub).is_dir():
                    raise StoreCorruptedError(f"{root / sub} is missing; the store is incomplete")
            return cls(root, manifest, lock_fd)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    @staticmethod
    def _lock(root: Path) -> int | None:
        if fcntl is None:
            return None
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"another process is writing to {root}; wait for it to finish (read-only access: open_store)"
            ) from None
        return fd

    def close(self) -> None:
        """Releases the writer lock. Everything written is already durable."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._rows

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}, model_id={self.model_id!r}, dim={self.dim}, rows={self._rows})"

    @property
    def num_failures(self) -> int:
        """Number of videos recorded as failed (live failure rows)."""
        return self._failures

    def _check_open(self) -> None:
        if self._lock_fd is None and fcntl is not None:
            raise StoreError(f"store {self.path} was closed; reopen it with EmbeddingStore.open")

    def _recover(self) -> None:
        """Finishes an interrupted compaction, removes temporaries and orphan shards, and loads the resume state."""
        for sub in (SHARDS_DIR, META_DIR):
            for p in (self.path / sub).glob(f"{_TMP_PREFIX}*"):
                p.unlink(missing_ok=True)
        snap = _load_snapshot(self.path, self.manifest)
        for name in snap.replaced:
            (self.path / META_DIR / name).unlink(missing_ok=True)
        for p in (self.path / SHARDS_DIR).glob("*.npy"):
            if f"{SHARDS_DIR}/{p.name}" not in snap.referenced_shards:
                p.unlink(missing_ok=True)  # written by a batch whose metadata never committed
        _fsync_dir(self.path / SHARDS_DIR)
        _fsync_dir(self.path / META_DIR)
        self._load_state(snap)

    def _load_state(self, snap: _Snapshot) -> None:
        self._next_id = snap.next_id
        self._rows = snap.ok.num_rows
        self._failures = snap.failures.num_rows
        self._frames_shape = None
        for name in snap.referenced_shards:
            if name.endswith(".frames.npy"):
                with contextlib.suppress(OSError, ValueError):
                    self._frames_shape = tuple(_read_npy_header(self.path / name)[0][1:])
                    break
        videos: dict[str, _Video] = {}
        ok = snap.ok
        if ok.num_rows:
            grouped = ok.group_by("path").aggregate(
                [("size", "max"), ("mtime_ns", "max"), ("id", "count"), ("video_rows", "max")]
            )
            cols = [grouped[c].to_pylist() for c in ("path", "size_max", "mtime_ns_max", "id_count", "video_rows_max")]
            for path, size, mtime, count, expected in zip(*cols, strict=True):
                videos[path] = _Video(size, mtime, count, expected or 0)
        for path, size, mtime in zip(
            *(snap.failures[c].to_pylist() for c in ("path", "size", "mtime_ns")), strict=True
        ):
            videos.setdefault(path, _Video(size, mtime)).failed = True
        incomplete = [p for p, v in videos.items() if not v.done and v.ok_rows]
        if incomplete:
            sub = ok.filter(pc.is_in(ok["path"], value_set=pa.array(incomplete)))
            for rec in sub.to_pylist():
                v = videos[rec["path"]]
                v.clips = v.clips or set()
                v.clips.add(_clip_key(rec))
        self._videos = videos

    # ---------------------------------------------------------------------------------------------------------------
    # Resume API

    def is_done(self, path: str, size: int, mtime_ns: int) -> bool:
        """Whether this version of a video needs no more work: fully embedded, or recorded as failed.

        A video is fully embedded when it has at least one embedding row and as many as the largest ``video_rows``
        among them. A file with another size or mtime than the stored rows is not done; writing it supersedes them.

        Args:
            path: Video path, exactly as passed to ``write_batch`` (see ``file_key``).
            size: File size in bytes.
            mtime_ns: File modification time in nanoseconds.
        """
        v = self._videos.get(os.fspath(path))
        return v is not None and v.size == size and v.mtime_ns == mtime_ns and v.done

    def status(self, path: str) -> dict[str, Any] | None:
        """The stored state of a path (key, rows stored and expected, failed), or None if it has no live rows.

        Args:
            path: Video path as written.
        """
        v = self._videos.get(os.fspath(path))
        if v is None:
            return None
        return {
            "size": v.size,
            "mtime_ns": v.mtime_ns,
            "rows": v.ok_rows,
            "expected_rows": v.expected or None,
            "failed": v.failed,
            "done": v.done,
        }

    # ---------------------------------------------------------------------------------------------------------------
    # Writing

    def _normalise_records(self, records: Sequence[Mapping[str, Any]], *, failure: bool) -> list[dict[str, Any]]:
        out = []
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                raise TypeError(f"record {i} is a {type(rec).__name__}, expected a dict")
            unknown = set(rec) - _RECORD_KEYS
            if unknown:
                raise ValueError(f"record {i} has unknown keys {sorted(unknown)}; allowed: {sorted(_RECORD_KEYS)}")
            missing = {"path", "size", "mtime_ns"} - set(rec)
            if missing:
                raise ValueError(f"record {i} lacks {sorted(missing)}")
            model_id = rec.get("model_id") or self.model_id
            if model_id != self.model_id:
                raise StoreMismatchError(
                    f"record {i} is from model {model_id!r}; store {self.path} holds {self.model_id!r}"
                )
            kind = rec.get("kind") or ("video" if failure else "clip")
            if kind not in KINDS:
                raise ValueError(f"record {i} has kind {kind!r}; expected one of {list(KINDS)}")
            error = rec.get("error")
            if failure and (not isinstance(error, str) or not error):
                raise ValueError(f"failure record {i} needs a non-empty 'error' message")
            if not failure and error is not None:
                raise ValueError(f"record {i} has an error; record failed videos with write_failures")
            path = rec["path"]
            if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
                raise ValueError(f"record {i} has an invalid path {path!r}")

            def opt_float(key: str, rec: Mapping[str, Any] = rec) -> float:
                x = rec.get(key)
                return float("nan") if x is None else float(x)

            def opt_int(key: str, rec: Mapping[str, Any] = rec) -> int | None:
                x = rec.get(key)
                return None if x is None else int(x)

            out.append(
                {
                    "path": os.fspath(path),
                    "size": int(rec["size"]),
                    "mtime_ns": int(rec["mtime_ns"]),
                    "model_id": model_id,
                    "kind": kind,
                    "start": opt_float("start"),
                    "end": opt_float("end"),
                    "frame_indices": [int(x) for x in (rec.get("frame_indices") or [])],
                    "duration": opt_float("duration"),
                    "num_frames_total": opt_int("num_frames_total"),
                    "video_rows": opt_int("video_rows"),
                    "error": error if failure else None,
                }
            )
        return out

    def _table(
        self, rows: list[dict[str, Any]], ids: np.ndarray, shard: str | None, frames_shard: str | None
    ) -> pa.Table:
        n = len(rows)
        cols: dict[str, Any] = {name: [r[name] for r in rows] for name in _RECORD_KEYS}
        cols["id"] = ids
        cols["shard"] = [shard] * n
        cols["row"] = np.arange(n, dtype=np.int64) if shard is not None else [None] * n
        cols["frames_shard"] = [frames_shard] * n
        return pa.table({f.name: pa.array(cols[f.name], f.type) for f in METADATA_SCHEMA}, schema=METADATA_SCHEMA)

    def _token(self) -> str:
        return f"{self._next_id:012d}-{uuid.uuid4().hex[:8]}"

    def write_batch(
        self,
        records: Sequence[Mapping[str, Any]],
        embeddings: np.ndarray,
        frame_embeddings: np.ndarray | None = None,
    ) -> np.ndarray:
        """Durably appends embedding rows: one shard (plus frames shard), then its metadata part.

        A crash before the metadata part is renamed into place leaves only an orphan shard, which readers ignore and
        the next writer removes; so each call is all or nothing.

        Args:
            records: One dict per row with ``path``, ``size``, ``mtime_ns`` and optionally ``kind`` (default "clip"),
                ``start``, ``end``, ``frame_indices``, ``duration``, ``num_frames_total``, ``video_rows`` (total rows
                the video will have, when they span several batches) and ``model_id`` (must be the store's).
            embeddings: (n, dim) embeddings; L2-normalised here and stored as float16.
            frame_embeddings: Optional (n, frames, dim) per-frame embeddings, stored as float16 as given.

        Returns:
            The ids assigned to the rows, in order.

        Raises:
            ValueError: Malformed records, shapes, or non-finite / zero embeddings.
            StoreMismatchError: ``dim``, model or frame count differs from the store's.
        """
        self._check_open()
        rows = self._normalise_records(records, failure=False)
        n = len(rows)
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != n:
            raise ValueError(f"embeddings must have shape ({n}, {self.dim}) for {n} records, got {emb.shape}")
        if emb.shape[1] != self.dim:
            raise StoreMismatchError(f"embeddings have dim {emb.shape[1]}; store {self.path} holds dim {self.dim}")
        frames = None
        if frame_embeddings is not None:
            frames = np.asarray(frame_embeddings)
            if frames.ndim != 3 or frames.shape[0] != n or frames.shape[2] != self.dim:
                raise ValueError(f"frame_embeddings must have shape ({n}, frames, {self.dim}), got {frames.shape}")
            if self._frames_shape is not None and tuple(frames.shape[1:]) != self._frames_shape:
                raise StoreMismatchError(
                    f"frame_embeddings have {frames.shape[1]} frames; store {self.path} holds {self._frames_shape[0]}"
                )
            if not np.isfinite(frames).all():
                raise ValueError("frame_embeddings contain NaN or infinite values")
            with np.errstate(over="ignore"):
                frames16 = frames.astype(np.float16)
            if not np.isfinite(frames16).all():
                raise ValueError("frame_embeddings overflow float16 (|x| > 65504)")
            frames = frames16
        if n == 0:
            return np.empty(0, np.int64)
        emb64 = emb.astype(np.float64)
        if not np.isfinite(emb64).all():
            raise ValueError("embeddings contain NaN or infinite values")
        norms = np.linalg.norm(emb64, axis=1, keepdims=True)
        if (norms < 1e-12).any():
            raise ValueError(f"embeddings rows {np.flatnonzero(norms[:, 0] < 1e-12).tolist()[:10]} are zero vectors")
        emb16 = (emb64 / norms).astype(np.float16)

        token = self._token()
        shard = f"{SHARDS_DIR}/{token}.emb.npy"
        frames_shard = f"{SHARDS_DIR}/{token}.frames.npy" if frames is not None else None
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        table = self._table(rows, ids, shard, frames_shard)
        written: list[Path] = []
        try:
            _save_npy(self.path / shard, emb16)
            written.append(self.path / shard)
            if frames_shard is not None:
                _save_npy(self.path / frames_shard, frames)
                written.append(self.path / frames_shard)
            _write_part(self.path / META_DIR / f"{token}.parquet", table, {_KV_NEXT_ID: str(ids[-1] + 1).encode()})
        except BaseException:
            for p in written:  # not referenced by any metadata yet; a SIGKILL leaves them to _recover
                with contextlib.suppress(OSError):
                    p.unlink()
            raise
        self._next_id += n
        if frames is not None:
            self._frames_shape = tuple(frames.shape[1:])
        for rec in rows:
            self._account(rec)
        return ids

    def _account(self, rec: dict[str, Any]) -> None:
        v = self._videos.get(rec["path"])
        failure = rec["error"] is not None
        if v is None or (v.size, v.mtime_ns) != (rec["size"], rec["mtime_ns"]):
            if v is not None:  # supersedes the old version's rows
                self._rows -= v.ok_rows
                self._failures -= int(v.failed)
            v = self._videos[rec["path"]] = _Video(rec["size"], rec["mtime_ns"])
        if failure:
            self._failures += int(not v.failed)
            v.failed = True
            return
        if v.failed:  # a newer embedding row supersedes the recorded failure
            v.failed = False
            self._failures -= 1
        v.expected = max(v.expected, rec["video_rows"] or 0)
        if v.ok_rows == 0 or v.clips is not None:
            v.clips = v.clips if v.clips is not None else set()
            key = _clip_key(rec)
            if key not in v.clips:
                v.clips.add(key)
                v.ok_rows += 1
                self._rows += 1
            if v.done:
                v.clips = None
        else:  # complete videos stop tracking clip keys; a rewrite of a done video is counted as new rows
            v.ok_rows += 1
            self._rows += 1

    def write_failures(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Durably records videos that could not be decoded or embedded; ``is_done`` is then True for them.

        Args:
            records: One dict per video with ``path``, ``size``, ``mtime_ns``, ``error`` (message) and optionally
                ``kind`` (default "video"), ``duration`` and ``num_frames_total``.

        Returns:
            The ids assigned to the failure rows.
        """
        self._check_open()
        rows = self._normalise_records(records, failure=True)
        if not rows:
            return np.empty(0, np.int64)
        ids = np.arange(self._next_id, self._next_id + len(rows), dtype=np.int64)
        token = self._token()
        _write_part(
            self.path / META_DIR / f"{token}.parquet",
            self._table(rows, ids, None, None),
            {_KV_NEXT_ID: str(ids[-1] + 1).encode()},
        )
        self._next_id += len(rows)
        for rec in rows:
            self._account(rec)
        return ids

    def reader(self) -> StoreReader:
        """A read-only snapshot of everything written so far."""
        return open_store(self.path)

    def compact(self) -> bool:
        """Rewrites the live rows into one shard (plus one frames shard) and one metadata part; drops stale rows.

        Crash-safe: the new shard and part are written first (temp, fsync, rename) and name the parts they replace,
        so readers see either the old parts or the new one; old files are deleted last. Idempotent.

        Returns:
            Whether anything changed (False when the store was already compacted).
        """
        self._check_open()
        snap = _load_snapshot(self.path, self.manifest)
        reader = StoreReader(snap)
        stray = {f"{SHARDS_DIR}/{p.name}" for p in (self.path / SHARDS_DIR).glob("*.npy")} - snap.referenced_shards
        if reader.is_compacted and not snap.replaced and not stray:
            return False
        if not snap.parts:
            return False
        token = self._token()
        n = len(reader)
        shard = f"{SHARDS_DIR}/{token}.emb.npy" if n else None
        frames_shard = f"{SHARDS_DIR}/{token}.frames.npy" if n and reader.frame_embeddings is not None else None
        new_files: list[Path] = []
        try:
            if shard is not None:
                _save_npy_streaming(self.path / shard, (n, self.dim), lambda out: _copy_rows(reader.embeddings, out))
                new_files.append(self.path / shard)
            if frames_shard is not None:
                shape = (n, *reader._frames_shape)
                _save_npy_streaming(
                    self.path / frames_shard, shape, lambda out: _copy_rows(reader.frame_embeddings, out)
                )
                new_files.append(self.path / frames_shard)
            ok = reader.metadata
            had_frames = ok["frames_shard"].is_valid()
            ok = ok.set_column(ok.schema.get_field_index("shard"), "shard", pa.array([shard] * n, pa.string()))
            ok = ok.set_column(ok.schema.get_field_index("row"), "row", pa.array(np.arange(n, dtype=np.int64)))
            ok = ok.set_column(
                ok.schema.get_field_index("frames_shard"),
                "frames_shard",
                pc.if_else(had_frames, pa.scalar(frames_shard, pa.string()), pa.scalar(None, pa.string())),
            )
            merged = pa.concat_tables([ok.cast(METADATA_SCHEMA), reader.failures])
            merged = merged.take(pc.sort_indices(merged["id"]))
            kv = {
                _KV_REPLACES: json.dumps(snap.parts).encode(),
                _KV_NEXT_ID: str(self._next_id).encode(),
                _KV_COMPACTED: b"1",
            }
            _write_part(self.path / META_DIR / f"{token}.parquet", merged, kv)
        except BaseException:
            for p in new_files:
                with contextlib.suppress(OSError):
                    p.unlink()
            raise
        # Committed. Delete metadata before shards so no listed part ever points to a deleted shard.
        for name in snap.parts:
            (self.path / META_DIR / name).unlink(missing_ok=True)
        _fsync_dir(self.path / META_DIR)
        keep = {shard, frames_shard}
        for p in (self.path / SHARDS_DIR).glob("*.npy"):
            if f"{SHARDS_DIR}/{p.name}" not in keep:
                p.unlink(missing_ok=True)
        _fsync_dir(self.path / SHARDS_DIR)
        self._load_state(_load_snapshot(self.path, self.manifest))
        return True


def _copy_rows(src: np.ndarray | ConcatenatedRows, out: np.ndarray) -> None:
    if isinstance(src, ConcatenatedRows):
        for start, arr in src.iter_segments():
            for s in range(0, len(arr), _CHUNK_ROWS):
                block = arr[s : s + _CHUNK_ROWS]
                out[start + s : start + s + len(block)] = block
    else:
        for s in range(0, len(src), _CHUNK_ROWS):
            out[s : s + _CHUNK_ROWS] = src[s : s + _CHUNK_ROWS]
