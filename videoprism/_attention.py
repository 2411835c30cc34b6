"""Exact soft-capped attention: the eager reference and a query-chunked path that bounds peak memory."""

from __future__ import annotations

import torch

ATTN_IMPLEMENTATIONS = ("eager", "chunked")
DEFAULT_ATTN_IMPLEMENTATION = "chunked"

# Bytes of fp32 attention scores one chunk may hold (per chunk; softmax needs about twice that).
SCORE_CHUNK_BYTES = 64 * 2**20


def large_negative(dtype: torch.dtype = torch.float32) -> float:
    """The original's mask value, -0.7 * finfo.max: a fully masked row gets uniform attention, never NaN."""
    return -0.7 * torch.finfo(dtype).max


def _attend(q, k, v, allowed, softcap, want_probs):
    scores = torch.matmul(q, k.transpose(-1, -2))
    if softcap:
        # Soft cap before masking, as the original: cap * tanh(logits / cap).
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.float()
    if allowed is not None:
        scores = scores.masked_fill(~allowed, large_negative())
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    out = torch.matmul(probs, v)
    return out, (probs if want_probs else None)


def soft_capped_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor | None = None,
    softcap: float | None = None,
    implementation: str = DEFAULT_ATTN_IMPLEMENTATION,
    output_attentions: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention over (B, H, L, Dh) tensors whose query is already scaled.

    Args:
        allowed: Boolean mask broadcastable to (B, H, L, S); False entries get the original's large negative logit.
        softcap: Cap c of `c * tanh(logits / c)`; None or 0 disables it.
        implementation: "eager" materialises all scores at once; "chunked" walks query blocks so that the fp32
            scores never exceed SCORE_CHUNK_BYTES, with identical arithmetic per row.
        output_attentions: Return the probabilities too (always computed eagerly).
    """
    if implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {implementation!r}")
    batch, heads, length, _ = q.shape
    keys = k.shape[-2]
    row_bytes = batch * heads * keys * 4
    if implementation == "eager" or output_attentions or row_bytes * length <= SCORE_CHUNK_BYTES:
        return _attend(q, k, v, allowed, softcap, output_attentions)
    chunk = max(1, SCORE_CHUNK_BYTES // row_bytes)
    out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=v.dtype, device=v.device)
    for start in range(0, length, chunk):
        rows = slice(start, start + chunk)
        mask = None
        if allowed is not None:
            mask = allowed[..., rows, :] if allowed.shape[-2] == length else allowed
        out[..., rows, :] = _attend(q[..., rows, :], k, v, mask, softcap, False)[0]
    return out, None
