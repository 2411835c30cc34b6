"""The live rows of a store as one matrix: a lazily concatenated view over row ranges of its ``.npy`` shards."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreCorruptedError, StoreError

MAX_OPEN_SHARDS = 32  # shards a view keeps memory-mapped at a time
CHUNK_ROWS = 1 << 16  # rows per copy when compacting or building a Lance table


@dataclass(frozen=True)
class Segment:
    """Global rows ``[start, stop)`` of a view, stored as consecutive rows of one shard."""

    start: int  # first global row
    stop: int
    shard: str | None  # relative shard path; None: rows without data (NaN)
    row: int  # first row inside the shard


def row_runs(codes: np.ndarray, rows: np.ndarray) -> list[tuple[int, int]]:
    """Maximal [start, stop) ranges over which ``codes`` is constant and ``rows`` increases by one."""
    n = len(rows)
    if n == 0:
        return []
    brk = np.flatnonzero((codes[1:] != codes[:-1]) | (rows[1:] != rows[:-1] + 1)) + 1
    starts = np.concatenate([[0], brk])
    stops = np.concatenate([brk, [n]])
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


class ConcatenatedRows:
    """Read-only, lazily concatenated view of row ranges of several memory-mapped ``.npy`` shards.

    Supports ``shape``, ``dtype``, ``len()``, indexing with an int, a slice, an int or bool array (optionally followed
    by more indices in a tuple), and ``np.asarray(view)``, which materialises the whole matrix in memory. At most a
    few shards are memory-mapped at a time, so stores with thousands of shards do not run out of file descriptors.
    """

    def __init__(
        self,
        root: Path,
        segments: list[Segment],
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
            except (ValueError, EOFError) as err:  # without the .npy magic, np.load takes the file for a pickle
                raise StoreCorruptedError(
                    f"shard {self._root / name} is not a valid .npy file; the store is damaged: restore it from a "
                    "backup, or embed the videos into a new store"
                ) from err
            while len(self._open) >= MAX_OPEN_SHARDS:
                self._open.popitem(last=False)
        self._open[name] = arr
        return arr

    def _segment_array(self, seg: Segment) -> np.ndarray:
        if seg.shard is None:
            return np.broadcast_to(np.array(np.nan, np.float16), (seg.stop - seg.start, *self._row_shape))
        return self._shard(seg.shard)[seg.row : seg.row + seg.stop - seg.start]

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


def copy_rows(src: np.ndarray | ConcatenatedRows, out: np.ndarray) -> None:
    """Copies all rows of ``src`` into ``out``, ``CHUNK_ROWS`` rows at a time."""
    if isinstance(src, ConcatenatedRows):
        for start, arr in src.iter_segments():
            for s in range(0, len(arr), CHUNK_ROWS):
                block = arr[s : s + CHUNK_ROWS]
                out[start + s : start + s + len(block)] = block
    else:
        for s in range(0, len(src), CHUNK_ROWS):
            out[s : s + CHUNK_ROWS] = src[s : s + CHUNK_ROWS]
