"""What a spatially pooled feature cache costs a probe: accuracy of ``tokens`` against ``pooled2`` / ``pooled4``.

Generates a labelled set of red and green laid out as a checkerboard, rows or columns (the class; the same mean colour
in every class) in cells of one patch (``--task layout``: the class lies in how neighbouring tokens relate, the worst
case for pooling) or of 2 pixels (``--task texture``: the class lies inside every patch, as in most real classes),
saves a small random LvT model (64x64 frames, patch 8: an 8x8 token grid, so both pooling factors divide it), and for
each cache kind in the same run trains the attentive head (and the linear head) on the same split with the same
settings, then reports:

* ``cache top-1``: the head on the cached (possibly pooled) validation features, as during training;
* ``saved top-1``: the saved classifier on the validation VIDEOS (full token grid, from pixels): the accuracy a user
  gets, which is what a pooled cache can cost (the head is trained on averaged tokens, applied to full ones);
* the cache's bytes per clip and the head-training seconds, as ratios to ``tokens``.

A random encoder is a weak stand-in for VideoPrism's features: read the figures as what pooling removes from the
tokens (spatial detail), not as Kinetics accuracy. Usage::

    python benchmarks/probe_cache_accuracy.py                  # layout task, 3 classes x 12 videos, 2 seeds
    python benchmarks/probe_cache_accuracy.py --task texture --videos 8 --seeds 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from videoprism import (  # noqa: E402
    VideoPrismClipModel,
    VideoPrismConfig,
    VideoPrismTextConfig,
    VideoPrismVideoProcessor,
    VideoPrismVisionConfig,
)
from videoprism.probe.api import train_probe  # noqa: E402

LAYOUTS = ("checks", "rows", "columns")
CELL = 8  # one patch
SIZE = 64


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def make_video(path: Path, layout: str, rng: np.random.Generator, frames: int = 8, cell: int = CELL) -> None:
    """Red and green (per-video brightness) laid out patch by patch as a checkerboard, rows or columns, shifting by
    one cell a frame.

    Every layout covers half the frame with each colour, so a clip's mean colour says nothing about its class: the
    class lies in how neighbouring patches relate, which a 2x2 or 4x4 average of the token grid blurs.
    """
    y, x = np.mgrid[0:SIZE, 0:SIZE] // cell
    colours = np.array([[200.0, 60.0, 60.0], [60.0, 170.0, 80.0]]) * rng.uniform(0.8, 1.1)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            mask = {"checks": x + y + t, "rows": y + t, "columns": x + t}[layout] % 2
            image = colours[mask] + rng.normal(0, 6, (SIZE, SIZE, 3))
            frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def make_set(root: Path, per_class: int, cell: int) -> Path:
    rng = np.random.default_rng(0)
    for layout in LAYOUTS:
        (root / layout).mkdir(parents=True)
        for i in range(per_class):
            make_video(root / layout / f"{i}.mp4", layout, rng, cell=cell)
    return root


def make_model(folder: Path) -> Path:
    vision = VideoPrismVisionConfig(
        hidden_size=64, num_attention_heads=4, intermediate_size=256, num_spatial_layers=2, num_temporal_layers=2,
        num_auxiliary_layers=1, image_size=SIZE, tubelet_size=[1, 8, 8], num_frames=8,
    )  # fmt: skip
    text = VideoPrismTextConfig(
        vocab_size=64, hidden_size=64, num_attention_heads=4, num_hidden_layers=1, max_position_embeddings=16
    )
    torch.manual_seed(0)
    model = VideoPrismClipModel(VideoPrismConfig(vision, text))
    with torch.no_grad():  # away from the initialisation, whose tokens barely differ between videos
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    VideoPrismVideoProcessor(num_frames=8, size=SIZE).save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=12, help="videos per class")
    parser.add_argument("--seeds", type=int, default=2, help="splits / initialisations averaged")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--caches", nargs="+", default=["tokens", "pooled2", "pooled4"])
    parser.add_argument("--heads", nargs="+", default=["attentive", "linear"])
    parser.add_argument(
        "--task",
        choices=["layout", "texture"],
        default="layout",
        help="layout: cells of one patch (the class lies between neighbouring tokens, the worst case for pooling); "
        "texture: cells of 2 pixels (the class lies inside every patch, as in most real classes)",
    )
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_set(tmp / "data", args.videos, CELL if args.task == "layout" else 2)
        model = make_model(tmp / "model")
        for head in args.heads:
            for cache in args.caches:
                cached, saved, seconds = [], [], []
                for seed in range(args.seeds):
                    out = tmp / f"{head}-{cache}-{seed}"
                    t0 = time.perf_counter()
                    run = train_probe(
                        data, out, model, cache=cache, cache_dir=tmp / "cache", head=head, epochs=args.epochs,
                        lr=args.lr, batch_size=8, patience=0, dropout=0.0, label_smoothing=0.0, seed=seed,
                        val_split=0.25, workers=0, device="cpu",
                    )  # fmt: skip
                    seconds.append(time.perf_counter() - t0)
                    cached.append(run.metrics["val_features"]["top1"])
                    saved.append(run.metrics["val"]["top1"])
                pool = {"tokens": 1, "pooled2": 2, "pooled4": 4}[cache]
                size = 8 * (SIZE // 8 // pool) ** 2 * 64 * 2  # frames x tokens per frame x width x fp16
                rows.append(
                    dict(head=head, cache=cache, cache_top1=statistics.mean(cached), saved_top1=statistics.mean(saved),
                         bytes_per_clip=size, seconds=statistics.mean(seconds))
                )  # fmt: skip
    print(f"CPU: {cpu_name()}; task {args.task}; {args.videos} videos x {len(LAYOUTS)} classes, 25% held out, "
          f"{args.seeds} seeds, {args.epochs} epochs; mean top-1 over seeds")  # fmt: skip
    print(f"{'head':<10} {'cache':<8} {'cache top-1':>11} {'saved top-1':>11} {'KiB/clip':>9} {'size':>6}")
    for row in rows:
        base = next(r for r in rows if r["head"] == row["head"] and r["cache"] == "tokens")
        ratio = row["bytes_per_clip"] / base["bytes_per_clip"] if base["bytes_per_clip"] else float("nan")
        print(f"{row['head']:<10} {row['cache']:<8} {row['cache_top1']:>11.3f} {row['saved_top1']:>11.3f} "
              f"{row['bytes_per_clip'] / 1024:>9.1f} {ratio:>6.3f}")  # fmt: skip
    return {"rows": rows, "cpu": cpu_name()}


if __name__ == "__main__":
    main()
