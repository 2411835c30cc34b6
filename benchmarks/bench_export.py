"""Exported ONNX towers through onnxruntime (CPU) against our default PyTorch path, in one run, same weights and inputs.

    python benchmarks/bench_export.py                      # base vision + LvT-B video and text towers, fp32
    python benchmarks/bench_export.py --int8               # adds onnxruntime's dynamic int8 quantisation
    python benchmarks/bench_export.py --rounds 1 --profile # adds onnxruntime's per-op-type time (its profiler)

Models: `videoprism-base-f16r288` (VideoPrismVisionModel, tokens) and `videoprism-lvt-base-f16r288` (the LvT video
tower: video and frame embeddings; the text tower: 5 prompts of 64 tokens), random weights with every tensor moved off
its init (no download). "ours" is the PyTorch model as users run it: `from_pretrained`, default attention, no_grad,
computing the same outputs as the graph. Each measurement runs in its own subprocess (peak RSS is its own, read from
VmHWM); variants alternate round by round; the table gives medians of per-round medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_models import peak_rss_mb, perturbed_models  # noqa: E402

TEXTS, TEXT_LEN = 5, 64
# (row name, checkpoint folder, exported tower, outputs compared)
MODELS = {
    "vision": ("base vision (tokens)", "vision", "vision", ("last_hidden_state",)),
    "video": ("LvT-B video tower", "clip", "video", ("video_embeds", "frame_embeds")),
    "text": ("LvT-B text tower (5 texts)", "clip", "text", ("text_embeds",)),
}


def tower_inputs(tower: str, batch: int) -> list[np.ndarray]:
    gen = np.random.default_rng(1)
    if tower == "text":
        ids = gen.integers(3, 32000, (TEXTS, TEXT_LEN), dtype=np.int64)
        mask = (np.arange(TEXT_LEN)[None] < np.array([5, 9, 16, 33, 64])[:, None]).astype(np.int64)
        return [ids * mask, mask]
    video = gen.random((batch, 16, 3, 288, 288), dtype=np.float32)
    return [video, np.ones((batch, 16), np.int64)]


# ----------------------------------------------------------------------------------------------------------------
# One measurement (subprocess)


def torch_runner(folder: Path, tower: str):
    import videoprism

    if tower == "vision":
        model = videoprism.VideoPrismVisionModel.from_pretrained(folder / "vision")
        return lambda video, mask: {"last_hidden_state": model(torch.from_numpy(video)).last_hidden_state}
    model = videoprism.VideoPrismClipModel.from_pretrained(folder / "clip")
    if tower == "video":

        def video_run(video, mask):
            out = model.video_model(torch.from_numpy(video), return_frame_embeds=True)
            return {"video_embeds": out.pooler_output, "frame_embeds": out.frame_embeds}

        return video_run
    return lambda ids, mask: {"text_embeds": model.get_text_features(torch.from_numpy(ids), torch.from_numpy(mask))}


def ort_runner(path: Path, profile: Path | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]

    def run(*arrays):
        return dict(zip(outputs, session.run(None, dict(zip(names, arrays, strict=True))), strict=True))

    run.session = session
    return run


def worker(args) -> None:
    folder = Path(args.folder)
    if args.impl == "ours":
        run = torch_runner(folder, args.tower)
    else:
        name = "model.int8.onnx" if args.impl == "onnxruntime-int8" else f"{args.tower}.onnx"
        run = ort_runner(folder / f"onnx-{args.tower}" / name, Path(args.profile) if args.profile else None)
    arrays = tower_inputs(args.tower, args.batch)
    times = []
    with torch.no_grad():
        for i in range(args.iters + 1):  # the first call warms up
            start = time.perf_counter()
            out = run(*arrays)
            if i:
                times.append(time.perf_counter() - start)
    profile_file = run.session.end_profiling() if args.profile else None
    np.savez(args.save, **{k: np.asarray(v, np.float32) for k, v in out.items()})
    print(json.dumps({"times": times, "peak_rss_mb": peak_rss_mb(), "profile": profile_file}))


def measure(folder: Path, impl: str, tower: str, batch: int, iters: int, save: Path, profile: Path | None = None):
    cmd = [sys.executable, __file__, "--worker", "--folder", str(folder), "--impl", impl, "--tower", tower]
    cmd += ["--batch", str(batch), "--iters", str(iters), "--save", str(save)]
    if profile is not None:
        cmd += ["--profile-prefix", str(profile)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{impl} {tower} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# The run


def export_all(folder: Path, towers: list[str], int8: bool) -> dict[str, float]:
    """ONNX files for every tower benchmarked (and their int8 versions); returns the export seconds per tower."""
    from videoprism.export import export_model

    seconds = {}
    for tower in towers:
        start = time.perf_counter()
        export_model(folder / MODELS[tower][1], folder / f"onnx-{tower}", tower=tower, text_length=TEXT_LEN)
        seconds[tower] = time.perf_counter() - start
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            out = folder / f"onnx-{tower}"
            quantize_dynamic(out / f"{tower}.onnx", out / "model.int8.onnx", weight_type=QuantType.QInt8)
    return seconds


def compare(reference: dict, other: dict, names) -> tuple[float, float]:
    """(max abs difference, min cosine) over the outputs `names`, per token / embedding row."""
    diff, cosine = 0.0, 1.0
    for name in names:
        a = reference[name].reshape(-1, reference[name].shape[-1]).astype(np.float64)
        b = other[name].reshape(a.shape).astype(np.float64)
        diff = max(diff, float(np.abs(a - b).max()))
        cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
        cosine = min(cosine, float(cos.min()))
    return diff, cosine


def profile_table(path: str, top: int = 12) -> list[tuple[str, float, float]]:
    """onnxruntime's profile: (op type, ms per run, share) of node execution, summed over the profiled runs."""
    events = json.loads(Path(path).read_text())
    per_op, runs = {}, 0
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            runs += 1
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + event["dur"] / 1000
    total = sum(per_op.values())
    rows = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return [(op, ms / max(runs, 1), ms / total) for op, ms in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--towers", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=2, help="timed calls per round (after one warm-up call)")
    parser.add_argument("--batch", type=int, default=1, help="clips per call")
    parser.add_argument("--int8", action="store_true", help="also onnxruntime's dynamic int8 quantisation")
    parser.add_argument("--profile", action="store_true", help="onnxruntime's per-op-type time (one extra run)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--tower", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--profile-prefix", dest="profile_prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.profile = args.profile_prefix
        return worker(args)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"CPU: {cpu}, {torch.get_num_threads()} threads; torch {torch.__version__}", flush=True)
    impls = ["ours", "onnxruntime"] + (["onnxruntime-int8"] if args.int8 else [])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        perturbed_models(folder)
        export_seconds = export_all(folder, args.towers, args.int8)
        print("export seconds: " + ", ".join(f"{t} {s:.0f}" for t, s in export_seconds.items()), flush=True)
        results = {(t, i): {"times": [], "rss": []} for t in args.towers for i in impls}
        outputs = {}
        for round_index in range(args.rounds):
            for tower in args.towers:
                for impl in impls:
                    save = folder / f"{tower}-{impl}.npz"
                    got = measure(folder, impl, tower, args.batch, args.iters, save)
                    results[tower, impl]["times"].append(statistics.median(got["times"]))
                    results[tower, impl]["rss"].append(got["peak_rss_mb"])
                    with np.load(save) as data:
                        outputs[tower, impl] = {k: data[k] for k in data.files}
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)

        unit = f"ms per clip (text tower: per call of {TEXTS} texts)"
        print(f"\nbatch {args.batch}; {unit}; medians of {args.rounds} rounds")
        print("| model | implementation | ms | x ours | peak RSS MB | max diff vs ours | min cosine vs ours |")
        print("|---|---|---|---|---|---|---|")
        for tower in args.towers:
            name, _, _, names = MODELS[tower]
            base = statistics.median(results[tower, "ours"]["times"])
            for impl in impls:
                seconds = statistics.median(results[tower, impl]["times"])
                per_clip = seconds * 1000 / (1 if tower == "text" else args.batch)
                rss = statistics.median(results[tower, impl]["rss"])
                diff, cosine = compare(outputs[tower, "ours"], outputs[tower, impl], names)
                print(f"| {name} | {impl} | {per_clip:.0f} | {base / seconds:.2f} | {rss:.0f} | {diff:.2e} | "
                      f"{cosine:.6f} |")  # fmt: skip
        if args.profile:
            for tower in args.towers:
                prefix = folder / f"profile-{tower}"
                got = measure(folder, "onnxruntime", tower, args.batch, 1, folder / "p.npz", prefix)
                print(f"\nonnxruntime profile, {MODELS[tower][0]} (op type, ms per run, share of kernel time)")
                for op, ms, share in profile_table(got["profile"]):
                    print(f"| {op} | {ms:.0f} | {share:.1%} |")


if __name__ == "__main__":
    main()
