"""Our models against transformers 5.23 eager, in one run, on the same random weights and inputs.

    python benchmarks/bench_models.py                 # full table (several minutes on 2 cores)
    python benchmarks/bench_models.py --rounds 1      # quicker, noisier
    python benchmarks/bench_models.py --long          # LvT at 16/32/64 frames: time and peak RSS (ours only)
    python benchmarks/bench_models.py --compile       # adds torch.compile'd ours (compile time excluded)
    python benchmarks/bench_models.py --device cuda --batches 1 32 --clip-batches 1 32 --compile --profile  # on a GPU

On CPU each measurement runs in its own subprocess (so peak RSS is that variant's alone); variants alternate round
by round and the table reports medians. transformers fp32 also runs with glibc's mmap/trim thresholds raised
(`TUNED_HEAP`, through the environment), which keeps its large intermediates from being page-faulted anew each call.
On CUDA all variants share one process: peak memory comes from the allocator's statistics, timings are medians of
--iters calls after a warm-up (and compiling) call. GFLOP/s counts the standard model FLOPs (both implementations get
the same count) and is compared with this machine's matmul throughput at the model's GEMM shapes, measured in every
round of the same run (median).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PROMPTS = 5
TEXT_LEN = 16
# glibc settings under which transformers' full-size intermediates (50-200 MB) stay in the heap instead of coming back
# from the kernel as fresh pages: the "heap tuned" rows show what of our lead the allocator alone would give it.
TUNED_HEAP = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**31)}


# ----------------------------------------------------------------------------------------------------------------
# Shared set-up


def perturbed_models(folder: Path) -> None:
    """Random weights for the base vision model and the LvT-B clip model, every tensor moved off its init."""
    import videoprism

    gen = torch.Generator().manual_seed(0)
    for name, preset in (("vision", "videoprism-base-f16r288"), ("clip", "videoprism-lvt-base-f16r288")):
        config = videoprism.PRESETS[preset].config()
        cls = videoprism.VideoPrismClipModel if name == "clip" else videoprism.VideoPrismVisionModel
        model = cls(config)
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                scale = 0.3 if "layernorm" in param_name else 0.02
                param.add_(torch.randn(param.shape, generator=gen) * scale)
        model.save_pretrained(folder / name)


def inputs(kind: str, batch: int, frames: int, device: str):
    gen = torch.Generator().manual_seed(1)
    video = torch.rand(batch, frames, 3, 288, 288, generator=gen).to(device)
    if kind == "vision":
        return video, None, None
    ids = torch.randint(3, 32000, (PROMPTS, TEXT_LEN), generator=gen)
    lengths = torch.tensor([5, 7, 9, 11, 16])
    mask = (torch.arange(TEXT_LEN)[None] < lengths[:, None]).long()
    ids = ids * mask
    return video, ids.to(device), mask.to(device)


def model_flops(kind: str, batch: int, frames: int) -> float:
    """Standard forward FLOPs (2 per multiply-add) of the model at this input."""
    d, m, heads, n = 768, 3072, 12, 256

    def layers(count, sequences, length):
        per_layer = 2 * sequences * length * (4 * d * d + 2 * d * m) + 4 * sequences * length * length * d
        return count * per_layer

    flops = 2 * batch * frames * n * (3 * 18 * 18) * d
    flops += layers(12, batch * frames, n) + layers(4, batch * n, frames)
    if kind == "clip":
        tokens = frames * n
        flops += layers(2, batch, tokens)
        flops += 2 * batch * tokens * d * 4 * d * 2 + 2 * batch * 4 * d * d  # pooler k, v, out
        flops += layers(12, PROMPTS, TEXT_LEN + 1)
    del heads
    return float(flops)


def matmul_throughput(dtype: torch.dtype, device: str, rows: int = 4096, library: str = "aten") -> float:
    """GFLOP/s of the biased GEMM (`addmm` into a reused output, so no page faults are timed) at the model's GEMM
    shapes, FLOP-weighted as in a base layer. `library="onednn"`: oneDNN's linear (the other fp32 CPU library of
    `videoprism._gemm`) over blocks of 1024 rows, as CPU inference runs, with glibc's heap thresholds raised so its
    fresh outputs come from the heap."""
    shapes = [(rows, 768, 768, 4), (rows, 768, 3072, 1), (rows, 3072, 768, 1)]  # (rows, in, out, count per layer)
    total_flops = total_time = 0.0
    for rows, k, n, count in shapes:
        x = torch.randn(rows, k, dtype=dtype, device=device)
        w = torch.randn(n, k, dtype=dtype, device=device) * 0.02
        b = torch.randn(n, dtype=dtype, device=device)
        if library == "onednn":
            from videoprism._blocks import raise_heap_thresholds

            raise_heap_thresholds()
            gemm = functools.partial(_onednn_blocks, x.split(1024), w, b)
        else:
            out = torch.empty(rows, n, dtype=dtype, device=device)
            gemm = functools.partial(torch.addmm, b, x, w.t(), out=out)
        total_time += timed(gemm, device, 7 if device == "cpu" else 30) * count
        total_flops += 2 * rows * k * n * count
    return total_flops / total_time / 1e9


def _onednn_blocks(blocks, weight, bias) -> None:
    for block in blocks:
        torch.ops.mkldnn._linear_pointwise(block, weight, bias, "none", [], "")


def cpu_probes(dtype: torch.dtype) -> dict[str, float]:
    """The CPU GEMM probe per library ("aten", and for fp32 "onednn" where torch has it), and "best" of them: the
    speed our fp32 forward is measured against, whichever library it runs."""
    from videoprism._gemm import onednn_linear_available

    libraries = ["aten"] + (["onednn"] if dtype == torch.float32 and onednn_linear_available() else [])
    probes = {library: matmul_throughput(dtype, "cpu", library=library) for library in libraries}
    return dict(probes, best=max(probes.values()))


def per_library(rounds: list[dict[str, float]]) -> str:
    """ "aten 103, onednn 116": the median GFLOP/s of each library over rounds of `cpu_probes`."""
    return ", ".join(f"{lib} {statistics.median(r[lib] for r in rounds):.0f}" for lib in rounds[0] if lib != "best")


def timed(fn, device: str, repeats: int) -> float:
    """Median seconds of `fn()` after one warm-up call."""
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would carry the parent's peak across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------------------------
# One measurement (subprocess)


def load(impl: str, kind: str, folder: Path, dtype: torch.dtype, device: str, attn: str | None):
    if impl == "transformers":
        import transformers

        cls = transformers.VideoPrismClipModel if kind == "clip" else transformers.VideoPrismVisionModel
        return cls.from_pretrained(folder / kind, dtype=dtype).to(device).eval()
    import videoprism

    cls = videoprism.VideoPrismClipModel if kind == "clip" else videoprism.VideoPrismVisionModel
    return cls.from_pretrained(folder / kind, dtype=dtype, device=device, attn_implementation=attn)


def run_once(impl, kind, model, video, ids, mask, interpolate):
    if impl == "transformers":
        if kind == "clip":
            out = model(pixel_values_videos=video, input_ids=ids, attention_mask=mask)
            return {"video": out.video_embeds.reshape(video.shape[0], -1), "text": out.text_embeds}
        return {"tokens": model(pixel_values_videos=video).last_hidden_state}
    if kind == "clip":
        out = model(video, ids, attention_mask=mask, interpolate_pos_encoding=interpolate)
        return {"video": out.video_embeds, "text": out.text_embeds}
    return {"tokens": model(video, interpolate_pos_encoding=interpolate).last_hidden_state}


def worker(args) -> None:
    torch.manual_seed(0)
    model = load(args.impl, args.kind, Path(args.folder), DTYPES[args.dtype], args.device, args.attn)
    if args.compile:
        model = torch.compile(model, dynamic=True)
    video, ids, mask = inputs(args.kind, args.batch, args.frames, args.device)
    video = video.to(DTYPES[args.dtype])
    interpolate = args.frames != 16
    times = []
    with torch.no_grad():
        for i in range(args.iters + 1):  # the first call warms up (and compiles)
            _sync(args.device)
            start = time.perf_counter()
            out = run_once(args.impl, args.kind, model, video, ids, mask, interpolate)
            _sync(args.device)
            if i:
                times.append(time.perf_counter() - start)
    if args.save:
        np.savez(args.save, **{k: v.float().cpu().numpy() for k, v in out.items()})
    peak = peak_rss_mb()
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None
    print(json.dumps({"times": times, "peak_rss_mb": peak, "peak_gpu_mb": gpu_peak}))


def measure(variant: dict, folder: Path, device: str, iters: int, save: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--folder", str(folder), "--device", device, "--iters", str(iters)]
    for key in ("impl", "kind", "dtype", "batch", "frames", "attn"):
        if variant.get(key) is not None:
            cmd += [f"--{key}", str(variant[key])]
    if variant.get("compile"):
        cmd.append("--compile")
    if save is not None:
        cmd += ["--save", str(save)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **variant.get("env", {})))
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# Orchestration


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(-1, a.shape[-1])
    b = b.reshape(-1, b.shape[-1])
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(cos.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder")
    parser.add_argument("--impl", default="ours")
    parser.add_argument("--kind", default="vision")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--attn")
    parser.add_argument("--iters", type=int, default=1)
    parser.add_argument("--save")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--clip-batches", type=int, nargs="+", default=[1], help="CUDA: LvT clip batch sizes")
    parser.add_argument("--kinds", nargs="+", default=["vision", "clip"], help="CUDA: models, in this order")
    parser.add_argument("--profile", action="store_true", help="CUDA: kernel profile of ours bf16 at the largest batch")
    parser.add_argument("--long", action="store_true", help="LvT at 16/32/64 frames (ours only)")
    parser.add_argument("--skip-transformers-bf16", action="store_true")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory(prefix="videoprism-bench-") as folder:  # ~1.5 GB of weights and outputs
        tables(args, Path(folder))


def tables(args, folder: Path) -> None:
    perturbed_models(folder)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
    )

    if args.long:
        print("\n| frames | tokens | seconds | peak RSS (MB) | embedding norm |\n|---|---|---|---|---|")
        for frames in (16, 32, 64):
            variant = dict(impl="ours", kind="clip", dtype="fp32", batch=1, frames=frames)
            result = measure(variant, folder, args.device, 1, folder / f"long{frames}.npz")
            norm = float(np.linalg.norm(np.load(folder / f"long{frames}.npz")["video"]))
            secs = statistics.median(result["times"])
            print(f"| {frames} | {frames * 256} | {secs:.2f} | {result['peak_rss_mb']:.0f} | {norm:.6f} |")
        return

    if args.device.startswith("cuda"):
        return cuda_table(args, folder)

    groups = []
    for batch in args.batches:
        groups.append(("vision", batch))
    groups.append(("clip", 1))
    variants = []
    for kind, batch in groups:
        base = dict(kind=kind, batch=batch, frames=16)
        variants.append(dict(base, impl="transformers", dtype="fp32", ref=True))
        variants.append(dict(base, impl="transformers", dtype="fp32", env=TUNED_HEAP))
        variants.append(dict(base, impl="ours", dtype="fp32"))
        variants.append(dict(base, impl="ours", dtype="fp32", attn="eager"))
        variants.append(dict(base, impl="ours", dtype="bf16"))
        if not args.skip_transformers_bf16:
            variants.append(dict(base, impl="transformers", dtype="bf16"))
        if args.compile:
            variants.append(dict(base, impl="ours", dtype="fp32", compile=True))
            variants.append(dict(base, impl="ours", dtype="bf16", compile=True))

    results = {i: {"times": [], "rss": []} for i in range(len(variants))}
    probes = {"fp32": [], "bf16": []}  # the matmul probe runs every round too, so it sees the same machine state
    libraries = {"fp32": [], "bf16": []}  # on CPU, each library's probe: {"aten": ..., "onednn": ..., "best": ...}
    for round_index in range(args.rounds):
        for name in probes:
            if args.device == "cpu":
                libraries[name].append(cpu_probes(DTYPES[name]))
                probes[name].append(libraries[name][-1]["best"])
            else:
                probes[name].append(matmul_throughput(DTYPES[name], args.device))
        for i, variant in enumerate(variants):
            save = folder / f"out{i}.npz" if round_index == 0 else None
            result = measure(variant, folder, args.device, args.iters, save)
            results[i]["times"] += result["times"]
            results[i]["rss"].append(result["peak_gpu_mb"] or result["peak_rss_mb"])
            print(f"round {round_index + 1} {variant}: {result['times'][0]:.2f} s", file=sys.stderr)

    throughput = {name: statistics.median(values) for name, values in probes.items()}
    print(
        f"matmul at the model's GEMM shapes (median of {args.rounds} rounds): fp32 {throughput['fp32']:.0f} GFLOP/s "
        f"({min(probes['fp32']):.0f}-{max(probes['fp32']):.0f}), bf16 {throughput['bf16']:.0f} GFLOP/s "
        f"({min(probes['bf16']):.0f}-{max(probes['bf16']):.0f})"
    )
    for name, rounds in libraries.items():
        if rounds and len(rounds[0]) > 2:  # more than one library: say which the probe took
            print(f"{name} probe per CPU GEMM library (median GFLOP/s; the probe is the faster): {per_library(rounds)}")
    mem = "peak GPU MB" if args.device.startswith("cuda") else "peak RSS MB"
    print(
        f"\n| model | batch | implementation | dtype | seconds | x transformers fp32 | x transformers fp32 heap tuned "
        f"| GFLOP/s | of matmul peak | {mem} | RSS vs transformers | max diff vs transformers fp32 "
        f"| min cosine vs ours fp32 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, batch in groups:
        members = [i for i, v in enumerate(variants) if v["kind"] == kind and v["batch"] == batch]
        ref = next(i for i in members if variants[i].get("ref"))
        ours_fp32 = next(
            i
            for i in members
            if variants[i]["impl"] == "ours"
            and variants[i]["dtype"] == "fp32"
            and not variants[i].get("attn")
            and not variants[i].get("compile")
        )
        tuned = next(i for i in members if variants[i].get("env"))
        ref_time = statistics.median(results[ref]["times"])
        tuned_time = statistics.median(results[tuned]["times"])
        ref_rss = statistics.median(results[ref]["rss"])
        ref_out = dict(np.load(folder / f"out{ref}.npz"))
        ours_out = dict(np.load(folder / f"out{ours_fp32}.npz"))
        flops = model_flops(kind, batch, 16)
        for i in members:
            v = variants[i]
            secs = statistics.median(results[i]["times"])
            rss = statistics.median(results[i]["rss"])
            out = dict(np.load(folder / f"out{i}.npz"))
            diff = max(float(np.abs(out[k] - ref_out[k]).max()) for k in out)
            cosine = min(cosine_min(out[k], ours_out[k]) for k in out)
            label = "LvT-B clip (1 video, 5 prompts)" if kind == "clip" else "base vision"
            gflops = flops / secs / 1e9
            peak = throughput["bf16" if v["dtype"] == "bf16" else "fp32"]
            print(
                f"| {label} | {batch} | {variant_name(v)} | {v['dtype']} | {secs:.2f} | {ref_time / secs:.2f} "
                f"| {tuned_time / secs:.2f} | {gflops:.0f} "
                f"| {gflops / peak:.0%} | {rss:.0f} | {rss / ref_rss:.2f} | {diff:.2e} | {cosine:.6f} |"
            )


# ----------------------------------------------------------------------------------------------------------------
# GPU: one process (peak memory is per variant through the allocator's statistics, so no subprocesses are needed)


def cuda_table(args, folder: Path) -> None:
    device = args.device
    square = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    card_peak = 2 * 8192**3 / timed(functools.partial(torch.matmul, square, square), device, 20) / 1e9
    throughput = {name: matmul_throughput(DTYPES[name], device, rows=131072) for name in ("fp32", "bf16")}
    print(
        f"bf16 8192^3 matmul: {card_peak / 1000:.0f} TFLOP/s; addmm at the model's GEMM shapes (131072 rows): "
        f"fp32 {throughput['fp32'] / 1000:.1f} TFLOP/s, bf16 {throughput['bf16'] / 1000:.0f} TFLOP/s "
        f"(TF32 matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})"
    )
    variants = [
        dict(impl="transformers", dtype="fp32", ref=True),
        dict(impl="transformers", dtype="bf16"),
        dict(impl="ours", dtype="fp32", attn="eager"),
        dict(impl="ours", dtype="fp32"),
        dict(impl="ours", dtype="bf16", attn="eager"),
        dict(impl="ours", dtype="bf16"),
        dict(impl="ours", dtype="bf16", attn="flex"),  # "auto" runs small attentions unfused: this shows what it saves
    ]
    # transformers' patch embedding is a Conv3d, which cuDNN runs in TF32 by default; this row shows what that costs.
    variants += [dict(impl="transformers", dtype="fp32", tf32_conv=False, max_batch=1)]
    if args.compile:  # batch 1 would specialise the dynamic graph and compile a second time
        variants += [dict(impl="ours", dtype="bf16", compile=True, min_batch=2)]
    groups = [("vision", batch) for batch in args.batches] + [("clip", batch) for batch in args.clip_batches]
    print(
        "\n| model | batch | implementation | dtype | ms | clips/s | x transformers fp32 | x transformers bf16 "
        "| TFLOP/s | MFU (of bf16 8192^3) | peak GPU MB | max diff vs transformers fp32 "
        "| max diff vs ours (eager) fp32 | min cosine vs ours fp32 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        for variant in variants:  # one model per variant, timed at every batch size of its kind
            variant["model"] = load(
                variant["impl"], kind, folder, DTYPES[variant["dtype"]], device, variant.get("attn")
            )
            if variant.get("compile"):
                variant["model"] = torch.compile(variant["model"], dynamic=True)
            variant["weights_mb"] = sum(t.nbytes for t in variant["model"].state_dict().values()) / 2**20
        for group_kind, batch in groups:
            if group_kind == kind:
                cuda_rows(args, kind, batch, variants, card_peak)
        if args.profile and kind == "vision":
            default_bf16 = next(v for v in variants if variant_name(v) == "ours" and v["dtype"] == "bf16")
            try:
                cuda_profile(args, kind, max(args.batches), default_bf16)
            except Exception as error:  # the tables above are the result; the profile only explains them
                print(f"profile FAILED: {error!r}"[:3000], file=sys.stderr)
        for variant in variants:
            del variant["model"]
        torch.cuda.empty_cache()


def cuda_profile(args, kind: str, batch: int, variant: dict) -> None:
    """The CUDA kernels of one call of `variant`, by total time: where the time between the GEMMs goes."""
    from torch.profiler import ProfilerActivity, profile

    video, ids, mask = inputs(kind, batch, 16, args.device)
    video = video.to(DTYPES[variant["dtype"]])
    with torch.no_grad():
        run_once(variant["impl"], kind, variant["model"], video, ids, mask, False)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            run_once(variant["impl"], kind, variant["model"], video, ids, mask, False)
            torch.cuda.synchronize()
    print(f"\nKernels of {variant_name(variant)} {variant['dtype']}, {kind} batch {batch}:")
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=20, max_name_column_width=70))


def cuda_rows(args, kind: str, batch: int, variants: list[dict], card_peak: float) -> None:
    results = []
    for variant in variants:
        outside = not variant.get("min_batch", 1) <= batch <= variant.get("max_batch", batch)
        if outside or (kind == "clip" and variant.get("compile")):
            results.append("skipped")
            continue
        try:
            results.append(cuda_measure(args, kind, batch, variant))
        except Exception as error:  # report and go on: one failing variant must not hide the others
            print(
                f"{kind} b{batch} {variant_name(variant)} {variant['dtype']} FAILED: {error!r}"[:3000], file=sys.stderr
            )
            results.append("failed (see log)")
            torch.cuda.empty_cache()  # an out-of-memory failure must not starve the next variant
    ref, ref_bf16, ours_eager, ours_fp32 = (r if isinstance(r, tuple) else None for r in results[:4])
    flops = model_flops(kind, batch, 16)
    label = f"LvT-B clip ({batch} x 5 prompts)" if kind == "clip" else "base vision"
    for variant, result in zip(variants, results, strict=True):
        if isinstance(result, str):
            print(f"| {label} | {batch} | {variant_name(variant)} | {variant['dtype']} | {result} |")
            continue
        secs, activations, out = result
        peak = activations + variant["weights_mb"]
        diff = max(float(np.abs(out[k] - ref[2][k]).max()) for k in out) if ref else float("nan")
        exact_diff = max(float(np.abs(out[k] - ours_eager[2][k]).max()) for k in out) if ours_eager else float("nan")
        cosine = min(cosine_min(out[k], ours_fp32[2][k]) for k in out) if ours_fp32 else float("nan")
        tflops = flops / secs / 1e12
        print(
            f"| {label} | {batch} | {variant_name(variant)} | {variant['dtype']} | {secs * 1000:.1f} | "
            f"{batch / secs:.1f} | {ref[0] / secs if ref else float('nan'):.2f} | "
            f"{ref_bf16[0] / secs if ref_bf16 else float('nan'):.2f} | {tflops:.0f} | "
            f"{tflops * 1000 / card_peak:.0%} | {peak:.0f} | {diff:.2e} | {exact_diff:.2e} | {cosine:.6f} |",
            flush=True,
        )


def cuda_measure(args, kind: str, batch: int, variant: dict):
    """(median seconds, peak GPU MB of activations, outputs) of one variant at one batch size."""
    video, ids, mask = inputs(kind, batch, 16, args.device)
    video = video.to(DTYPES[variant["dtype"]])

    def call():
        return run_once(variant["impl"], kind, variant["model"], video, ids, mask, False)

    default_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = variant.get("tf32_conv", default_tf32)
    try:
        return _cuda_timed(call, args)
    finally:
        torch.backends.cudnn.allow_tf32 = default_tf32


def _cuda_timed(call, args):
    with torch.no_grad():
        call()  # warm-up (and compilation)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        secs = timed(call, args.device, args.iters)
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        out = {k: v.float().cpu().numpy() for k, v in call().items()}
    return secs, peak, out


def variant_name(variant: dict) -> str:
    name = variant["impl"] + (f" ({variant['attn']})" if variant.get("attn") else "")
    name += " (TF32 conv off)" if variant.get("tf32_conv") is False else ""
    name += " (heap tuned)" if variant.get("env") else ""
    return name + (" compiled" if variant.get("compile") else "")


if __name__ == "__main__":
    main()
