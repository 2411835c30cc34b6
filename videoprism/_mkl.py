"""A workaround for a oneMKL race that makes CPU float math silently inexact in a fresh process.

oneMKL picks each VML function's kernel on its first call; when that first call runs on several intra-op threads at
once, one thread's chunk can go through a low-accuracy kernel (pytorch/pytorch#188792). In a fraction of fresh
processes that makes `torch.tanh` inexact enough to move the attention soft cap and fail the golden fixtures. One
single-element call per function, before any parallel use, settles the choice.
"""

from __future__ import annotations

import torch

# The unary functions ATen routes to MKL VML (aten/src/ATen/cpu/vml.h) that torch exposes.
VML_FUNCTIONS = (
    "acos", "asin", "atan", "cos", "cosh", "erf", "erfc", "erfinv", "exp", "expm1", "lgamma", "log", "log10",
    "log1p", "log2", "rsqrt", "sin", "sinh", "sqrt", "tan", "tanh",
)  # fmt: skip


def resolve_vml_dispatch() -> None:
    """Calls each VML function once on one element, in float32 and float64, while nothing else runs in parallel."""
    if not torch.backends.mkl.is_available():
        return
    for dtype in (torch.float32, torch.float64):
        x = torch.full((1,), 0.5, dtype=dtype)
        for name in VML_FUNCTIONS:
            getattr(torch, name)(x)


resolve_vml_dispatch()
