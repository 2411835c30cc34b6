"""Soft-capped attention kernels and the one registry that names them (`ATTENTION_FUNCTIONS`).

"eager" is the reference: the original's order of operations on unscaled q, all scores at once, and it can return the
attention probabilities. The fast kernels ("chunked", "flex", "sdpa") take q already multiplied by
Dh**-0.5 / softcap and return only the output. "auto" is not a kernel: `resolve_implementation` turns it into one per
device and `kernel_for` per call (on CUDA: "flex" for large 16-bit attentions; "chunked" for fp32 and for score tensors
up to CUDA_SCORE_CHUNK_BYTES, where a flex call's fixed cost exceeds the whole attention).
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn.functional as F

from . import _mkl  # noqa: F401  (settles MKL's kernel choice before the first parallel tanh/exp)
from ._gemm import linear, onednn_computes, onednn_inference, onednn_tanh, tanh_scores

DEFAULT_ATTN_IMPLEMENTATION = "auto"

# Bytes of fp32 attention scores one chunk may hold (per chunk; softmax needs about twice that).
SCORE_CHUNK_BYTES = 16 * 2**20
# Compiled flex kernels kept per process (one per input shape and dtype).
FLEX_RECOMPILE_LIMIT = 64
# Sequences one flex kernel launch may hold (CUDA's grid y/z limit).
FLEX_MAX_BATCH = 65535
# The chunk budget on CUDA. "auto" there runs attention whose fp32 scores fit in it unfused, in one piece: a compiled
# flex call has a fixed host cost (guards, block mask) larger than such an attention takes on the GPU.
CUDA_SCORE_CHUNK_BYTES = 128 * 2**20
# Scores per (sequence, head) from which CPU attention on oneDNN (`_gemm.onednn_inference`) runs pair by pair, q.k^T
# and the cap's tanh in one call (`onednn_capped_attention`): for fewer, the calls' fixed costs eat what the fused tanh
# saves.
ONEDNN_PAIR_SCORES = 512 * 512
# Bytes of fp32 scores per block of query rows there: the scores of q.k^T, the softmax and p.v then stay in cache.
ONEDNN_SCORE_BLOCK_BYTES = 8 * 2**20


def large_negative(dtype: torch.dtype = torch.float32) -> float:
    """The original's mask value, -0.7 * finfo.max: a fully masked row gets uniform attention, never NaN."""
    return -0.7 * torch.finfo(dtype).max


def sequence_rows(mask: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    """The part of a (B, ...) mask for sequences `rows`; a mask broadcast over sequences stays whole."""
    return mask[rows] if mask is not None and mask.shape[0] > 1 else mask


def head_rows(mask: torch.Tensor | None, heads: slice) -> torch.Tensor | None:
    """The part of a (B, H, ...) mask for `heads`; a mask broadcast over heads stays whole."""
    return mask[:, heads] if mask is not None and mask.shape[1] > 1 else mask


def query_rows(allowed: torch.Tensor | None, rows: slice, length: int) -> torch.Tensor | None:
    """The part of a (..., L, S) attention mask (or (..., L, 1) kept rows) for query `rows`; a mask broadcast over
    queries stays whole."""
    return allowed[..., rows, :] if allowed is not None and allowed.shape[-2] == length else allowed


def _fast_attend(q, k, v, allowed, softcap):
    """Same arithmetic in fewer passes: q arrives scaled by Dh**-0.5 / cap; cap and mask act in place on fp32."""
    inplace = not torch.is_grad_enabled()
    raw = torch.matmul(q, k.transpose(-1, -2))
    if softcap and onednn_computes(raw.dtype) and raw.numel() and onednn_inference(raw):
        scores = onednn_tanh(raw).mul_(softcap)
    else:
        scores = raw.float()
        if softcap:
            scores = scores.tanh_().mul_(softcap) if inplace else torch.tanh(scores) * softcap
    if allowed is not None:
        fill = scores.masked_fill_ if inplace else scores.masked_fill
        scores = fill(~allowed, large_negative())
    if not inplace:
        return torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v)
    # Without autograd the probabilities overwrite the scores, and in 16-bit types are rounded into the buffer of the
    # 16-bit scores: no new buffer per chunk (the same values as the out-of-place ops, bit for bit).
    probs = torch.softmax(scores, dim=-1, out=scores)
    if probs.dtype != v.dtype:
        probs = raw.copy_(probs) if raw.dtype == v.dtype else probs.to(v.dtype)
    return torch.matmul(probs, v)


