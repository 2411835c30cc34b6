"""Exact top-k search over fp16 row blocks: query checks and the torch and numpy scoring kernels.

The fp16 matrix is streamed in blocks that are converted to float32 into a reused buffer and multiplied with all
queries at once, keeping a running top-k per query with ``np.argpartition``. The conversion is the bottleneck on
CPU: the ``torch`` kernel converts with vectorised F16C code and several threads; the ``numpy`` kernel (numpy's fp16
cast is scalar code) splits it over a thread pool.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

# Rows converted to float32 per matmul. Large blocks keep thread synchronisations rare: with 256-row blocks a 1M-row
# search runs 8000 parallel regions, and each stalls for a scheduler tick whenever another process holds a core
# (docs/benchmarks.md). With a reused buffer, large blocks cost nothing on an idle machine.
DEFAULT_BLOCK_ROWS = 8192
_NUMPY_SUB_ROWS = 256  # numpy kernel, one query: 256 x 768 float32 stays in L2 between conversion and dot
_MAX_SCORES = 1 << 24  # float32 scores per block (64 MiB): bounds memory for many queries


class Workspace(threading.local):
    """Per-thread scratch buffers reused across searches: first-touching a 48 MiB buffer costs more than a search."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 buffer of ``shape`` (contents undefined), grown and kept under ``name``."""
        size = int(np.prod(shape))
        arr = self.arrays.get(name)
        if arr is None or arr.size < size:
            arr = self.arrays[name] = np.empty(size, np.float32)
        return arr[:size].reshape(shape)


_ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray, Workspace], None]


def _torch_scores() -> _ScoreFn | None:
    try:
        import torch
    except ImportError:
        return None

    def scores(block: np.ndarray, q: np.ndarray, out: np.ndarray, ws: Workspace) -> None:
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

    def scores(block: np.ndarray, q: np.ndarray, out: np.ndarray, ws: Workspace) -> None:
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


def _score_function(kernel: str, stack: contextlib.ExitStack) -> _ScoreFn:
    """The scoring function of ``kernel``; a numpy thread pool lives as long as ``stack``."""
    fn = _torch_scores() if kernel in ("auto", "torch") else None
    if fn is None and kernel == "torch":
        raise ImportError("kernel='torch' needs PyTorch; use kernel='numpy'")
    if fn is None:
        workers = min(8, os.cpu_count() or 1)
        pool = stack.enter_context(ThreadPoolExecutor(workers)) if workers > 1 else None
        fn = _numpy_scores(pool, workers)
    return fn


def exact_topk(
    segments: Iterable[tuple[int, np.ndarray]],
    queries: np.ndarray,
    k: int,
    mask: np.ndarray | None,
    block_rows: int,
    kernel: str,
    workspace: Workspace,
    bad_rows: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows by cosine for unit-norm float32 ``queries`` (Q, D); returns (scores, rows), (Q, k').

    Rows are ranked by inner product within each block; the candidates' scores are then divided by their rows' norms
    (fp16 rounding leaves them about 1e-3 away from 1) and clamped, so every score is a cosine in [-1, 1].

    Args:
        segments: ``(first row, rows)`` pieces of the matrix, in row order.
        queries: Unit-norm queries.
        k: Results per query.
        mask: Optional bool per row: only rows where it is True are candidates.
        block_rows: Rows scored per step.
        kernel: "torch", "numpy" or "auto" (torch if importable).
        workspace: Scratch buffers of the calling thread.
        bad_rows: If given, the rows whose scores are NaN or infinite (damaged data) are appended to it; such rows
            are never returned.
    """
    if kernel not in ("auto", "torch", "numpy"):
        raise ValueError(f"unknown kernel {kernel!r}; expected 'auto', 'torch' or 'numpy'")
    if block_rows < 1:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    with contextlib.ExitStack() as stack:
        fn = _score_function(kernel, stack)
        n_q = len(queries)
        q = np.ascontiguousarray(queries, np.float32)
        block_rows = max(1, min(block_rows, _MAX_SCORES // n_q))  # bounds the (Q, block) score matrix
        cand_scores: list[np.ndarray] = []
        cand_rows: list[np.ndarray] = []
        n_bad = 0  # candidate rows (those the mask lets through) left out for non-finite scores
        for seg_start, arr in segments:
            for s in range(0, len(arr), block_rows):
                m = min(len(arr), s + block_rows) - s
                out = workspace.get("scores", (n_q, m))  # (Q, rows): the partition below runs along contiguous memory
                fn(arr[s : s + m], q, out, workspace)
                g0 = seg_start + s
                bad = ~np.isfinite(out).all(axis=0)  # a NaN or infinite value in the row (unit rows score in [-1, 1])
                if mask is not None:
                    keep = mask[g0 : g0 + m]
                    out[:, ~keep] = -np.inf
                    bad &= keep
                if bad.any():
                    out[:, bad] = -np.inf
                    found = np.flatnonzero(bad) + g0
                    n_bad += len(found)
                    if bad_rows is not None:
                        bad_rows.extend(found.tolist())
                if k < m:
                    idx = np.argpartition(out, m - k, axis=1)[:, m - k :]
                    picked = np.take_along_axis(out, idx, axis=1)
                    cand_scores.append(picked / _row_norms(arr, s + idx))
                    cand_rows.append(idx + g0)
                else:
                    cand_scores.append(out / _row_norms(arr, np.arange(s, s + m))[None])
                    cand_rows.append(np.broadcast_to(np.arange(g0, g0 + m), (n_q, m)))
    if not cand_scores:
        return np.empty((n_q, 0), np.float32), np.empty((n_q, 0), np.int64)
    scores = np.concatenate(cand_scores, axis=1)
    rows = np.concatenate(cand_rows, axis=1).astype(np.int64)
    k_eff = min(k, (scores.shape[1] if mask is None else int(mask.sum())) - n_bad)
    order = np.lexsort((rows, -scores), axis=-1)[:, :k_eff]  # ties: lower row (= lower id) first
    top = np.clip(np.take_along_axis(scores, order, axis=1), -1.0, 1.0)  # float32 rounding of a cosine
    return top, np.take_along_axis(rows, order, axis=1)


def _row_norms(arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Norms of ``arr[rows]`` (any shape of row indices) in float32, 1 for a zero row.

    Stored rows are unit vectors rounded to float16, so their norms differ from 1 by up to about 1e-3: dividing the
    candidates' inner products by them makes the scores cosines, never above 1.
    """
    flat = rows.reshape(-1)
    order = np.argsort(flat, kind="stable")  # memory-mapped rows are read in file order
    norms = np.empty(len(flat), np.float32)
    norms[order] = np.linalg.norm(np.asarray(arr[flat[order]], np.float32), axis=1)
    return np.where(np.isfinite(norms) & (norms > 0), norms, np.float32(1)).reshape(rows.shape)  # damaged rows: -inf


def prepare_queries(queries: Any, dim: int) -> tuple[np.ndarray, bool]:
    """Checks and L2-normalises (dim,) or (Q, dim) queries; returns them as (Q, dim) float32 and whether one was given.

    Raises:
        ValueError: A wrong shape, NaN or infinite values, or an all-zero query.
    """
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
