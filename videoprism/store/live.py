"""Loading a store's metadata parts and resolving its live rows.

Parts are append-only, so re-embedding a video adds rows instead of rewriting old ones. The live set is defined over
all rows of the non-replaced parts, using ids as commit order (``docs/store-format.md`` explains each rule):

1. For each ``path``, the row with the highest id gives the current ``(size, mtime_ns)``; rows of that path with a
   different size or mtime are stale and dropped.
2. Embedding rows describing the same clip (same path, kind, start, end and frame_indices) keep only the one with
   the highest id.
3. A path keeps at most its newest failure row, and only if no embedding row of the path is newer.

The single part that ``EmbeddingStore.compact()`` leaves holds only live rows sorted by id and is taken as it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import StoreCorruptedError
from .format import KV_COMPACTED, KV_NEXT_ID, KV_REPLACES, META_DIR, METADATA_SCHEMA, SHARD_NAME_RE, empty_table


class FileVanished(Exception):
    """A file disappeared while being read: a concurrent compaction; the caller retries."""


@dataclass
class Snapshot:
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


def load_snapshot(root: Path, manifest: dict[str, Any]) -> Snapshot:
    """Reads every metadata part of the store at ``root`` and resolves its live rows.

    Raises:
        FileVanished: A part was deleted while listing (a concurrent compaction); list again.
        StoreCorruptedError: An unreadable or malformed part, or a reference to a file that is not a shard.
    """
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
            raise FileVanished(str(path)) from e
        except (OSError, pa.ArrowException) as e:
            raise StoreCorruptedError(f"cannot read metadata part {path}: {e}; move it out of the store") from e
        kv = table.schema.metadata or {}
        try:
            replaced.update(json.loads(kv.get(KV_REPLACES, b"[]")))
            if kv.get(KV_COMPACTED) == b"1":
                compacted.add(name)
            next_id = max(next_id, int(kv.get(KV_NEXT_ID, b"0")))
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
        combined = empty_table().append_column("_part", pa.array([], pa.int32()))
    referenced = set(pc.unique(combined["shard"]).drop_null().to_pylist())
    referenced |= set(pc.unique(combined["frames_shard"]).drop_null().to_pylist())
    for name in referenced:
        if not SHARD_NAME_RE.match(name):
            raise StoreCorruptedError(f"metadata of {root} references {name!r}, which is not a shard file name")
    if len(live_parts) == 1 and live_parts[0] in compacted:
        # compact() wrote only live rows sorted by id: nothing to resolve.
        combined = combined.drop_columns(["_part"])
        ok = combined.filter(pc.is_null(combined["error"]))
        failures = combined.filter(pc.is_valid(combined["error"]))
    else:
        ok, failures = _resolve(combined)
    return Snapshot(
        root, manifest, live_parts, sorted(replaced & set(names)), combined.num_rows, ok, failures, referenced, next_id
    )


def column_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
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
        return empty_table(), empty_table()
    ids = table["id"].to_numpy()
    # Duplicate ids only occur when a compaction died between writing its part and deleting the merged ones.
    if not (ids[1:] > ids[:-1]).all():
        uniq, first = np.unique(ids, return_index=True)
        if len(uniq) < len(ids):
            table = table.take(np.sort(first))
            ids = table["id"].to_numpy()
    path, uniq_paths = column_codes(table["path"])
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
        kind, _ = column_codes(sub["kind"])
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
