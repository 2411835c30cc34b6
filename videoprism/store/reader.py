"""Reading a store: ``open_store`` and ``StoreReader`` (metadata, embedding matrices, exact and Lance search)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import EmptyStoreError, StoreCorruptedError
from .format import KINDS, LANCE_DIR, read_manifest, read_npy_header
from .lance import LanceMirror
from .live import FileVanished, Snapshot, column_codes, load_snapshot
from .rows import MAX_OPEN_SHARDS, ConcatenatedRows, Segment, row_runs
from .topk import DEFAULT_BLOCK_ROWS, Workspace, exact_topk, prepare_queries

_OPEN_RETRIES = 5


class SearchHit(NamedTuple):
    """One search result: cosine similarity, row id and the row's metadata."""

    score: float
    id: int
    metadata: dict[str, Any]


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
    manifest = read_manifest(root)
    for attempt in range(_OPEN_RETRIES):
        try:
            return StoreReader(load_snapshot(root, manifest), lance_dir=lance_dir)
        except FileVanished as e:  # a concurrent compaction deleted a file we listed; the next listing is consistent
            if attempt == _OPEN_RETRIES - 1:
                raise StoreCorruptedError(f"{e} is referenced by the metadata of {root} but missing") from None
    raise AssertionError("unreachable")


def _kind_mask(metadata: pa.Table, kind: str | Sequence[str] | None) -> np.ndarray | None:
    if kind is None:
        return None
    kinds = [kind] if isinstance(kind, str) else list(kind)
    bad = [x for x in kinds if x not in KINDS]
    if bad:
        raise ValueError(f"unknown kind {bad}; expected some of {list(KINDS)}")
    return pc.is_in(metadata["kind"], value_set=pa.array(kinds, pa.string())).to_numpy(zero_copy_only=False)


class StoreReader:
    """Read-only snapshot of a store: metadata, embeddings and search. Create it with ``open_store``.

    Rows are the live embedding rows (see ``videoprism.store.live``) sorted by id; row ``i`` of ``ids``,
    ``metadata``, ``embeddings`` and ``frame_embeddings`` describe the same clip. Failed videos are in ``failures``.
    """

    def __init__(self, snapshot: Snapshot, *, lance_dir: str | os.PathLike[str] | None = None) -> None:
        self._snap = snapshot
        self.path = snapshot.root
        self.manifest = dict(snapshot.manifest)
        self.model_id: str = snapshot.manifest["model_id"]
        self.dim: int = snapshot.manifest["dim"]
        self.metadata: pa.Table = snapshot.ok
        self.failures: pa.Table = snapshot.failures
        self.ids: np.ndarray = snapshot.ok["id"].to_numpy()
        lance_path = Path(lance_dir) if lance_dir is not None else self.path / LANCE_DIR
        self._embeddings: np.ndarray | ConcatenatedRows | None = None
        self._frames: np.ndarray | ConcatenatedRows | None = None
        self._pinned: dict[str, np.ndarray] = {}
        self._workspace = Workspace()
        self._emb_segments, self._frame_segments, self._frames_shape = self._plan()
        self._lance = LanceMirror(
            lance_path, self.model_id, self.dim, snapshot.parts, self.ids, self.metadata["kind"], self._iter_embeddings
        )

    def _plan(self) -> tuple[list[Segment], list[Segment], tuple[int, ...] | None]:
        ok = self.metadata
        n = ok.num_rows
        if n and (ok["shard"].null_count or ok["row"].null_count):
            raise StoreCorruptedError(f"embedding rows of {self.path} without shard/row; the metadata is corrupted")
        rows = ok["row"].to_numpy() if n else np.empty(0, np.int64)
        segments = []
        for column in ("shard", "frames_shard"):
            codes, values = column_codes(ok[column])
            names = values.to_pylist()
            segments.append([Segment(a, b, names[c] if (c := codes[a]) >= 0 else None, int(rows[a]))
                             for a, b in row_runs(codes, rows)])  # fmt: skip
        emb, frames = segments
        frames_shape: tuple[int, ...] | None = None
        extent: dict[str, int] = {}
        for seg in emb + frames:
            if seg.shard is not None:
                extent[seg.shard] = max(extent.get(seg.shard, 0), seg.row + seg.stop - seg.start)
        # Map all shards now when there are few (always after compact()), so a concurrent compaction deleting them
        # cannot break this snapshot; with many, only check headers and map lazily.
        pin = len(extent) <= MAX_OPEN_SHARDS
        for name, needed in extent.items():
            try:
                # The header first: np.load takes a file without the .npy magic for a pickle and says so.
                shape, dtype = read_npy_header(self.path / name)
                if pin:
                    self._pinned[name] = np.load(self.path / name, mmap_mode="r")
            except FileNotFoundError as e:
                raise FileVanished(str(self.path / name)) from e
            except (OSError, ValueError, EOFError) as e:
                raise StoreCorruptedError(
                    f"shard {self.path / name} is not a valid .npy file ({e}); the store is damaged: restore it from "
                    "a backup, or embed the videos into a new store"
                ) from e
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

    def _matrix(self, segments: list[Segment], row_shape: tuple[int, ...]) -> np.ndarray | ConcatenatedRows:
        if not segments:
            return np.empty((0, *row_shape), np.float16)
        view = ConcatenatedRows(self.path, segments, row_shape, self._pinned)
        if len(segments) == 1 and segments[0].shard is not None:
            _, rows = next(view.iter_segments())  # a plain np.memmap slice
            return rows
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
        q, single = prepare_queries(queries, self.dim)
        mask = _kind_mask(self.metadata, kind)
        bad: list[int] = []
        scores, rows = exact_topk(
            self._iter_embeddings(), q, int(k), mask, int(block_rows), kernel, self._workspace, bad_rows=bad
        )
        if bad:
            warnings.warn(self._damaged_rows_text(bad), RuntimeWarning, stacklevel=2)
        return (scores[0], rows[0]) if single else (scores, rows)

    def _damaged_rows_text(self, bad: list[int]) -> str:
        """Names the shards and shard rows behind global rows ``bad`` (which hold NaN or infinite values)."""
        where: dict[str, list[int]] = {}
        starts = [seg.start for seg in self._emb_segments]
        for row in bad:
            seg = self._emb_segments[int(np.searchsorted(starts, row, side="right")) - 1]
            where.setdefault(str(seg.shard), []).append(seg.row + row - seg.start)
        parts = []
        for shard, shard_rows in where.items():
            shown = ", ".join(map(str, shard_rows[:10])) + (
                f", ... ({len(shard_rows)} rows)" if len(shard_rows) > 10 else ""
            )
            parts.append(f"{self.path / shard} rows {shown}")
        return (
            f"store {self.path}: embeddings hold NaN or infinite values (damaged files), left out of the results: "
            + "; ".join(parts)
            + ". Restore the store from a backup, or embed those videos into a new store"
        )

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
            q, single = prepare_queries(queries, self.dim)
            _kind_mask(self.metadata, kind)  # validates kind
            scores, rows = self._lance.topk(q, int(k), kind, nprobes, refine_factor)
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
        return self._lance.table(index=index, rebuild=rebuild)
