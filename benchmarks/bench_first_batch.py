"""How long `embed` takes to reach its first forward pass, and what a decoding process holds, per source tree.

    python benchmarks/bench_first_batch.py --tree before=/path/to/old/checkout --tree after=. --tries 5

Each try runs `embed_videos` into a fresh store in its own ``python -c`` process, on ``--videos`` generated 10 s
videos (bench_embed.py's, cached in ``--cache-dir``) with the LvT-B preset config (random weights, fp32), and stops at
the first forward pass. A ``-c`` process has no script for the decoding processes to import again (``spawn`` runs the
parent's script in each of them, with its own imports), so they start as under ``videoprism embed``. Reported: the
seconds from the call to the first forward pass (model loading, decoding processes starting, the first batch decoded)
and the resident memory of each decoding process then. Trees alternate try by try; medians, with the range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import bench_embed

CHILD = r"""
import json, multiprocessing, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from videoprism.collection import VideoEmbedder, embed_videos

class FirstForward(Exception):
    pass

def stop(self, pixels, frames=False):
    at = time.perf_counter()
    rss = []
    for proc in multiprocessing.active_children():
        if proc.name.startswith("videoprism-decode"):
            with open(f"/proc/{proc.pid}/status") as f:
                rss += [int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:")]
    raise FirstForward(at, rss)

VideoEmbedder.__call__ = stop
videos = json.loads(sys.argv[4])
start = time.perf_counter()
try:
    embed_videos(videos, tempfile.mkdtemp() + "/store", sys.argv[2], dtype="float32", batch_size=int(sys.argv[3]),
                 progress=False)
except FirstForward as first:
    print(json.dumps({"first_s": first.args[0] - start, "rss_mb": first.args[1]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH (a folder holding videoprism/)")
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "videoprism-bench-videos")
    args = parser.parse_args()
    trees = dict(tree.split("=", 1) for tree in args.tree)
    videos = [str(p) for p in bench_embed.make_videos(args.cache_dir / "generated", "clip", args.videos, 10.0, 30)]
    results: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        bench_embed.save_model(model, tiny=False)
        for _ in range(args.tries):
            for name, path in trees.items():
                cmd = [sys.executable, "-c", CHILD, str(Path(path).resolve()), str(model), str(args.batch_size)]
                done = subprocess.run([*cmd, json.dumps(videos)], capture_output=True, text=True)
                if done.returncode or not done.stdout.strip():
                    sys.exit(f"tree {name}: the try failed\n{done.stderr[-3000:]}")
                results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"CPU: {bench_embed.cpu_name()}; {args.videos} videos, batch {args.batch_size}, {args.tries} tries per tree")
    print("| tree | first forward pass, s: median (range) | decoding processes | each one's RSS, MB: median |")
    print("|---|---|---:|---:|")
    for name, tries in results.items():
        firsts = [t["first_s"] for t in tries]
        rss = [mb for t in tries for mb in t["rss_mb"]]
        processes = statistics.median(len(t["rss_mb"]) for t in tries)
        rss_text = f"{statistics.median(rss):.0f}" if rss else "-"
        print(f"| {name} | {statistics.median(firsts):.2f} ({min(firsts):.2f}-{max(firsts):.2f}) | {processes:g} | "
              f"{rss_text} |")  # fmt: skip


if __name__ == "__main__":
    main()
