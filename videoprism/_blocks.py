"""CPU inference of a transformer layer block by block, and the glibc heap setting that keeps its memory reused.

On CPU without autograd, a layer runs over blocks of about `BLOCK_ROWS` fp32 token rows (whole sequences; query rows
for one sequence longer than a block), twice as many in bf16/fp16. Every intermediate then stays a few MB and is
reused from the heap instead of coming as fresh pages from the kernel on every call. The arithmetic per row is the
same as the whole-tensor path, so the results are bitwise identical.

glibc serves an allocation above its mmap threshold with a new mapping, and on free returns heap memory above its
trim threshold (twice the mmap threshold) to the kernel. Both start low and glibc raises them itself when a freed
mapping shows that the program uses bigger buffers (up to 32 MiB); until then each block would get its memory back
from the kernel as new pages. One `HINT_BYTES` malloc and free gives glibc that evidence up front. A threshold set by
the user (mallopt, MALLOC_MMAP_THRESHOLD_) switches glibc's adjustment off, and then this changes nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import TYPE_CHECKING

import torch

from ._attention import query_rows, sequence_rows

if TYPE_CHECKING:
    from .modeling import VideoPrismLayer

BLOCK_ROWS = 1024
HINT_BYTES = 24 * 2**20


def is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


@functools.cache
def libc() -> ctypes.CDLL:
    """This process's C library with `malloc` and `free` typed for pointers."""
    lib = ctypes.CDLL(None)
    lib.malloc.restype = ctypes.c_void_p
    lib.malloc.argtypes = [ctypes.c_size_t]
    lib.free.argtypes = [ctypes.c_void_p]
    return lib


@functools.cache
def raise_heap_thresholds() -> None:
    """One mapped allocation of HINT_BYTES, freed: glibc's mmap / trim thresholds become 24 / 48 MiB."""
    if is_glibc():
        libc().free(libc().malloc(HINT_BYTES))


def block_rows(x: torch.Tensor) -> int:
    """Token rows per block for `x`'s dtype: BLOCK_ROWS in fp32, twice as many in 16-bit types (the same bytes per
    16-bit row block as fp32 at 1.5x the rows' width, and oneDNN's bf16 GEMMs on AMX run faster on taller blocks)."""
    return BLOCK_ROWS if x.element_size() >= 4 else 2 * BLOCK_ROWS


def runs_blockwise(x: torch.Tensor) -> bool:
    """Whether layers run block by block: CPU inference outside a compiled graph (autograd needs whole tensors; GPU
    allocators cache memory and GPUs want big kernels)."""
    return x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def layer_in_blocks(layer: VideoPrismLayer, x, allowed=None, keep=None, out=None) -> torch.Tensor:
    """`layer(x)` computed block by block into `out` (a new tensor when None; may be `x` itself).

    Blocks hold whole sequences (attention never crosses them), with the fused q/k/v weight built once per call.
    """
    raise_heap_thresholds()
    out = torch.empty_like(x) if out is None else out
    attention = layer.attention
    qkv = attention.fused_qkv()
    rows_per_block = block_rows(x)
    if x.shape[1] > rows_per_block and attention.implementation(x) != "eager":
        for index in range(x.shape[0]):
            one = slice(index, index + 1)
            _long_sequence(
                layer, x[one], sequence_rows(allowed, one), sequence_rows(keep, one), out[one], qkv, rows_per_block
            )
        return out
    per_block = max(1, rows_per_block // x.shape[1])
    for start in range(0, x.shape[0], per_block):
        rows = slice(start, start + per_block)
        h = x[rows] + attention(layer.layernorm_before(x[rows]), sequence_rows(allowed, rows), qkv=qkv)[0]
        torch.add(h, layer.mlp(layer.layernorm_after(h), sequence_rows(keep, rows)), out=out[rows])
    return out


def _long_sequence(layer: VideoPrismLayer, x, allowed, keep, out, qkv, rows_per_block: int) -> None:
    """One sequence longer than a block: all its heads first, then attention, output projection and MLP per block
    of query rows, so only the heads are full size (`out` may be `x`: its rows are read before they are written)."""
    length = x.shape[1]
    attention = layer.attention
    heads = x.new_empty(3, 1, attention.num_heads, length, attention.head_dim)
    for start in range(0, length, rows_per_block):
        rows = slice(start, start + rows_per_block)
        heads[:, :, :, rows] = attention.project(layer.layernorm_before(x[:, rows]), qkv).permute(2, 0, 3, 1, 4)
    q, k, v = heads.unbind(0)
    for start in range(0, length, rows_per_block):
        rows = slice(start, start + rows_per_block)
        h = x[:, rows] + attention.merge(attention.attend(q[:, :, rows], k, v, query_rows(allowed, rows, length)))
        torch.add(h, layer.mlp(layer.layernorm_after(h), query_rows(keep, rows, length)), out=out[:, rows])
