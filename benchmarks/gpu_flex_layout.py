"""CUDA: flex attention on strided q/k/v views (no layout copy) against contiguous heads, per call and per model.

    python benchmarks/gpu_flex_layout.py
    python benchmarks/gpu_flex_layout.py --compiled   # base vision bf16 at batch 32 under torch.compile, both layouts

Times one LvT-B auxiliary layer (4096 tokens) at batch 1 and 8 and the bf16 LvT-B clip model at batch 1, each with
the heads handed to flex as strided views (the default) and copied contiguous first; medians of 10 calls after
warm-up. Reports recompilations and host syncs seen during the timed calls.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

import videoprism
from videoprism import modeling
from videoprism._attention import ATTENTION_FUNCTIONS

STRIDED_FORWARD = modeling.VideoPrismAttention.forward


def contiguous_forward(self, x, allowed=None, output_attentions=False, qkv=None):
    heads = self.project(x, qkv).permute(2, 0, 3, 1, 4)
    kernel = self.attention_choice.kernel_for(heads[0], heads[1])
    q, k, v = heads.contiguous().unbind(0)
    return self.merge(ATTENTION_FUNCTIONS[kernel](q, k, v, allowed, self.softcap)), None


def median_ms(fn, iters=10):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def compiled(batch: int = 32) -> None:
    """Base vision bf16 under torch.compile (static shapes), heads strided vs contiguous: one compile each."""
    config = videoprism.PRESETS["videoprism-base-f16r288"].config()
    video = torch.rand(batch, 16, 3, 288, 288, device="cuda", dtype=torch.bfloat16)
    print("| base vision bf16, compiled | batch | layout | ms | compile s |\n|---|---|---|---|---|")
    for name, forward in (("strided", STRIDED_FORWARD), ("contiguous", contiguous_forward)):
        torch._dynamo.reset()
        modeling.VideoPrismAttention.forward = forward
        model = videoprism.VideoPrismVisionModel(config).to("cuda", torch.bfloat16).eval()
        fn = torch.compile(model, dynamic=False)
        with torch.no_grad():
            start = time.perf_counter()
            fn(video)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - start
            ms = median_ms(lambda fn=fn: fn(video))
        print(f"| base vision bf16, compiled | {batch} | {name} | {ms:.1f} | {compile_s:.0f} |", flush=True)
        del model, fn
    modeling.VideoPrismAttention.forward = STRIDED_FORWARD


def main():
    if "--compiled" in sys.argv:
        return compiled()
    torch.manual_seed(0)
    config = videoprism.PRESETS["videoprism-lvt-base-f16r288"].config()
    model = videoprism.VideoPrismClipModel(config).to("cuda", torch.bfloat16).eval()
    layer = model.video_model.auxiliary_layers[0]
    video = torch.rand(1, 16, 3, 288, 288, device="cuda", dtype=torch.bfloat16)
    ids = torch.randint(3, 32000, (5, 16), device="cuda")
    mask = torch.ones(5, 16, dtype=torch.long, device="cuda")
    counters = torch._dynamo.utils.counters
    print("| what | layout | ms | recompiles during timing |\n|---|---|---|---|")
    with torch.no_grad():
        for name, forward in (("strided", STRIDED_FORWARD), ("contiguous", contiguous_forward)):
            modeling.VideoPrismAttention.forward = forward
            for batch in (1, 8):
                x = torch.randn(batch, 4096, 768, device="cuda", dtype=torch.bfloat16)
                layer(x)  # compile outside the timing
                before = sum(counters["recompiles"].values()) if "recompiles" in counters else 0
                ms = median_ms(lambda x=x: layer(x))
                after = sum(counters["recompiles"].values()) if "recompiles" in counters else 0
                print(f"| aux layer, batch {batch} | {name} | {ms:.2f} | {after - before} |", flush=True)
            model(video, ids, attention_mask=mask)
            ms = median_ms(lambda: model(video, ids, attention_mask=mask))
            print(f"| LvT-B clip bf16, batch 1 | {name} | {ms:.2f} | - |", flush=True)
        modeling.VideoPrismAttention.forward = STRIDED_FORWARD
        torch.cuda.set_sync_debug_mode("warn")
        model(video, ids, attention_mask=mask)
        torch.cuda.set_sync_debug_mode(0)
        print("compile counters:", {k: dict(v) for k, v in counters.items() if k in ("stats", "recompiles", "frames")})


if __name__ == "__main__":
    main()
