"""Our models from two or more source trees, in one run: seconds and fraction of the matmul probe per dtype.

    python benchmarks/bench_trees.py --tree before=/path/to/old/checkout --tree after=. --rounds 3
    python benchmarks/bench_trees.py --tree main=. --cpu-gemms aten onednn --dtypes fp32   # one tree, both libraries

Each tree's `videoprism` package is imported through PYTHONPATH in its own worker subprocess (`bench_models.py
--worker`), on the same random weights and inputs; trees alternate call by call and the matmul probe runs every round,
so slow phases of a shared machine hit all of them alike. Reports medians. `--cpu-gemms` runs every tree once per
fp32 GEMM library (`VIDEOPRISM_CPU_GEMM`); the fp32 probe is the faster library's (both are printed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench_embed import cpu_name
from bench_models import DTYPES, cpu_probes, measure, model_flops, per_library, perturbed_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH (a folder holding videoprism/)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["vision", "clip"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--cpu-gemms", nargs="+", choices=("aten", "onednn"), help="run each tree once per library")
    args = parser.parse_args()
    paths = {name: str(Path(path).resolve()) for name, path in (item.split("=", 1) for item in args.tree)}
    trees = {}  # name -> the worker's environment
    for name, path in paths.items():
        for gemm in args.cpu_gemms or [""]:  # "": the default library
            trees[f"{name}/{gemm}" if gemm else name] = {"PYTHONPATH": path, "VIDEOPRISM_CPU_GEMM": gemm}
    print(f"CPU: {cpu_name()}", flush=True)
    cases = [(kind, dtype) for kind in args.kinds for dtype in args.dtypes]
    times = {(name, kind, dtype): [] for name in trees for kind, dtype in cases}
    rss = {key: [] for key in times}
    probes = {dtype: [] for dtype in args.dtypes}  # per round: {"aten": ..., "onednn": ..., "best": ...}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        perturbed_models(folder)
        for round_index in range(args.rounds):
            for dtype in args.dtypes:
                probes[dtype].append(cpu_probes(DTYPES[dtype]))
            for kind, dtype in cases:
                order = list(trees) if round_index % 2 == 0 else list(trees)[::-1]
                for name in order:
                    variant = dict(impl="ours", kind=kind, dtype=dtype, batch=1, frames=16, env=trees[name])
                    result = measure(variant, folder, "cpu", 1)
                    times[name, kind, dtype].append(statistics.median(result["times"]))
                    rss[name, kind, dtype].append(result["peak_rss_mb"])
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    best = {dtype: [r["best"] for r in rounds] for dtype, rounds in probes.items()}
    probe = {dtype: statistics.median(values) for dtype, values in best.items()}
    spread = ", ".join(f"{d} {probe[d]:.0f} ({min(v):.0f}-{max(v):.0f})" for d, v in best.items())
    print(f"\nmatmul probe GFLOP/s, median (range): {spread}")
    for dtype, rounds in probes.items():
        print(f"{dtype} probe per library, median: {per_library(rounds)}")
    print()
    print("| model | dtype | " + " | ".join(f"{n} s | {n} of probe | {n} peak RSS MB" for n in trees) + " |")
    print("|---|---|" + "---:|---:|---:|" * len(trees))
    for kind, dtype in cases:
        flops = model_flops(kind, 1, 16)
        cells = []
        for name in trees:
            seconds = statistics.median(times[name, kind, dtype])
            peak = statistics.median(rss[name, kind, dtype])
            cells += [f"{seconds:.2f}", f"{flops / seconds / 1e9 / probe[dtype]:.0%}", f"{peak:.0f}"]
        print(f"| {kind} | {dtype} | " + " | ".join(cells) + " |")
    print("\nper-round seconds:", {"/".join(k): [round(t, 2) for t in v] for k, v in times.items()})


if __name__ == "__main__":
    main()
