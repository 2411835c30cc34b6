"""Search latency of the embedding store on synthetic data, against a plain numpy brute force.

Writes ``N`` synthetic unit-norm ``dim``-d embeddings (a Gaussian mixture, so that approximate indexes see clusters as
in real embeddings; exact search does not care) through ``EmbeddingStore`` (batches, then ``compact()``), opens the
store read-only and reports the median milliseconds of:

* ``brute``: ``embeddings.astype(np.float32) @ q`` over the memory-mapped fp16 matrix, plus ``np.argpartition`` top-k;
* ``store/<kernel>``: ``StoreReader.topk`` (blocked fp16 -> fp32 conversion and matmul, running top-k);
* ``search()``: ``StoreReader.search`` end to end (default kernel, hits with metadata dicts);
* optionally ``lance``: the LanceDB backend (IVF-PQ index), with its build time and recall@k against exact search.

for a single query and for a batch of queries (also per query). Usage::

    python benchmarks/bench_search.py                       # 100k and 1M rows, dim 768
    python benchmarks/bench_search.py --sizes 100000 --lance --block-rows 128 256 512
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from videoprism.store import DEFAULT_BLOCK_ROWS, EmbeddingStore, StoreReader, open_store  # noqa: E402


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: page cache, thread pools, torch import
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def sample(rng: np.random.Generator, centers: np.ndarray | None, m: int, dim: int) -> np.ndarray:
    """``m`` points of the mixture: a random center plus unit-variance noise (cosine ~0.5 within a cluster)."""
    noise = rng.standard_normal((m, dim), dtype=np.float32)
    return noise if centers is None else centers[rng.integers(len(centers), size=m)] + noise


def build_store(root: Path, n: int, dim: int, batch: int, centers: np.ndarray | None, seed: int) -> float:
    """Writes ``n`` synthetic embeddings through the store; returns the seconds it took (writes + compaction)."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with EmbeddingStore.open(root, model_id="synthetic", dim=dim) as st:
        for start in range(0, n, batch):
            m = min(batch, n - start)
            records = [
                {"path": f"/videos/{(start + i) // 8}.mp4", "size": 1, "mtime_ns": 1, "kind": "window",
                 "start": float((start + i) % 8), "end": float((start + i) % 8 + 1)}
                for i in range(m)
            ]  # fmt: skip
            st.write_batch(records, sample(rng, centers, m, dim))
        st.compact()
    return time.perf_counter() - t0


