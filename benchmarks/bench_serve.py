"""`videoprism serve` under load: search latency through HTTP against the same search in process, and throughput.

Builds a synthetic store of ``N`` unit-norm 768-d rows (as `bench_search.py` does) whose model is a random-weight LvT
checkpoint with the base text tower (12 layers, width 768: the cost of a real text query; the video tower is cut to
one layer, as no video is embedded here) and the test tokenizer. Then, for each size:

* in process: ``StoreReader.search`` with a stored row's embedding (the work behind "more like this") and
  ``ServeEngine.search_text`` with a cached and an uncached text (the text tower runs for each new text);
* through HTTP: ``videoprism serve`` in a subprocess, one client (httpx, keep-alive): ``GET /api/search?like=ID``,
  ``?q=`` with texts asked before (cached embedding) and with new texts (uncached); p50 and p99 latency, each HTTP
  request paired with the same query in process (alternating), so that both see the same load;
* 16 concurrent clients (threads, one connection each) against the same server: requests per second, beside one
  client's.

Usage::

    python benchmarks/bench_serve.py                    # 100k rows
    python benchmarks/bench_serve.py --sizes 100000 1000000 --requests 200
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from videoprism.store import EmbeddingStore, open_store  # noqa: E402

SPM = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tokenizer" / "spm_t5layout.model"
DIM = 768


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def save_text_model(folder: Path) -> Path:
    """A random-weight LvT checkpoint: base text tower, a one-layer 768-wide video tower, the test tokenizer."""
    import torch

    from videoprism import (
        VideoPrismClipModel,
        VideoPrismConfig,
        VideoPrismProcessor,
        VideoPrismTextConfig,
        VideoPrismTokenizer,
        VideoPrismVideoProcessor,
        VideoPrismVisionConfig,
    )

    vision = VideoPrismVisionConfig(
        hidden_size=DIM, num_attention_heads=12, intermediate_size=3072, num_spatial_layers=1, num_temporal_layers=1,
        num_auxiliary_layers=1, image_size=32, tubelet_size=[1, 8, 8], num_frames=4,
    )  # fmt: skip
    torch.manual_seed(0)
    model = VideoPrismClipModel(VideoPrismConfig(vision, VideoPrismTextConfig()))
    model.save_pretrained(folder)
    processor = VideoPrismProcessor(
        VideoPrismVideoProcessor(num_frames=4, size=32), VideoPrismTokenizer.from_pretrained(SPM)
    )
    processor.save_pretrained(folder)
    return folder


def build_store(root: Path, n: int, model_id: str, batch: int = 65536) -> None:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((256, DIM), dtype=np.float32) * 1.5
    with EmbeddingStore.open(root, model_id=model_id, dim=DIM) as st:
        for start in range(0, n, batch):
            m = min(batch, n - start)
            records = [
                {"path": f"/videos/{(start + i) // 8}.mp4", "size": 1, "mtime_ns": 1, "kind": "window",
                 "start": float((start + i) % 8), "end": float((start + i) % 8 + 1), "frame_indices": [0, 1, 2, 3]}
                for i in range(m)
            ]  # fmt: skip
            rows = centers[rng.integers(len(centers), size=m)] + rng.standard_normal((m, DIM), dtype=np.float32)
            st.write_batch(records, rows)
        st.compact()


def paired(local: Callable[[int], object], http: Callable[[int], object], count: int) -> tuple[np.ndarray, ...]:
    """Milliseconds of the same query in process and through HTTP, alternating (the order flips every query) so that
    both see the same load on a shared machine."""
    for i in range(10):  # warm-up
        local(-1 - i)
        http(-1 - i)
    times = np.zeros((2, count))
    for i in range(count):
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            (local, http)[side](i)
            times[side, i] = time.perf_counter() - t0
    return times[0] * 1e3, times[1] * 1e3


def throughput(make_request: Callable[[object, int], object], clients: int, per_client: int, url: str) -> float:
    import httpx

    barrier = threading.Barrier(clients + 1)
    errors: list[str] = []

    def run(c: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            barrier.wait()
            for i in range(per_client):
                response = make_request(client, c * per_client + i)
                if response.status_code != 200:
                    errors.append(response.text)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0][:300]}")
    return clients * per_client / elapsed


def start_server(store: Path, port: int) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "videoprism.cli", "serve", str(store), "--port", str(port), "--device", "cpu"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"videoprism serve exited with {proc.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/stats", timeout=5)
            return proc
        except httpx.TransportError:
            time.sleep(0.25)
    proc.terminate()
    raise RuntimeError("videoprism serve did not answer")


def bench_size(n: int, model: Path, args: argparse.Namespace) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    import httpx

    from videoprism.serve.engine import ServeEngine

    root = Path(tempfile.mkdtemp(prefix=f"vp-bench-serve-{n}-", dir=args.tmp))
    latency_rows: list[tuple[str, ...]] = []
    rate_rows: list[tuple[str, ...]] = []
    fresh = itertools.count()  # a new text for every uncached request
    try:
        t0 = time.perf_counter()
        build_store(root / "store", n, str(model))
        print(f"# {n} rows: store built in {time.perf_counter() - t0:.1f} s", flush=True)
        reader = open_store(root / "store")
        ids = reader.ids
        r, k = args.requests, args.k
        like_ids = ids[np.random.default_rng(1).integers(len(ids), size=r + 8)]
        cached = [f"a cached query number {i % 8}" for i in range(r + 8)]

        def stored(i: int) -> np.ndarray:
            return np.asarray(reader.embeddings[int(np.searchsorted(ids, like_ids[i]))], np.float32)

        engine = ServeEngine(root / "store", device="cpu")
        for text in set(cached):
            engine.search_text(text, k)
        local = {
            "like": lambda i: reader.search(stored(i), k),
            "text, cached": lambda i: engine.search_text(cached[i], k),
            "text, uncached": lambda i: engine.search_text(f"an in-process query {next(fresh)}", k),
        }
        port = free_port()
        proc = start_server(root / "store", port)
        url = f"http://127.0.0.1:{port}"
        try:
            requests = {
                "like": lambda c, i: c.get("/api/search", params={"like": int(like_ids[i % len(like_ids)]), "k": k}),
                "text, cached": lambda c, i: c.get("/api/search", params={"q": cached[i % len(cached)], "k": k}),
                "text, uncached": lambda c, i: c.get("/api/search", params={"q": f"http query {next(fresh)}", "k": k}),
            }
            with httpx.Client(base_url=url, timeout=300) as client:
                for text in set(cached):
                    client.get("/api/search", params={"q": text, "k": k})
                timed = {name: paired(local[name], lambda i, f=f: f(client, i), r if "uncached" not in name else
                                      args.uncached) for name, f in requests.items()}  # fmt: skip
            for name, f in requests.items():
                per_client = max(1, (r if "uncached" not in name else args.uncached) // args.clients)
                first = throughput(f, 1, per_client * 2, url)
                many = throughput(f, args.clients, per_client, url)
                one = (first + throughput(f, 1, per_client * 2, url)) / 2  # one client before and after: load drifts
                a, b = timed[name]
                latency_rows.append((f"{n:,}", name, f"{np.median(a):.1f} / {np.percentile(a, 99):.1f}",
                                     f"{np.median(b):.1f} / {np.percentile(b, 99):.1f}",
                                     f"{np.median(b / a):.2f}"))  # fmt: skip
                rate_rows.append((f"{n:,}", name, f"{one:.1f}", f"{many:.1f}", f"{many / one:.2f}"))
                print(latency_rows[-1], rate_rows[-1], flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return latency_rows, rate_rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--requests", type=int, default=100, help="timed requests per measurement")
    parser.add_argument("--uncached", type=int, default=32, help="timed requests with new texts (the text tower runs)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--tmp", default=None, help="folder for the temporary stores")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vp-bench-serve-model-", dir=args.tmp) as folder:
        model = save_text_model(Path(folder) / "model")
        results = [bench_size(n, model, args) for n in args.sizes]
    print(f"\nCPU: {cpu_name()} ({os.cpu_count()} cores); k={args.k}; {args.requests} timed requests per latency "
          f"({args.uncached} with new texts)\n")  # fmt: skip
    print("| rows | query | in process, ms p50 / p99 | HTTP, ms p50 / p99 | HTTP / in process (median of pairs) |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for row in (row for latency, _ in results for row in latency):
        print("| " + " | ".join(row) + " |")
    print(f"\n| rows | query | 1 client, req/s | {args.clients} clients, req/s | ratio |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for row in (row for _, rates in results for row in rates):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
