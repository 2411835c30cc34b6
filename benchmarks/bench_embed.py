"""End-to-end throughput of `videoprism embed` against the model alone, and search latency through the store.

Generates ``--videos`` clips of ``--seconds`` s at 640x360 (colour ramps, x264 with the encoder's default keyframe
interval, as real files have) once into a folder, saves a base-size LvT model with random weights (the
``videoprism-lvt-base-f16r288`` preset config) and its video processor to a temporary folder, then measures in the
same run, with the same model, dtype and batch size:

* ``model only``: forward passes over pre-processed clips already in memory (clips/s);
* ``embed``: `embed_videos` over the folder into a fresh store -- decoding in worker processes, inference,
  store writes and compaction (clips/s end to end, and from the first batch on);
* ``busy``: the share of the pipeline's steady state (first batch to last) that the model spent computing.

The goal is ``embed / model only >= 0.9``: decoding keeps up and the model is never starved. On a CPU the decoding
workers share the cores with the model, so some slowdown is expected there. Then it runs
``benchmarks/bench_search.py`` for the store's search latency (``--search-sizes``, 0 to skip). Usage::

    python benchmarks/bench_embed.py                          # 24 clips of 10 s, fp32, batch 8, 100k + 1M search
    python benchmarks/bench_embed.py --dtype bfloat16 --workers 2 --search-sizes 0
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _videos import make_video  # noqa: E402

from videoprism import PRESETS, VideoPrismClipModel  # noqa: E402
from videoprism.collection import VideoEmbedder, embed_videos, load_video_embedder  # noqa: E402
from videoprism.collection.decode_pool import default_workers  # noqa: E402
from videoprism.video_processing import VideoPrismVideoProcessor  # noqa: E402

PRESET = "videoprism-lvt-base-f16r288"


def load_text() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def make_videos(folder: Path, count: int, seconds: float, fps: int, size: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    t0 = time.perf_counter()
    for i in range(count):
        path = folder / f"clip_{i:03d}.mp4"
        if not path.exists():
            tmp = folder / f".tmp_{path.name}"
            make_video(tmp, num_frames=round(seconds * fps), fps=fps, size=size, gop=None, pattern="ramp")
            tmp.rename(path)
        paths.append(path)
    took = time.perf_counter() - t0
    print(f"videos: {count} x {seconds:g} s {size[0]}x{size[1]} @ {fps} fps in {folder} ({took:.0f} s)")
    return paths


def save_model(folder: Path) -> None:
    preset = PRESETS[PRESET]
    torch.manual_seed(0)
    model = VideoPrismClipModel(preset.config())
    model.save_pretrained(folder)
    VideoPrismVideoProcessor(num_frames=preset.vision["num_frames"]).save_pretrained(folder)


def model_only(embedder: VideoEmbedder, processor, paths: list[Path], batch: int, repeats: int) -> float:
    """Clips/s of forward passes over one batch of pre-processed clips (after a warm-up pass of the same shape: the
    first pass at a new shape is much slower on CPU)."""
    clips = [processor(str(p), return_tensors="pt")["pixel_values_videos"][0] for p in paths[:batch]]
    while len(clips) < batch:
        clips.append(clips[len(clips) % len(paths)])
    pixels = torch.stack(clips)
    embedder(pixels)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        embedder(pixels)
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def pipeline(model_dir: Path, videos: Path, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """Runs `embed_videos`, timing each forward pass through a wrapper around `VideoEmbedder.__call__`."""
    calls: list[tuple[float, float, int]] = []
    original = VideoEmbedder.__call__

    def timed(self, pixels, frames=False):
        t0 = time.perf_counter()
        out = original(self, pixels, frames)
        calls.append((t0, time.perf_counter(), len(pixels)))
        return out

    VideoEmbedder.__call__ = timed
    store = tmp / "store"
    shutil.rmtree(store, ignore_errors=True)
    try:
        t0 = time.perf_counter()
        summary = embed_videos(videos, store, model_dir, device=args.device, dtype=args.dtype,
                               batch_size=args.batch_size, workers=args.workers, progress=False)  # fmt: skip
        total = time.perf_counter() - t0
    finally:
        VideoEmbedder.__call__ = original
    if summary.failed:
        raise RuntimeError(f"{summary.failed} videos failed: {summary.failures[:3]}")
    first_end = calls[0][1]
    steady_clips = sum(n for _, _, n in calls[1:])
    steady_span = calls[-1][1] - first_end
    busy = sum(end - start for start, end, _ in calls[1:]) / steady_span if steady_span > 0 else float("nan")
    return {
        "clips": summary.clips,
        "total_s": total,
        "pipeline_s": summary.seconds,
        "end_to_end": summary.clips / total,
        "pipeline": summary.clips / summary.seconds,
        "steady": steady_clips / steady_span if steady_span > 0 else float("nan"),
        "busy": busy,
        "first_batch_s": first_end - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=24, help="number of clips to generate")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--video-dir", type=Path, default=Path(tempfile.gettempdir()) / "videoprism-bench-videos")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: embed's default)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="timed model-only batches")
    parser.add_argument("--search-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load {load_text()}")
    paths = make_videos(args.video_dir, args.videos, args.seconds, args.fps, (640, 360))
    with tempfile.TemporaryDirectory(prefix="vp-bench-embed-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = tmp / "model"
        save_model(model_dir)
        embedder, processor = load_video_embedder(model_dir, device=args.device, dtype=args.dtype)
        workers = default_workers(len(paths)) if args.workers is None else args.workers
        print(f"model: {PRESET} (random weights), {args.dtype}, batch {args.batch_size}, {workers} decoding workers")
        alone = model_only(embedder, processor, paths, args.batch_size, args.repeats)
        del embedder
        print(f"{'model only:':<22} {alone:6.3f} clips/s   (median of {args.repeats} batches; load {load_text()})")
        run = pipeline(model_dir, args.video_dir, args, tmp)
        rows = [
            ("embed, end to end", run["end_to_end"],
             f"{run['clips']} clips in {run['total_s']:.1f} s, incl. model load, worker start, compaction"),
            ("embed, pipeline", run["pipeline"],
             f"decode + infer + write: {run['pipeline_s']:.1f} s; first batch after {run['first_batch_s']:.1f} s"),
            ("embed, steady state", run["steady"],
             f"after the first batch; model busy {run['busy']:.0%} of the time; load {load_text()}"),
        ]  # fmt: skip
        for name, rate, note in rows:
            print(f"{name + ':':<22} {rate:6.3f} clips/s   ({note})")
        print(
            f"ratio pipeline / model only: {run['pipeline'] / alone:.2f}; steady state / model only: "
            f"{run['steady'] / alone:.2f} (goal >= 0.90)"
        )
    sizes = [n for n in args.search_sizes if n > 0]
    if sizes:
        print("\n# search latency (benchmarks/bench_search.py)", flush=True)
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_search.py"), "--sizes", *map(str, sizes)]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
