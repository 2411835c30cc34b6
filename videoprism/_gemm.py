"""Which library runs the fp32 linear layers of CPU inference: torch's own path (MKL on x86, the default) or oneDNN.

Both compute in fp32 with fp32 accumulation; they differ only in the order of the sums. Neither is faster everywhere
(docs/benchmarks.md: on one AMD machine oneDNN won while the host was busy and lost while it was quiet), so torch's
path stays the default and `VIDEOPRISM_CPU_GEMM=onednn` (or `set_cpu_gemm`) opts in; `bench_trees.py --cpu-gemms
aten onednn` compares them on a machine.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DeviceError

CPU_GEMMS = ("aten", "onednn")
ENV_VARIABLE = "VIDEOPRISM_CPU_GEMM"


def onednn_linear_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_choice: str | None = None  # set_cpu_gemm's choice; None: the environment's


def set_cpu_gemm(name: str | None) -> None:
    """Chooses the library of fp32 CPU inference's linear layers for this process: "aten" or "onednn" (None: back to
    `VIDEOPRISM_CPU_GEMM`, else "aten").

    Raises:
        DeviceError: an unknown name, or "onednn" where this torch has no oneDNN.
    """
    global _choice
    _choice = None if name is None else _checked(name, "cpu_gemm")


def _checked(name: str, source: str) -> str:
    if name not in CPU_GEMMS:
        raise DeviceError(f"{source}={name!r}: use one of {', '.join(CPU_GEMMS)} (default: aten)")
    if name == "onednn" and not onednn_linear_available():
        raise DeviceError(f"{source}='onednn': this torch has no oneDNN (torch.backends.mkldnn); use aten")
    return name


def cpu_gemm() -> str:
    """The library in use: "aten" or "onednn".

    Raises:
        DeviceError: `VIDEOPRISM_CPU_GEMM` holds an unknown name, or "onednn" where this torch has no oneDNN.
    """
    return _choice or _checked(os.environ.get(ENV_VARIABLE, "").strip() or "aten", ENV_VARIABLE)


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
