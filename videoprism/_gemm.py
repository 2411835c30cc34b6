"""Which library CPU inference runs on: torch's own path (MKL on x86) or oneDNN, for the fp32 linear layers and the
attention soft cap's tanh (`_attention` asks `onednn_inference`).

Both compute in fp32 with fp32 accumulation; they differ only in the order of the sums and in the tanh's last bit.
"auto" (the default) takes oneDNN on AMD CPUs with AVX-512 (Zen 4 and later), where MKL's GEMMs run well below
oneDNN's and MKL's accurate tanh costs several times oneDNN's, and torch's path elsewhere: on AMD AVX2 CPUs neither
library won everywhere, and on Intel MKL is at home (docs/benchmarks.md). `VIDEOPRISM_CPU_GEMM` (or `set_cpu_gemm`)
chooses one; `bench_trees.py --cpu-gemms aten onednn` compares them.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

from ._cpu import cpu_flags, cpu_vendor
from .errors import DeviceError

CPU_GEMMS = ("auto", "aten", "onednn")
ENV_VARIABLE = "VIDEOPRISM_CPU_GEMM"


def onednn_linear_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_choice: str | None = None  # set_cpu_gemm's choice; None: the environment's


def set_cpu_gemm(name: str | None) -> None:
    """Chooses the library of CPU inference for this process: "auto", "aten" or "onednn" (None: back to
    `VIDEOPRISM_CPU_GEMM`, else "auto").

    Raises:
        DeviceError: an unknown name, or "onednn" where this torch has no oneDNN.
    """
    global _choice
    _choice = None if name is None else _checked(name, "cpu_gemm")


def _checked(name: str, source: str) -> str:
    if name not in CPU_GEMMS:
        raise DeviceError(f"{source}={name!r}: use one of {', '.join(CPU_GEMMS)} (default: auto)")
    if name == "onednn" and not onednn_linear_available():
        raise DeviceError(f"{source}='onednn': this torch has no oneDNN (torch.backends.mkldnn); use aten")
    return name


def cpu_gemm() -> str:
    """The library in use: "aten" or "onednn" ("auto" resolved by `auto_cpu_gemm`).

    Raises:
        DeviceError: `VIDEOPRISM_CPU_GEMM` holds an unknown name, or "onednn" where this torch has no oneDNN.
    """
    name = _choice or _checked(os.environ.get(ENV_VARIABLE, "").strip() or "auto", ENV_VARIABLE)
    return auto_cpu_gemm() if name == "auto" else name


@functools.cache  # asked on every linear layer and attention call
def auto_cpu_gemm(vendor: str | None = None, flags: frozenset[str] | None = None) -> str:
    """ "onednn" on an AMD CPU with AVX-512 when this torch has oneDNN's linear, "aten" elsewhere.

    Args:
        vendor: The CPU's vendor id; default: this CPU's (`_cpu.cpu_vendor`).
        flags: Its feature flags; default: this CPU's.
    """
    vendor = cpu_vendor() if vendor is None else vendor
    flags = cpu_flags() if flags is None else flags
    amd_avx512 = vendor == "AuthenticAMD" and "avx512f" in flags
    return "onednn" if amd_avx512 and onednn_linear_available() else "aten"


def onednn_inference(*tensors: torch.Tensor) -> bool:
    """Whether CPU inference on `tensors` runs through oneDNN: all on the CPU, no autograd, outside compiled graphs,
    oneDNN enabled (the user may turn it off: torch.backends.mkldnn.flags) and `cpu_gemm()` "onednn"."""
    return (
        all(t.device.type == "cpu" for t in tensors)
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and torch.backends.mkldnn.enabled
        and cpu_gemm() == "onednn"
    )


@functools.cache  # a property of the CPU, asked on every attention call
def onednn_computes(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs GEMMs of `dtype` on this CPU: fp32 always, bf16 where it has bf16 kernels for it."""
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, through oneDNN for fp32 CPU inference when `onednn_inference` (bias added inside the GEMM)."""
    fp32 = x.dtype == weight.dtype == torch.float32
    if fp32 and x.numel() and weight.is_contiguous() and onednn_inference(x, weight):
        rows = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")
        return out.view(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight, bias)


def tanh_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """`tanh(q @ k.T)` of 2D `q` (L, D) and `k` (S, D) (fp32 or bf16) in one oneDNN call: the tanh acts on the fp32
    accumulators before the result is written in the inputs' dtype. oneDNN's tanh is within 1.21 ulp of the exact
    value (MKL's, torch's on x86: 0.51), well inside the rounding of the dot products themselves."""
    return torch.ops.mkldnn._linear_pointwise(q, k.contiguous(), None, "tanh", [], "")


def onednn_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh of a contiguous fp32 or bf16 CPU tensor, as a new fp32 tensor, through oneDNN's tanh (the input copied
    into a oneDNN tensor, converted to fp32 on the way, and back): the same accuracy as `tanh_scores`."""
    return x.to_mkldnn(torch.float32).tanh_().to_dense()


class Linear(nn.Linear):
    """`nn.Linear` whose forward is `linear` (same parameters and state-dict names)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
