"""Throughput of `videoprism probe`'s steps: feature extraction against `embed_videos`, and the cache's size.

Generates ``--videos`` clips of ``--seconds`` s at 640x360 once into a folder (labelled by a CSV with two classes),
saves an LvT model with random weights (the ``videoprism-lvt-base-f16r288`` preset config; ``--layers N`` keeps only
N layers per stage for a quicker run, with the same token grid) and its video processor, then measures in the same
run, with the same model, dtype, batch size and decoding workers:

* ``embed``: `embed_videos` over the clips into a fresh store (clips/s; the reference pipeline);
* ``extract <cache>``: `extract_features` into a fresh cache folder for each cache kind (clips/s, and the ratio to
  ``embed``: the same decoding and forward pass, plus writing tokens instead of one embedding);
* ``reuse <cache>``: the same call again, served from the cache without decoding (clips/s);
* the cache's bytes per clip on disk for each kind.

`bench_heads` measures head training on the extracted features: steps/s of the attentive and linear probes for each
token cache, float32 and bfloat16 autocast, as ratios to the first row. Usage::

    python benchmarks/bench_probe.py                        # 16 clips of 4 s, base model, fp32, batch 8
    python benchmarks/bench_probe.py --layers 2 --videos 8 --caches pooled2 embedding
"""

from __future__ import annotations

import argparse
import os
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
from videoprism.collection import embed_videos  # noqa: E402
from videoprism.collection.decode_pool import default_workers  # noqa: E402
from videoprism.probe.data import load_labelled_set  # noqa: E402
from videoprism.probe.features import CACHE_KINDS, ProbeFeatures, extract_features  # noqa: E402
from videoprism.video_processing import VideoPrismVideoProcessor  # noqa: E402

