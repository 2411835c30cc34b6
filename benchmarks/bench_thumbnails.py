"""What the poster thumbnails cost `videoprism embed`: bytes per row and share of the embedding time.

Generates ``--videos`` clips of ``--seconds`` s at 640x360 (coloured shapes moving, x264) and embeds them with
``--window`` second windows into fresh stores, with posters (`embed_videos(thumbnails=True)`, the default) and without,
alternating the two round by round in one run, with the same model, workers and batch size. The model is the tiny
random LvT checkpoint of the tests, so embedding is nearly free and decoding dominates: the share measured here is an
upper bound for a real model. Also times the poster work alone per row (JPEG of the middle frame in the decoding
worker, atomic write in the main process). Usage::

    python benchmarks/bench_thumbnails.py                        # 8 videos of 10 s, windows of 2 s, 3 rounds
    python benchmarks/bench_thumbnails.py --videos 16 --rounds 5 --workers 1
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _checkpoints import save_tiny_clip_model  # noqa: E402
from _shapes import SCENES, make_shape_video  # noqa: E402

from videoprism.collection import embed_videos  # noqa: E402
from videoprism.collection.thumbnails import THUMBS_DIR, clip_posters, thumbnail_key, write_thumbnail  # noqa: E402
from videoprism.store import open_store  # noqa: E402
from videoprism.video_io import read_video  # noqa: E402

SPM = ROOT / "tests" / "fixtures" / "tokenizer" / "spm_t5layout.model"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown CPU"


def poster_work(store: Path, tmp: Path) -> tuple[float, float]:
    """Milliseconds per row of the poster work alone over the store's window rows: (JPEG, atomic write)."""
    rows = [r for r in open_store(store).metadata.to_pylist() if r["kind"] == "window"]
    encode = write = 0.0
    for row in rows:
        clip = read_video(
            row["path"], num_frames=len(row["frame_indices"]), start_time=row["start"], end_time=row["end"]
        )
        t0 = time.perf_counter()
        posters = clip_posters(clip.frames, ("window",))
        t1 = time.perf_counter()
        write_thumbnail(tmp, thumbnail_key(row["path"], "window", row["start"], row["end"]), posters["window"])
        t2 = time.perf_counter()
        encode, write = encode + t1 - t0, write + t2 - t1
    return encode / len(rows) * 1e3, write / len(rows) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tmp", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vp-bench-thumbs-", dir=args.tmp) as folder:
        root = Path(folder)
        model = save_tiny_clip_model(root / "model", SPM)
        (root / "videos").mkdir()
        for i in range(args.videos):
            name, background, colour, shape = SCENES[i % len(SCENES)]
            make_shape_video(root / "videos" / f"{i:03d}_{name}.mp4", background, colour, shape, args.seconds,
                             fps=30, size=(640, 360))  # fmt: skip
        seconds: dict[bool, list[float]] = {True: [], False: []}
        rows = thumbs_bytes = thumbs = 0
        for r in range(args.rounds):
            for posters in (True, False) if r % 2 == 0 else (False, True):
                store = root / f"store-{r}-{posters}"
                t0 = time.perf_counter()
                embed_videos(root / "videos", store, model, window=args.window, workers=args.workers,
                             batch_size=args.batch_size, progress=False, thumbnails=posters)  # fmt: skip
                seconds[posters].append(time.perf_counter() - t0)
                if posters:
                    rows = len(open_store(store))
                    files = list((store / THUMBS_DIR).glob("*/*.jpg"))
                    thumbs, thumbs_bytes = len(files), sum(f.stat().st_size for f in files)
                    last = store
                else:
                    shutil.rmtree(store)
        encode_ms, write_ms = poster_work(last, root / "alone")
    on, off = statistics.median(seconds[True]), statistics.median(seconds[False])
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); {args.videos} videos x {args.seconds:g} s at 640x360, "
          f"windows of {args.window:g} s, {args.workers} decoding worker(s), tiny model, {args.rounds} rounds "
          "(medians)\n")  # fmt: skip
    print("| embed | seconds | ratio |")
    print("| --- | ---: | ---: |")
    print(f"| without posters | {off:.2f} | 1.00 |")
    print(f"| with posters | {on:.2f} | {on / off:.3f} |")
    print(f"\nrows {rows}, thumbnails {thumbs}, {thumbs_bytes / thumbs:.0f} bytes per thumbnail, "
          f"{thumbs_bytes / rows:.0f} bytes per row")  # fmt: skip
    print(
        f"poster work alone per row: JPEG {encode_ms:.2f} ms (decoding worker), atomic write {write_ms:.2f} ms (main)"
    )
    print(f"embed time per row without posters: {off / rows * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
