"""Scaling of `videoprism embed --engine ray` with the number of inference actors, on a local Ray instance.

Generates ``--videos`` clips of ``--seconds`` s (colour ramps, x264 with the encoder's default keyframe interval)
once into a folder, saves a small LvT model with random weights (``--width`` wide, 8 frames of 144 x 144; see
`save_model`) and its video processor to a temporary folder, starts Ray with ``--cpus`` CPUs, then embeds clips into
a fresh store with `embed_videos_ray`, twice per ``--concurrency`` value and round (values alternate within a round,
so a slow spell of a shared machine hits all of them). Inference runs on CPUs, 1 CPU per actor, so Ray fuses decoding
into the actors (each decodes in its own child process): N actors use N CPUs for decoding and inference together.

Reported per concurrency (median over the rounds), from two runs each: the first ``--small`` clips, then all
``--videos`` clips:

* ``pipeline``: clips / `EmbedSummary.seconds` of the full run (Ray pipeline: actor start-up, model load, decode,
  infer, write, compaction excluded);
* ``marginal``: the extra clips of the full run over its extra seconds, ``(N - n) / (T_N - T_n)``: the throughput
  once the actors are up, with the fixed start-up cost cancelled out; and its speed-up over the first concurrency.

Usage::

    python benchmarks/bench_ray.py                                   # 128 clips, concurrency 1 and 2, 3 rounds
    python benchmarks/bench_ray.py --cpus 16 --concurrency 1 2 4 8 --videos 256
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bench_embed import load_text, make_videos  # noqa: E402  (the same generated clips and load report)

from videoprism import VideoPrismClipModel, VideoPrismConfig, VideoPrismTextConfig, VideoPrismVisionConfig  # noqa: E402
from videoprism.collection import embed_videos_ray  # noqa: E402
from videoprism.video_processing import VideoPrismVideoProcessor  # noqa: E402


def save_model(folder: Path, width: int) -> int:
    """A small LvT (8 frames of 144 x 144, 16 x 16 patches: 81 tokens a frame) with random weights; returns #params."""
    config = VideoPrismConfig(
        VideoPrismVisionConfig(
            hidden_size=width, num_attention_heads=max(1, width // 64), intermediate_size=4 * width,
            num_spatial_layers=6, num_temporal_layers=2, num_auxiliary_layers=1, image_size=144,
            tubelet_size=[1, 16, 16], num_frames=8,
        ),
        VideoPrismTextConfig(
            vocab_size=1000, hidden_size=width, num_attention_heads=max(1, width // 64), intermediate_size=4 * width,
            num_hidden_layers=2, max_position_embeddings=64,
        ),
    )  # fmt: skip
    torch.manual_seed(0)
    model = VideoPrismClipModel(config)
    model.save_pretrained(folder)
    VideoPrismVideoProcessor(num_frames=8, size=144).save_pretrained(folder)
    return sum(p.numel() for p in model.video_model.parameters())


def run_once(videos: list[Path], model: Path, store: Path, concurrency: int, batch_size: int) -> tuple[int, float]:
    """One `embed_videos_ray` run into a fresh store: ``(clips, seconds of the Ray pipeline)``."""
    shutil.rmtree(store, ignore_errors=True)
    summary = embed_videos_ray(videos, store, model, concurrency=concurrency, batch_size=batch_size, progress=False)
    if summary.failed:
        raise RuntimeError(f"{summary.failed} videos failed: {summary.failures[:3]}")
    return summary.clips, summary.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=128, help="number of clips to generate and embed")
    parser.add_argument("--small", type=int, default=8, help="clips of the short run that measures start-up")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--video-dir", type=Path, default=Path(tempfile.gettempdir()) / "videoprism-bench-ray-videos")
    parser.add_argument("--width", type=int, default=384, help="hidden size of the random model")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray instance")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2], help="inference actors to compare")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    print(f"torch {torch.__version__}, ray {ray.__version__}, {os.cpu_count()} CPUs, load {load_text()}")
    make_videos(args.video_dir, args.videos, args.seconds, args.fps, (320, 180))
    videos = sorted(args.video_dir.glob("clip_*.mp4"))[: args.videos]
    small = videos[: args.small]
    results: dict[int, list[tuple[float, float]]] = {c: [] for c in args.concurrency}
    with tempfile.TemporaryDirectory(prefix="vp-bench-ray-") as tmp_name:
        tmp = Path(tmp_name)
        params = save_model(tmp / "model", args.width)
        print(
            f"model: LvT video tower {params / 1e6:.1f} M params (random), 8 x 144 x 144, fp32, batch {args.batch_size}"
        )
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="warning")
        try:
            for r in range(args.rounds):
                for c in args.concurrency:
                    n_small, t_small = run_once(small, tmp / "model", tmp / "store", c, args.batch_size)
                    n_full, t_full = run_once(videos, tmp / "model", tmp / "store", c, args.batch_size)
                    pipeline, marginal = n_full / t_full, (n_full - n_small) / (t_full - t_small)
                    results[c].append((pipeline, marginal))
                    print(
                        f"round {r + 1}, concurrency {c}: {n_small} clips in {t_small:.1f} s, {n_full} clips in "
                        f"{t_full:.1f} s: pipeline {pipeline:.2f} clips/s, marginal {marginal:.2f} clips/s; "
                        f"load {load_text()}",
                        flush=True,
                    )
        finally:
            ray.shutdown()
    base = statistics.median(m for _, m in results[args.concurrency[0]])
    print(f"\n{'concurrency':>11}  {'pipeline clips/s':>16}  {'marginal clips/s':>16}  {'speed-up':>8}")
    for c, runs in results.items():
        pipeline = statistics.median(p for p, _ in runs)
        marginal = statistics.median(m for _, m in runs)
        print(f"{c:>11}  {pipeline:>16.2f}  {marginal:>16.2f}  {marginal / base:>7.2f}x")


if __name__ == "__main__":
    main()
