"""Decoding the frames the model needs: every frame up to each sampled one, or only those some frame refers to.

The reader decodes forward from a keyframe to each sampled frame. Frames that are not sampled and that no other frame
is predicted from (most B-frames of H.264 and HEVC) are dropped by the decoder (``skip_frame = NONREF``); the
sampled frames come out the same. This script times both ways on the videos of ``benchmarks/bench_embed.py`` (made
or fetched once into ``--cache-dir``), in one run, alternating the two ways per video, and checks the frames equal:

* whole videos: `read_video` with 16 frames (what ``videoprism embed`` reads per video);
* windows: `read_windows` of ``--window`` s every ``--stride`` s, in one pass.

Usage::

    python benchmarks/bench_decode.py
    python benchmarks/bench_decode.py --sets real --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import count_decoded, cpu_name, fetch_real_videos, load_text, make_videos, videos_in  # noqa: E402

from videoprism import _video_reader  # noqa: E402
from videoprism.video_io import read_video, read_windows  # noqa: E402


def read(path: Path, window: float | None, stride: float, num_frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if window is None:
        video = read_video(path, num_frames=num_frames)
        return [(video.indices, video.frames)]
    return [(w.video.indices, w.video.frames) for w in read_windows(path, num_frames, window, stride)]


def compare(paths: list[Path], window: float | None, stride: float, num_frames: int, repeats: int) -> dict:
    """Seconds (sum over videos of the median per video) and frames decoded, both ways, outputs checked equal."""
    counts = count_decoded()
    out = {"plain_s": 0.0, "skip_s": 0.0, "plain_decoded": 0, "skip_decoded": 0}
    for path in paths:
        times: dict[bool, list[float]] = {False: [], True: []}
        results, decoded = {}, {}
        for _ in range(repeats):
            for skip in (False, True):
                _video_reader.Reader.skip_unneeded = skip
                counts["frames"] = 0
                t0 = time.perf_counter()
                results[skip] = read(path, window, stride, num_frames)
                times[skip].append(time.perf_counter() - t0)
                decoded[skip] = counts["frames"]
        for (a_idx, a), (b_idx, b) in zip(results[False], results[True], strict=True):
            assert np.array_equal(a_idx, b_idx) and np.array_equal(a, b), f"{path.name}: frames differ"
        for skip, label in ((False, "plain"), (True, "skip")):
            out[f"{label}_s"] += statistics.median(times[skip])
            out[f"{label}_decoded"] += decoded[skip]
    _video_reader.Reader.skip_unneeded = True
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sets = ("generated", "real", "long")
    parser.add_argument("--sets", nargs="+", choices=sets, default=list(sets))
    parser.add_argument("--videos", type=int, default=12, help="generated 10 s clips read whole")
    parser.add_argument("--long-videos", type=int, default=2, help="generated 30 s videos, read whole and in windows")
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--stride", type=float, default=1.0)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "videoprism-bench-videos")
    args = parser.parse_args()

    rows = []  # (name, paths, window or None)
    windows = f"{args.window:g}/{args.stride:g} s"
    if "generated" in args.sets:
        generated = make_videos(args.cache_dir / "generated", "clip", args.videos, 10, 30)
        rows.append(("whole, generated 10 s", generated, None))
    if "real" in args.sets:
        real = videos_in(fetch_real_videos(args.cache_dir))
        rows += [("whole, published", real, None), (f"windows {windows}, published", real, args.window)]
    if "long" in args.sets:
        long = make_videos(args.cache_dir / "long_30", "long", args.long_videos, 30, 30)
        rows += [("whole, generated 30 s", long, None), (f"windows {windows}, generated 30 s", long, args.window)]

    print(f"# decoding {args.num_frames} frames per clip; CPU: {cpu_name()}; load {load_text()}")
    print("# every: every frame up to each sampled one decoded; skip: unsampled frames no frame refers to dropped")
    print(f"{'set':<36} {'videos':>6} {'decoded every':>13} {'skip':>6} {'every s':>8} {'skip s':>7} {'speed-up':>8}")
    for name, paths, window in rows:
        r = compare(paths, window, args.stride, args.num_frames, args.repeats)
        print(f"{name:<36} {len(paths):>6} {r['plain_decoded']:>13} {r['skip_decoded']:>6} {r['plain_s']:>8.2f} "
              f"{r['skip_s']:>7.2f} {r['plain_s'] / r['skip_s']:>7.2f}x", flush=True)  # fmt: skip
    print(f"(seconds: sum over the videos of the median of {args.repeats}; frames checked equal; load {load_text()})")


if __name__ == "__main__":
    main()
