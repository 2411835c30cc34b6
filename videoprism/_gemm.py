"""Which library runs the fp32 linear layers of CPU inference: torch's own path (MKL on x86) or oneDNN.

Both compute in fp32 with fp32 accumulation; they differ only in the order of the sums. oneDNN's kernels dispatch on
the instruction set alone, MKL's also on the vendor; on AMD CPUs without AVX-512 oneDNN's fp32 GEMMs measured faster
at the model's shapes (docs/benchmarks.md), so "auto" picks oneDNN there and torch's path everywhere else.
`VIDEOPRISM_CPU_GEMM` (auto, aten, onednn) or `set_cpu_gemm` overrides the choice.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DeviceError

CPU_GEMMS = ("auto", "aten", "onednn")
ENV_VARIABLE = "VIDEOPRISM_CPU_GEMM"


def cpu_vendor() -> str:
    """The CPU's vendor string from /proc/cpuinfo ("AuthenticAMD", "GenuineIntel"), "" where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def onednn_linear_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@functools.cache
def auto_cpu_gemm() -> str:
    """oneDNN on AMD CPUs whose widest vectors are AVX2 (where it measured faster), torch's path elsewhere."""
    amd_avx2 = cpu_vendor() == "AuthenticAMD" and torch.backends.cpu.get_cpu_capability() == "AVX2"
    return "onednn" if amd_avx2 and onednn_linear_available() else "aten"


_choice: str | None = None  # set_cpu_gemm's choice; None: the environment's


def set_cpu_gemm(name: str | None) -> None:
    """Chooses the library of fp32 CPU inference's linear layers for this process: "auto", "aten" or "onednn" (None:
    back to `VIDEOPRISM_CPU_GEMM`, else "auto").

    Raises:
        DeviceError: an unknown name, or "onednn" where this torch has no oneDNN.
    """
    global _choice
    _choice = None if name is None else _checked(name, "cpu_gemm")


def _checked(name: str, source: str) -> str:
    if name not in CPU_GEMMS:
        raise DeviceError(f"{source}={name!r}: use one of {', '.join(CPU_GEMMS)} (auto: chosen by CPU)")
    if name == "onednn" and not onednn_linear_available():
        raise DeviceError(f"{source}='onednn': this torch has no oneDNN (torch.backends.mkldnn); use aten or auto")
    return name


def cpu_gemm() -> str:
    """The library in use: "aten" or "onednn" ("auto" resolved).

    Raises:
        DeviceError: `VIDEOPRISM_CPU_GEMM` holds an unknown name, or "onednn" where this torch has no oneDNN.
    """
    name = _choice or _checked(os.environ.get(ENV_VARIABLE, "").strip() or "auto", ENV_VARIABLE)
    return auto_cpu_gemm() if name == "auto" else name


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, through oneDNN for fp32 CPU inference when `cpu_gemm()` says so and oneDNN is enabled (bias added
    inside the GEMM)."""
    if (
        x.dtype == weight.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and x.numel()
        and weight.is_contiguous()
        and torch.backends.mkldnn.enabled  # off where the user turned oneDNN off (torch.backends.mkldnn.flags)
        and cpu_gemm() == "onednn"
    ):
        rows = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")
        return out.view(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` whose forward is `linear` (same parameters and state-dict names)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
