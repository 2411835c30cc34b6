"""The optional LanceDB backend: a derived table mirroring a store snapshot, IVF-PQ indexed on large stores.

The table is derived data (``STORE/lance`` by default; safe to delete) and needs ``pip install videoprism[lance]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .format import LOCK_NAME
from .rows import CHUNK_ROWS

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; concurrent builds are then up to the user.
    fcntl = None

LANCE_INDEX_MIN_ROWS = 65_536


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class LanceMirror:
    """The LanceDB table mirroring one store snapshot's embedding rows (id, kind, vector).

    Args:
        directory: Folder of the LanceDB database.
        model_id: The store's model.
        dim: Embedding dimension.
        parts: The snapshot's metadata part files; the table's name is derived from them.
        ids: Row ids, sorted.
        kinds: Row kinds, in row order.
        segments: Yields ``(first row, rows)`` pieces of the embedding matrix, in row order.
    """

    def __init__(
        self,
        directory: Path,
        model_id: str,
        dim: int,
        parts: Sequence[str],
        ids: np.ndarray,
        kinds: pa.ChunkedArray,
        segments: Callable[[], Iterator[tuple[int, np.ndarray]]],
    ) -> None:
        self.directory = directory
        self._model_id = model_id
        self._dim = dim
        self._parts = list(parts)
        self._ids = ids
        self._kinds = kinds
        self._segments = segments

    def _name(self) -> str:
        digest = hashlib.sha1(json.dumps([self._model_id, self._dim, sorted(self._parts)]).encode()).hexdigest()
        return f"emb_{digest[:16]}"

    def table(self, *, index: str = "auto", rebuild: bool = False) -> Any:
        """The table, built (with its index) on first use; see ``StoreReader.lance_table``."""
        if index not in ("auto", "ivf_pq", "none"):
            raise ValueError(f"unknown index {index!r}; expected 'auto', 'ivf_pq' or 'none'")
        os.environ.setdefault("LANCEDB_LOG", "error")  # lance logs routine warnings (e.g. "creating dataset")
        try:
            import lancedb
        except ImportError as e:
            raise ImportError("backend='lance' needs lancedb: pip install 'videoprism[lance]'") from e
        self.directory.mkdir(parents=True, exist_ok=True)
        name = self._name()
        n = len(self._ids)
        with _flock(self.directory / LOCK_NAME):
            db = lancedb.connect(str(self.directory))
            listing = db.list_tables()
            existing = list(getattr(listing, "tables", listing))  # a response object in newer lancedb, else a list
            if name in existing and not rebuild:
                table = db.open_table(name)
            else:
                table = db.create_table(name, data=self._batches(), schema=self._schema(), mode="overwrite")
            for other in existing:
                if other != name and other.startswith("emb_"):
                    db.drop_table(other)
            want_index = index == "ivf_pq" or (index == "auto" and n >= LANCE_INDEX_MIN_ROWS)
            if want_index and not table.list_indices():
                from lancedb.index import IvfPq

                dim = self._dim
                sub = next(s for s in (dim // 16, dim // 8, dim // 4, dim // 2, 1) if s and dim % s == 0)
                parts = max(1, min(int(np.sqrt(n)), n // 256))
                table.create_index(
                    "vector", config=IvfPq(distance_type="cosine", num_partitions=parts, num_sub_vectors=sub)
                )
        return table

    def _schema(self) -> pa.Schema:
        return pa.schema([("id", pa.int64()), ("kind", pa.string()), ("vector", pa.list_(pa.float16(), self._dim))])

    def _batches(self) -> Iterator[pa.RecordBatch]:
        schema = self._schema()
        for start, arr in self._segments():
            for s in range(0, len(arr), CHUNK_ROWS):
                block = np.ascontiguousarray(arr[s : s + CHUNK_ROWS])
                lo, hi = start + s, start + s + len(block)
                vectors = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1), pa.float16()), self._dim)
                yield pa.record_batch(
                    [pa.array(self._ids[lo:hi]), self._kinds.slice(lo, hi - lo).combine_chunks(), vectors],
                    schema=schema,
                )

    def topk(
        self, q: np.ndarray, k: int, kind: str | Sequence[str] | None, nprobes: int, refine_factor: int | None
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Approximate top-``k`` rows (indices into ``ids``) and cosine scores, per query; fewer than k for some.

        Args:
            q: (Q, dim) unit-norm queries.
            k: Results per query.
            kind: Only rows of this kind or these kinds, already validated.
            nprobes: IVF partitions probed per query.
            refine_factor: Re-rank ``k * refine_factor`` candidates with full vectors (None: off).
        """
        table = self.table()
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
            all_rows.append(np.searchsorted(self._ids, res["id"].to_numpy()).astype(np.int64))
            all_scores.append(1.0 - res["_distance"].to_numpy().astype(np.float32))
        return all_scores, all_rows