def reference_attention(q, k, v, allowed=None, softcap=None, scale=1.0, output_attentions=False):
    """The original's order of operations on (B, H, L, Dh) tensors: scale q, logits, cap, fp32, mask, softmax.

    Args:
        allowed: Boolean mask broadcastable to (B, H, L, S); False entries get the original's large negative logit.
        softcap: Cap c of `c * tanh(logits / c)`; None or 0 disables it.
    """
    scores = torch.matmul(q * scale, k.transpose(-1, -2))
    if softcap:
        # Soft cap before masking, as the original: cap * tanh(logits / cap).
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.float()
    if allowed is not None:
        scores = scores.masked_fill(~allowed, large_negative())
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v), (probs if output_attentions else None)


def score_chunk_bytes(device: torch.device) -> int:
    """Bytes of fp32 scores one chunk of `chunked_attention` may hold on `device`."""
    return CUDA_SCORE_CHUNK_BYTES if device.type == "cuda" else SCORE_CHUNK_BYTES


def chunked_attention(q, k, v, allowed=None, softcap=None) -> torch.Tensor:
    """Exact attention whose fp32 scores never exceed `score_chunk_bytes`, same arithmetic per row.

    A chunk holds as many query rows of one (sequence, head) pair as fit, then as many pairs as fit: long row blocks
    make better matmuls than few rows of every head. `q` must already be multiplied
    by Dh**-0.5 / softcap (just Dh**-0.5 when there is no cap).
    """
    batch, heads, length, _ = q.shape
    if runs_capped_on_onednn(q, k, v, allowed, softcap):
        return onednn_capped_attention(q, k, v, softcap)
    row_bytes = k.shape[-2] * 4  # one query row's fp32 scores, one pair
    budget = score_chunk_bytes(q.device)
    if batch * heads * length * row_bytes <= budget:
        return _fast_attend(q, k, v, allowed, softcap)
    rows = min(length, max(1, budget // row_bytes))
    pairs = max(1, budget // (rows * row_bytes))
    head_step = min(heads, pairs)
    sequence_step = max(1, pairs // heads)
    out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=v.dtype, device=v.device)
    for first_sequence in range(0, batch, sequence_step):
        sequences = slice(first_sequence, first_sequence + sequence_step)
        for first_head in range(0, heads, head_step):
            part = (sequences, slice(first_head, first_head + head_step))
            mask = head_rows(sequence_rows(allowed, sequences), part[1])
            for start in range(0, length, rows):
                query = slice(start, start + rows)
                out[part + (query,)] = _fast_attend(
                    q[part + (query,)], k[part], v[part], query_rows(mask, query, length), softcap
                )
    return out


def runs_capped_on_onednn(q, k, v, allowed, softcap) -> bool:
    """Whether `chunked_attention` takes `onednn_capped_attention`: a soft cap, no mask, heads of one dtype that oneDNN
    computes here (`_gemm.onednn_computes`), at least ONEDNN_PAIR_SCORES scores per pair, and CPU inference on oneDNN
    (`_gemm.onednn_inference`)."""
    return bool(
        softcap
        and allowed is None
        and q.dtype == k.dtype == v.dtype
        and onednn_computes(q.dtype)
        and q.shape[:2] == k.shape[:2] == v.shape[:2]
        and q.shape[-2] * k.shape[-2] >= ONEDNN_PAIR_SCORES
        and onednn_inference(q, k, v)
    )


def onednn_capped_attention(q, k, v, softcap) -> torch.Tensor:
    """Soft-capped attention of (B, H, L, Dh) heads without a mask, one (sequence, head) pair and one block of query
    rows at a time: tanh(q.k^T) from one oneDNN call (`_gemm.tanh_scores`), cap and softmax in fp32, then p.v as a
    oneDNN linear layer with v^T as its weight. The same arithmetic as `_fast_attend` but for the tanh's rounding
    (oneDNN's instead of MKL's), and no full score tensor in memory. `q` is scaled by Dh**-0.5 / softcap."""
    out = q.new_empty(q.shape[:-1] + v.shape[-1:])
    length, keys = q.shape[-2], k.shape[-2]
    rows = max(1, ONEDNN_SCORE_BLOCK_BYTES // (keys * 4))
    for sequence in range(q.shape[0]):
        for head in range(q.shape[1]):
            key, value_t = k[sequence, head], v[sequence, head].t().contiguous()
            for start in range(0, length, rows):
                block = slice(start, start + rows)
                scores = tanh_scores(q[sequence, head, block], key).float().mul_(softcap)
                probs = torch.softmax(scores, dim=-1, out=scores).to(v.dtype)
                out[sequence, head, block] = linear(probs, value_t)
    return out


def resolve_implementation(name: str, device: torch.device) -> str:
    """The kernel `name` stands for on `device`: "auto" is "flex" on CUDA (when torch has it), "chunked" elsewhere."""
    if name != "auto":
        return name
    return "flex" if device.type == "cuda" and _flex_attention_fn(compiled=False) is not None else "chunked"


def kernel_for(name: str, q: torch.Tensor, k: torch.Tensor) -> str:
    """The kernel `name` runs for (B, H, L, Dh) `q` against `k`: as `resolve_implementation`, except that "auto" on
    CUDA, called eagerly, takes "chunked" for fp32 (full-precision cuBLAS matmuls outrun flex's fp32 kernel) and for
    16-bit heads whose fp32 scores fit in one chunk (CUDA_SCORE_CHUNK_BYTES)."""
    kernel = resolve_implementation(name, q.device)
    if name == "auto" and kernel == "flex" and not torch.compiler.is_compiling():
        score_bytes = q.shape[0] * q.shape[1] * q.shape[2] * k.shape[-2] * 4
        if q.element_size() >= 4 or score_bytes <= score_chunk_bytes(q.device):
            return "chunked"
    return kernel


def check_implementation(name: str | None) -> str:
    """`name` (None: the default "auto") if it is "auto" or a kernel of `ATTENTION_FUNCTIONS`; ValueError otherwise."""
    name = name or DEFAULT_ATTN_IMPLEMENTATION
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {name!r}")
    return name


@functools.cache
def _flex_attention_fn(compiled: bool):
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        return None
    if not compiled:
        return flex_attention
    # Static shapes: each new (batch, length, dtype) compiles its own kernel once. Past dynamo's default recompile
    # limit (8) flex would silently run unfused, so the process-wide limit is raised (never lowered) once, here.
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), FLEX_RECOMPILE_LIMIT))
    return torch.compile(flex_attention, dynamic=False)


def flex_attention(q, k, v, allowed=None, softcap=None) -> torch.Tensor:
    """The exact arithmetic through torch's flex_attention, the cap and mask as a `score_mod` (compiled on CUDA).

    `q` must already be multiplied by Dh**-0.5 / softcap, like `chunked_attention`.
    """
    batch, heads = q.shape[:2]
    if isinstance(batch, int) and batch > FLEX_MAX_BATCH:  # the kernel's grid holds at most 65535 sequences
        size = -(-batch // -(-batch // FLEX_MAX_BATCH))  # equal pieces, each within the limit
        parts = [slice(i, i + size) for i in range(0, batch, size)]
        return torch.cat([flex_attention(q[r], k[r], v[r], sequence_rows(allowed, r), softcap) for r in parts])
    # Inside a compiled model the enclosing graph compiles it; called eagerly on CUDA it needs its own compile.
    fn = _flex_attention_fn(compiled=q.is_cuda and not torch.compiler.is_compiling())
    if fn is None:
        raise RuntimeError("attn_implementation='flex' needs torch.nn.attention.flex_attention (torch >= 2.5)")
    # Fused flex kernels multiply scores by log2(e) and treat -inf rows as empty (output 0); this value stays finite
    # there (and in the input's dtype), so a fully masked row still gets the original's uniform attention.
    negative = large_negative(q.dtype) * math.log(2)
    cap = softcap or None
    if cap is not None and torch.compiler.is_compiling():
        # A dynamic-shape trace turns the float into a SymFloat, which flex's score_mod cannot capture.
        cap = torch.full((), cap, dtype=torch.float32, device=q.device)

    def score_mod(score, b, h, q_idx, kv_idx):
        if cap is not None:
            score = torch.tanh(score) * cap
        if allowed is not None:
            index = [i if size > 1 else 0 for i, size in zip((b, h, q_idx, kv_idx), allowed.shape, strict=True)]
            score = torch.where(allowed[tuple(index)], score, negative)
        return score

    options = None
    if isinstance(batch, int) and batch * heads > FLEX_MAX_BATCH:
        # For short queries a static-shape compile picks flex's decoding kernel, whose grid has batch * heads on
        # one axis (at most 65535; CUDA rejects a larger launch as an invalid argument); the main kernel has not.
        options = {"FORCE_USE_FLEX_ATTENTION": True}
    call = functools.partial(fn, q, k, v, score_mod=score_mod, scale=1.0, kernel_options=options)
    if q.is_cuda or torch.compiler.is_compiling():
        return call()
    with warnings.catch_warnings():  # eager flex on CPU is exact, just not fused: no need to warn
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return call()


@functools.cache
def _warn_sdpa_once():
    warnings.warn(
        "attn_implementation='sdpa' drops the attention logit soft cap (50 * tanh(x / 50)) that VideoPrism was "
        "trained with: outputs are approximate (see docs/benchmarks.md for the measured deviation)",
        stacklevel=4,
    )


def sdpa_attention(q, k, v, allowed=None, softcap=None) -> torch.Tensor:
    """APPROXIMATE: torch's fused scaled_dot_product_attention without the soft cap (an explicit opt-in)."""
    _warn_sdpa_once()
    mask = None
    if allowed is not None:  # a finite fill, so a fully masked row stays uniform instead of NaN
        # Full key length: CUDA's fused kernels need a mask whose last dimension is not broadcast.
        mask = torch.zeros(allowed.shape[:-1] + k.shape[-2:-1], dtype=q.dtype, device=q.device)
        mask.masked_fill_(~allowed, large_negative(q.dtype))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=softcap or 1.0)


# Every attention kernel by name. "chunked": exact, query blocks bound the memory. "flex": exact, torch
# flex_attention with the cap as a score_mod. "eager": the reference. "sdpa": APPROXIMATE, fused attention without the
# soft cap (warns once).
ATTENTION_FUNCTIONS = {
    "chunked": chunked_attention,
    "flex": flex_attention,
    "eager": reference_attention,
    "sdpa": sdpa_attention,
}
ATTN_IMPLEMENTATIONS = ("auto", *ATTENTION_FUNCTIONS)


class AttentionChoice:
    """The attention kernel of one model, shared by all its attention modules: chosen once, read at every call.

    Args:
        name: "auto" (default: chosen per call by `kernel_for`) or a kernel of `ATTENTION_FUNCTIONS`.
    """

    def __init__(self, name: str | None = None):
        self.name = check_implementation(name)

    def kernel(self, device: torch.device) -> str:
        """The kernel's name on `device` ("auto" resolved)."""
        return resolve_implementation(self.name, device)

    def kernel_for(self, q: torch.Tensor, k: torch.Tensor) -> str:
        """The kernel for this call's heads (`kernel_for`)."""
        return kernel_for(self.name, q, k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
