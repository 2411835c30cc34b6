"""Numerics shared by the towers, each exactly as the original computes it: L2 norm, position tables."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """The original's `x / sqrt(sum(x^2) + 1e-12)`, in fp32."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.square().sum(-1, keepdim=True) + 1e-12)).to(x.dtype)


@functools.lru_cache(maxsize=64)
def _jax_linear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of `jax.image.resize(method='bilinear')` along one axis, antialias=True (its default).

    Triangle kernel at half-pixel centres, widened by in/out when downsampling, normalised per output sample.
    """
    scale = out_size / in_size
    kernel_scale = max(1.0 / scale, 1.0)
    sample = (np.arange(out_size, dtype=np.float64) + 0.5) / scale - 0.5
    dist = np.abs(sample[None, :] - np.arange(in_size, dtype=np.float64)[:, None]) / kernel_scale
    weights = np.maximum(0.0, 1.0 - dist)
    total = weights.sum(axis=0, keepdims=True)
    weights = np.where(np.abs(total) > 1000 * np.finfo(np.float32).eps, weights / np.where(total != 0, total, 1), 0)
    inside = (sample >= -0.5) & (sample <= in_size - 0.5)
    return np.where(inside[None, :], weights, 0.0).T.copy()


def resize_positions(table: torch.Tensor, grid: tuple[int, ...], new_grid: tuple[int, ...]) -> torch.Tensor:
    """Resizes a (prod(grid), D) position table to `new_grid` exactly as the original's jax.image.resize."""
    if tuple(grid) == tuple(new_grid):
        return table
    out = table.reshape(*grid, table.shape[-1]).double()
    for axis, (old, new) in enumerate(zip(grid, new_grid, strict=True)):
        weights = torch.from_numpy(_jax_linear_resize_matrix(old, new)).to(out.device)
        out = torch.movedim(torch.tensordot(weights, out, dims=([1], [axis])), 0, axis)
    return out.reshape(-1, table.shape[-1]).to(table.dtype)


def text_sinusoid(length: int, dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The original text position table: inc = ln(1e4)/(D/2 - 1), [sin | cos] halves concatenated, fp32."""
    half = dim // 2
    inc = math.log(10000.0) / max(half - 1, 1)
    inv = torch.exp(torch.arange(half, dtype=torch.float32, device=device) * -inc)
    angles = torch.arange(length, dtype=torch.float32, device=device)[:, None] * inv[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