PRESET = "videoprism-lvt-base-f16r288"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def make_clips(folder: Path, count: int, seconds: float, fps: int) -> Path:
    """``count`` videos and a ``set.csv`` labelling them with two alternating classes; returns the CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,label"]
    for i in range(count):
        path = folder / f"clip_{i:03d}.mp4"
        if not path.exists():
            tmp = folder / f".tmp_{path.name}"
            make_video(tmp, num_frames=round(seconds * fps), fps=fps, size=(640, 360), gop=None)
            tmp.rename(path)
        rows.append(f"{path.name},{'ab'[i % 2]}")
    (folder / "set.csv").write_text("\n".join(rows) + "\n")
    return folder / "set.csv"


def save_model(folder: Path, layers: int | None) -> str:
    preset = PRESETS[PRESET]
    config = preset.config()
    if layers:
        vision = config.vision_config
        for name in ("num_spatial_layers", "num_temporal_layers", "num_auxiliary_layers"):
            setattr(vision, name, min(layers, getattr(vision, name)))
    torch.manual_seed(0)
    VideoPrismClipModel(config).save_pretrained(folder)
    VideoPrismVideoProcessor(num_frames=preset.vision["num_frames"]).save_pretrained(folder)
    v = config.vision_config
    return f"{PRESET} ({v.num_spatial_layers}+{v.num_temporal_layers}+{v.num_auxiliary_layers} layers, random weights)"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def head_steps_per_second(
    feats: ProbeFeatures, kind: str, bf16: bool, device: torch.device, steps: int, batch: int
) -> float:
    """Optimiser steps per second of a `kind` probe on `feats` (one warm-up step first, not timed)."""
    import numpy as np

    from videoprism import VideoPrismVisionConfig
    from videoprism.probe.heads import build_head
    from videoprism.probe.train import FeatureBatches, probe_loss

    config = VideoPrismVisionConfig(**{**PRESETS[PRESET].vision, "hidden_size": feats.tokens.shape[-1]})
    data = FeatureBatches(feats, kind)
    torch.manual_seed(0)
    head = build_head(kind, config, len(feats.class_names), dropout=0.1).to(device).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for i in range(steps + 1):
        if i == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x, y = data.batch(np.sort(rng.choice(len(data), size=min(batch, len(data)), replace=False)))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = head(x.to(device))
        loss = probe_loss(logits, y.to(device), data.multi_label, 0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def bench_heads(features: dict[str, ProbeFeatures], args: argparse.Namespace) -> list[tuple[str, float, str]]:
    """Head-training throughput on the extracted features: ``(name, steps/s, note)`` rows for the report.

    For each cache kind with tokens, the attentive and the linear probe each run ``--head-steps`` optimiser steps of
    ``--head-batch`` clips read from the memory-mapped cache (forward, backward, AdamW), in float32 and, where the
    hardware computes it natively, under bfloat16 autocast; the note gives the ratio to the first row.
    """
    from videoprism.collection.embedder import auto_dtype, resolve_device

    device = resolve_device(args.device)
    precisions = [False] + ([True] if auto_dtype(device) == torch.bfloat16 else [])
    rows, base = [], None
    for cache, feats in features.items():
        if feats.tokens is None:
            continue
        for kind in ("attentive", "linear"):
            for bf16 in precisions:
                rate = head_steps_per_second(feats, kind, bf16, device, args.head_steps, args.head_batch)
                base = base or rate
                name = f"head {kind} {cache}{' bf16' if bf16 else ''}"
                batch = min(args.head_batch, len(feats.targets))
                rows.append((name, rate, f"batch {batch}; ratio to the first row {rate / base:.2f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=16, help="number of clips to generate")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--video-dir", type=Path, default=Path(tempfile.gettempdir()) / "videoprism-bench-probe")
    parser.add_argument("--layers", type=int, default=None, help="layers per stage (default: the preset's)")
    parser.add_argument("--caches", nargs="+", choices=list(CACHE_KINDS), default=list(CACHE_KINDS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: embed's default)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--head-steps", type=int, default=20, help="optimiser steps per head measurement")
    parser.add_argument("--head-batch", type=int, default=16, help="clips per head-training step")
    args = parser.parse_args()

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    where = torch.cuda.get_device_name() if str(device).startswith("cuda") else cpu_name()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {where}")
    csv = make_clips(args.video_dir, args.videos, args.seconds, args.fps)
    data = load_labelled_set(csv)
    workers = default_workers(len(data)) if args.workers is None else args.workers
    common = {"device": args.device, "dtype": args.dtype, "batch_size": args.batch_size, "workers": workers,
              "progress": False}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vp-bench-probe-") as tmp_name:
        tmp = Path(tmp_name)
        model = tmp / "model"
        name = save_model(model, args.layers)
        print(f"model: {name}, {args.dtype}, batch {args.batch_size}, {workers} decoding workers")
        print(f"clips: {len(data)} x {args.seconds:g} s 640x360 @ {args.fps} fps in {args.video_dir}")
        # warm-up: the first forward pass at a new shape is much slower on CPU; not measured
        extract_features(data.subset([0]), model, tmp / "warm-up", cache="embedding", **common)
        t0 = time.perf_counter()
        summary = embed_videos(args.video_dir, tmp / "store", model, **common)
        embed_rate = summary.clips / (time.perf_counter() - t0)
        print(f"{'embed:':<20} {embed_rate:7.3f} clips/s   (embed_videos, incl. model load and store compaction)")
        extracted: dict[str, ProbeFeatures] = {}
        for cache in args.caches:
            cache_dir = tmp / f"cache-{cache}"
            t0 = time.perf_counter()
            feats = extract_features(data, model, cache_dir, cache=cache, **common)
            rate = feats.decoded_clips / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            again = extract_features(data, model, cache_dir, cache=cache, **common)
            reuse = len(again.paths) / (time.perf_counter() - t0)
            per_clip = folder_bytes(cache_dir) / len(feats.paths)
            shape = "no tokens" if feats.tokens is None else f"tokens {tuple(feats.tokens.shape[1:])}"
            print(
                f"{'extract ' + cache + ':':<20} {rate:7.3f} clips/s   ratio to embed {rate / embed_rate:.2f}; "
                f"reuse {reuse:9.1f} clips/s ({again.decoded_clips} decoded); {per_clip / 2**20:8.3f} MiB/clip "
                f"on disk ({shape})"
            )
            extracted[cache] = again
        for row_name, steps, note in bench_heads(extracted, args):
            print(f"{row_name + ':':<20} {steps:7.3f} steps/s   ({note})")


if __name__ == "__main__":
    main()
