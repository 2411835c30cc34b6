"""Where our CPU forward spends its time, and the best ratio to transformers this CPU allows.

    python benchmarks/profile_cpu.py                      # base vision, batch 1, fp32
    python benchmarks/profile_cpu.py --kind clip          # LvT-B clip model (1 video, 5 prompts)
    python benchmarks/profile_cpu.py --dtype bf16         # both models in bfloat16, against the bf16 probe
    python benchmarks/profile_cpu.py --profile-only       # only the operator profile of our forward

In one run, on the same random weights and input: ours, transformers eager, and transformers eager with a tuned heap
(`bench_models.TUNED_HEAP`) alternate, each call in its own subprocess (medians); the matmul probe of
`bench_models.py` (in fp32 the faster GEMM library's, `cpu_probes`) runs every round; then one of our forwards is
profiled by operator. The ceiling is the ratio to transformers if every model FLOP ran at the probe's speed and
nothing else took time. A second table splits the time spent between the GEMMs by what the operators compute
(`BETWEEN`): the exact erf GELU (the FFN bias is inside the GEMM), the soft-capped softmax (tanh, scale, softmax), the
copies that lay q/k/v out per head and merge the heads back (and write attention chunks into place), layer norms,
residual adds; as fractions of the forward and of the time outside the matmuls.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
from pathlib import Path

import torch
from bench_embed import cpu_name
from bench_models import DTYPES, TUNED_HEAP, cpu_probes, inputs, load, measure, model_flops, perturbed_models, run_once
from torch.profiler import ProfilerActivity, profile

GEMMS, ATTENTION, OTHER = "GEMMs (addmm, mm, oneDNN linear)", "attention matmuls (bmm)", "everything else"
LINEAR_ONEDNN = "mkldnn::_linear_pointwise"  # `videoprism._gemm.linear` where it runs oneDNN
GROUPS = {"aten::addmm": GEMMS, "aten::mm": GEMMS, LINEAR_ONEDNN: GEMMS, "aten::bmm": ATTENTION}
WRAPPERS = ("aten::linear", "aten::matmul")  # their time is their children's
GELU, SOFTMAX, COPIES = "GELU (exact erf)", "soft-capped softmax (tanh, scale, softmax)", "q/k/v and head layout copies"
NORMS, ADDS, REST = "layer norms", "residual adds", "the rest"
# Operator -> what it computes in our forward (fp32, chunked attention on CPU).
BETWEEN = {
    "aten::gelu": GELU, "aten::gelu_": GELU,
    "aten::tanh": SOFTMAX, "aten::tanh_": SOFTMAX, "aten::mul": SOFTMAX, "aten::mul_": SOFTMAX,
    "aten::_softmax": SOFTMAX, "aten::div": SOFTMAX, "aten::div_": SOFTMAX,
    "aten::copy_": COPIES, "aten::clone": COPIES, "aten::contiguous": COPIES, "aten::permute": COPIES,
    "aten::transpose": COPIES, "aten::unbind": COPIES, "aten::reshape": COPIES, "aten::view": COPIES,
    "aten::native_layer_norm": NORMS, "aten::add": ADDS, "aten::add_": ADDS,
}  # fmt: skip


def operator_totals(prof) -> dict[str, list[float]]:
    """[seconds, FLOPs] per operator name. The bias broadcast inside `addmm` (a `copy_` it calls before the GEMM)
    counts as that GEMM; oneDNN's linear gets its FLOPs from its shapes (the profiler does not count them)."""
    totals = collections.defaultdict(lambda: [0.0, 0.0])
    for event in prof.events():
        name, flops = event.name, event.flops or 0
        if name == "aten::copy_" and event.cpu_parent is not None and event.cpu_parent.name == "aten::addmm":
            name = "aten::addmm"
        elif name == LINEAR_ONEDNN:
            (rows, inner), (width, _) = event.input_shapes[:2]
            flops = 2 * rows * inner * width
        totals[name][0] += event.self_cpu_time_total / 1e6
        totals[name][1] += flops
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("vision", "clip"), default="vision")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile-only", action="store_true", help="skip the timed comparison with transformers")
    args = parser.parse_args()
    if args.profile_only:
        args.rounds = 0
    dtype = DTYPES[args.dtype]
    variants = {
        "ours": dict(impl="ours"),
        "transformers": dict(impl="transformers"),
        "transformers (heap tuned)": dict(impl="transformers", env=TUNED_HEAP),
    }
    times = {name: [] for name in variants}
    probes = []
    with tempfile.TemporaryDirectory(prefix="videoprism-profile-") as folder:
        perturbed_models(Path(folder))
        for _ in range(args.rounds):
            probes.append(cpu_probes(dtype)["best"])
            for name, variant in variants.items():
                variant = dict(variant, kind=args.kind, batch=args.batch, dtype=args.dtype)
                times[name] += measure(variant, Path(folder), "cpu", iters=1)["times"]
        model = load("ours", args.kind, Path(folder), dtype, "cpu", None)
    video, ids, mask = inputs(args.kind, args.batch, 16, "cpu")
    video = video.to(dtype)
    with torch.no_grad():
        run_once("ours", args.kind, model, video, ids, mask, False)  # warm-up
        with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as prof:
            run_once("ours", args.kind, model, video, ids, mask, False)

    operators = operator_totals(prof)
    parts = {name: [0.0, 0.0] for name in (GEMMS, ATTENTION, OTHER)}  # seconds, FLOPs
    for key, (seconds, flops) in operators.items():
        if key not in WRAPPERS:
            part = parts[GROUPS.get(key, OTHER)]
            part[0] += seconds
            part[1] += flops if key in GROUPS else 0
    profiled = sum(seconds for seconds, _ in parts.values())
    between = {name: 0.0 for name in (GELU, SOFTMAX, COPIES, NORMS, ADDS, REST)}
    for key, (seconds, _) in operators.items():
        if key not in WRAPPERS and key not in GROUPS:
            between[BETWEEN.get(key, REST)] += seconds
    outside = sum(between.values())
    detail = [f"\n| between the matmuls ({outside:.2f} s) | seconds | of the forward | of the time outside matmuls |",
              "|---|---|---|---|"]  # fmt: skip
    detail += [f"| {name} | {sec:.3f} | {sec / profiled:.1%} | {sec / outside:.0%} |" for name, sec in between.items()]
    rest = sorted(
        ((seconds, key) for key, (seconds, _) in operators.items()
         if key not in WRAPPERS and key not in GROUPS and key not in BETWEEN),
        reverse=True,
    )  # fmt: skip
    detail.append("the rest, largest first: " + ", ".join(f"{key} {sec:.3f} s" for sec, key in rest[:6]))
    if args.profile_only:
        title = f"{args.kind}, batch {args.batch}, {args.dtype}, torch {torch.__version__}"
        print(f"# {title}: operator profile of one forward")
        print(f"CPU: {cpu_name()}")
        print(f"\n| our forward, profiled ({profiled:.2f} s) | seconds | share |\n|---|---|---|")
        for name, (seconds, _) in parts.items():
            print(f"| {name} | {seconds:.2f} | {seconds / profiled:.0%} |")
        print("\n".join(detail))
        return
    probe = statistics.median(probes)
    flops = model_flops(args.kind, args.batch, 16)
    floor = flops / probe / 1e9
    medians = {name: statistics.median(values) for name, values in times.items()}

    print(f"# {args.kind}, batch {args.batch}, {args.dtype}, torch {torch.__version__}, {args.rounds} rounds")
    print(f"CPU: {cpu_name()}")
    print(f"matmul probe {probe:.0f} GFLOP/s ({min(probes):.0f}-{max(probes):.0f}); model {flops / 1e12:.3f} TFLOP")
    print(f"ours {medians['ours']:.2f} s: {floor / medians['ours']:.0%} of the probe's speed ({floor:.2f} s)")
    print("\n| against | seconds | ours faster by | at most (every FLOP at the probe's speed) |\n|---|---|---|---|")
    for name, seconds in medians.items():
        if name != "ours":
            print(f"| {name} | {seconds:.2f} | {seconds / medians['ours']:.2f}x | {seconds / floor:.2f}x |")
    print(f"\n| our forward, profiled ({profiled:.2f} s) | seconds | share | GFLOP/s | of probe |")
    print("|---|---|---|---|---|")
    for name, (seconds, part_flops) in parts.items():
        rate = f"{part_flops / seconds / 1e9:.0f} | {part_flops / seconds / 1e9 / probe:.0%}" if part_flops else "- | -"
        print(f"| {name} | {seconds:.2f} | {seconds / profiled:.0%} | {rate} |")
    print("\n".join(detail))


if __name__ == "__main__":
    main()