def brute(emb: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = emb.astype(np.float32) @ q.T
    return np.argpartition(-scores, k, axis=0)[:k]


def bench_size(args: argparse.Namespace, n: int, kernels: list[str]) -> list[tuple[str, float, float]]:
    keep = args.store_dir is not None
    root = Path(args.store_dir) / f"store-{n}-{args.dim}-{args.clusters}" if keep else None
    if root is None:
        root = Path(tempfile.mkdtemp(prefix=f"vp-bench-{n}-", dir=args.tmp))
    try:
        crng = np.random.default_rng(args.seed + 2)
        centers = crng.standard_normal((args.clusters, args.dim), dtype=np.float32) if args.clusters else None
        if (root / "store.json").exists():
            built = "reused"
        else:
            built = f"written + compacted in {build_store(root, n, args.dim, args.batch, centers, args.seed):.1f} s"
        size_gb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e9
        print(f"\n## {n:,} x {args.dim} fp16 ({size_gb:.2f} GB on disk): {built}")
        t0 = time.perf_counter()
        reader: StoreReader = open_store(root)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        EmbeddingStore.open(root).close()
        t_write = time.perf_counter() - t0
        print(f"open_store: {t_read * 1e3:.0f} ms; EmbeddingStore.open (resume state): {t_write * 1e3:.0f} ms")
        rng = np.random.default_rng(args.seed + 1)
        queries = sample(rng, centers, args.queries, args.dim)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        q1 = queries[:1]
        emb = reader.embeddings
        reps = args.repeats if n <= 200_000 else max(3, args.repeats // 2)
        rows: list[tuple[str, float, float]] = []
        rows.append(("brute", median_ms(lambda: brute(emb, q1, args.k), reps),
                     median_ms(lambda: brute(emb, queries, args.k), reps)))  # fmt: skip
        for kernel in kernels:
            for br in args.block_rows:
                name = f"store/{kernel}" + (f" block={br}" if len(args.block_rows) > 1 else "")
                single = median_ms(lambda k=kernel, b=br: reader.topk(q1[0], args.k, block_rows=b, kernel=k), reps)
                batch = median_ms(lambda k=kernel, b=br: reader.topk(queries, args.k, block_rows=b, kernel=k), reps)
                rows.append((name, single, batch))
        rows.append(("search()", median_ms(lambda: reader.search(q1[0], args.k), reps),
                     median_ms(lambda: reader.search(queries, args.k), reps)))  # fmt: skip
        # Sanity: the store's top-k equals the brute force's (as sets; brute's order is unsorted).
        _, top = reader.topk(queries, args.k)
        ref = brute(np.asarray(emb), queries, args.k).T
        agree = np.mean([set(a) == set(b) for a, b in zip(top.tolist(), ref.tolist(), strict=True)])
        if args.lance and n <= args.lance_max_rows:
            t0 = time.perf_counter()
            reader.lance_table(index="ivf_pq")
            build = time.perf_counter() - t0
            single = median_ms(lambda: reader.search(q1[0], args.k, backend="lance"), reps)
            batch = median_ms(lambda: reader.search(queries, args.k, backend="lance"), reps)
            rows.append(("lance ivf_pq", single, batch))
            hits = reader.search(queries, args.k, backend="lance")
            found = [len({h.id for h in hs} & set(reader.ids[t])) for hs, t in zip(hits, top, strict=True)]
            recall = np.mean(found) / args.k
            print(f"lance: table + IVF-PQ index built in {build:.1f} s; recall@{args.k} vs exact = {recall:.3f}")
        print(f"exact top-{args.k} agrees with brute force on {agree:.0%} of {args.queries} queries")
        print_table(rows, args.queries)
        return rows
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def print_table(rows: list[tuple[str, float, float]], n_queries: int) -> None:
    base_single, base_batch = rows[0][1], rows[0][2]
    head = (
        f"| {'method':<24} | {'1 query ms':>10} | {'vs brute':>8} | {f'{n_queries} queries ms':>14} | {'ms/query':>8} |"
    )
    print(head + f" {'vs brute':>8} |")
    print("|" + "|".join("-" * (len(c) + 0) for c in head.split("|")[1:-1]) + "|----------|")
    for name, single, batch in rows:
        print(
            f"| {name:<24} | {single:>10.1f} | {base_single / single:>7.1f}x | {batch:>14.1f} | "
            f"{batch / n_queries:>8.2f} | {base_batch / batch:>7.1f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=1000, help="mixture components (0: isotropic Gaussian)")
    parser.add_argument("--queries", type=int, default=32, help="queries in the batched measurement")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=16_384, help="rows per write_batch when building the store")
    parser.add_argument("--block-rows", type=int, nargs="+", default=[DEFAULT_BLOCK_ROWS])
    parser.add_argument("--kernels", nargs="+", default=["torch", "numpy"])
    parser.add_argument("--lance", action="store_true", help="also benchmark the LanceDB backend")
    parser.add_argument("--lance-max-rows", type=int, default=200_000)
    parser.add_argument("--tmp", default=None, help="folder for the temporary stores")
    parser.add_argument("--store-dir", default=None, help="build the stores here and keep them for later runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    kernels = list(args.kernels)
    if "torch" in kernels:
        try:
            import torch

            print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        except ImportError:
            kernels.remove("torch")
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs, k={args.k}")
    for n in args.sizes:
        bench_size(args, n, kernels)


if __name__ == "__main__":
    main()
