"""The attention paths against the reference, on the cases the models hit: soft cap, masks, fully masked rows."""

import math

import pytest
import torch

from videoprism import _attention, _gemm
from videoprism._attention import chunked_attention, flex_attention, reference_attention, sdpa_attention

CAP = 50.0


def qkv(batch=4, heads=3, length=10, keys=10, dim=16, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, n, dim, generator=gen) * 4 for n in (length, keys, keys))
    return q.to(dtype), k.to(dtype), v.to(dtype)


def key_mask(batch=4, keys=10):
    """Per-sequence key padding; sequence 1 has no valid key at all (a fully masked row)."""
    allowed = torch.arange(keys)[None, :] < torch.tensor([keys, 0, 3, 7])[:batch, None]
    return allowed[:, None, None, :]


def expected(q, k, v, allowed, softcap):
    """The reference on the unscaled query (our fast paths take q already divided by the cap)."""
    return reference_attention(q.float(), k.float(), v.float(), allowed, softcap)[0]


@pytest.mark.parametrize("fast", [chunked_attention, flex_attention])
@pytest.mark.parametrize("softcap", [CAP, None])
def test_fast_paths_match_the_reference(fast, softcap):
    q, k, v = qkv()
    allowed = key_mask()
    out = fast(q / (softcap or 1.0), k, v, allowed, softcap)
    torch.testing.assert_close(out, expected(q, k, v, allowed, softcap), rtol=0, atol=3e-5)  # |out| ~ 10
    # The fully masked sequence attends uniformly, as the original's finite mask value gives.
    torch.testing.assert_close(out[1], v[1].mean(dim=-2, keepdim=True).expand_as(out[1]), rtol=0, atol=2e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap", [CAP, None])
@pytest.mark.parametrize("budget", [120, 800, 2**24])  # 3 rows of 1 head; 2 heads; all at once
def test_inference_overwrites_the_scores_with_the_same_arithmetic(monkeypatch, cpu_gemm, dtype, softcap, budget):
    """Without autograd the probabilities overwrite the scores (and, in bf16, the bf16 scores' buffer): on torch's
    path the result is the out-of-place computation's, bit for bit."""
    cpu_gemm("aten")
    monkeypatch.setattr(_attention, "SCORE_CHUNK_BYTES", budget)
    q, k, v = qkv(dtype=dtype)
    allowed = key_mask()
    q = q / (softcap or 1.0)
    with torch.enable_grad():
        out_of_place = chunked_attention(q, k, v, allowed, softcap)
    with torch.no_grad():
        out = chunked_attention(q, k, v, allowed, softcap)
    assert out.dtype == dtype
    torch.testing.assert_close(out, out_of_place, rtol=0, atol=0)
    if dtype == torch.float32:
        torch.testing.assert_close(out, expected(q * (softcap or 1.0), k, v, allowed, softcap), rtol=0, atol=6e-5)


@pytest.mark.parametrize("budget", [1, 120, 800, 2400])  # 1 row; 3 rows of 1 head; 2 heads; 3 heads x 2 sequences
def test_chunked_attention_splits_rows_heads_and_sequences(monkeypatch, budget):
    """Chunks of query rows, heads and sequences (ragged ends) give the same rows, with masks of every shape."""
    monkeypatch.setattr(_attention, "SCORE_CHUNK_BYTES", budget)  # whole scores: 4 x 3 x 10 x 10 x 4 = 4800 bytes
    q, k, v = qkv()
    gen = torch.Generator().manual_seed(1)
    masks = (
        key_mask(),  # (B, 1, 1, S)
        torch.rand(4, 3, 10, 10, generator=gen) > 0.3,  # every sequence, head and query its own
        torch.ones(10, 10, dtype=torch.bool).tril()[None, None],  # (1, 1, L, S): causal
        None,
    )
    for allowed in masks:
        out = chunked_attention(q / CAP, k, v, allowed, CAP)
        # |out| ~ 10; one-row chunks run matrix-vector kernels, another summation order (3.6e-5 seen)
        torch.testing.assert_close(out, expected(q, k, v, allowed, CAP), rtol=0, atol=6e-5)


def test_flex_splits_batches_beyond_one_kernel_launch(monkeypatch):
    monkeypatch.setattr(_attention, "FLEX_MAX_BATCH", 3)  # 4 sequences: two launches; 4 * 3 heads: main kernel
    q, k, v = qkv()
    for allowed in (key_mask(), key_mask()[:1], None):
        out = flex_attention(q / CAP, k, v, allowed, CAP)
        torch.testing.assert_close(out, expected(q, k, v, allowed, CAP), rtol=0, atol=3e-5)


def test_flex_mask_value_is_finite_in_half_precision():
    q, k, v = qkv(dtype=torch.float16)
    negative = _attention.large_negative(torch.float16) * math.log(2)
    assert math.isfinite(negative * math.log2(math.e)) and negative < -3e4
    out = flex_attention(q / CAP, k, v, key_mask(), CAP)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected(q, k, v, key_mask(), CAP), rtol=0, atol=0.1)  # fp16 scores
    torch.testing.assert_close(out[1], v[1].mean(dim=-2, keepdim=True).expand_as(out[1]), rtol=0, atol=1e-2)


def test_sdpa_takes_a_mask_broadcast_over_keys(monkeypatch):
    """The spatial stage masks padded frames with an (N, 1, 1, 1) mask; CUDA's kernels need a full key axis."""
    monkeypatch.setattr(_attention, "_warn_sdpa_once", lambda: None)  # leave the once-only warning to its own test
    q, k, v = qkv()
    allowed = torch.tensor([True, False, True, True])[:, None, None, None]
    out = sdpa_attention(q, k, v, allowed, softcap=None)
    torch.testing.assert_close(out, expected(q, k, v, allowed, None), rtol=0, atol=2e-6)


def test_auto_runs_small_attentions_unfused_and_large_ones_in_flex(monkeypatch):
    """Where "auto" means flex (CUDA), a 16-bit call whose fp32 scores fit in one chunk, and any fp32 call, take the
    chunked exact path instead; an explicit kernel is always kept."""
    monkeypatch.setattr(_attention, "resolve_implementation", lambda name, device: "flex" if name == "auto" else name)
    monkeypatch.setattr(_attention, "score_chunk_bytes", lambda device: 4800)  # 4 x 3 x 10 x 10 fp32 scores
    q, k, _ = qkv(dtype=torch.bfloat16)
    assert _attention.kernel_for("auto", q, k) == "chunked"
    assert _attention.kernel_for("auto", q, torch.cat([k, k], dim=2)) == "flex"  # 9600 bytes
    assert _attention.kernel_for("flex", q, k) == "flex"
    assert _attention.kernel_for("eager", q, k) == "eager"
    assert _attention.AttentionChoice().kernel_for(q, k) == "chunked"
    # fp32 takes the chunked kernel at any size (cuBLAS fp32 outruns flex's fp32 kernel).
    assert _attention.kernel_for("auto", q.float(), torch.cat([k, k], dim=2).float()) == "chunked"


def test_chunk_budget_follows_the_device():
    assert _attention.score_chunk_bytes(torch.device("cpu")) == _attention.SCORE_CHUNK_BYTES
    assert _attention.score_chunk_bytes(torch.device("cuda")) == _attention.CUDA_SCORE_CHUNK_BYTES
    # On CPU "auto" is the chunked kernel, whatever the size.
    q, k, _ = qkv()
    assert _attention.kernel_for("auto", q, k) == "chunked"


@pytest.mark.parametrize("block_bytes", [40, 200, 2**20])  # 1 query row per block; 5 rows; all 10
def test_onednn_attention_pair_by_pair_matches_the_reference(
    monkeypatch, cpu_gemm, onednn_attention_calls, block_bytes
):
    """On oneDNN, long unmasked soft-capped attention runs per (sequence, head) and block of query rows, q.k^T and the
    tanh in one call: as exact as torch's path against float64."""
    monkeypatch.setattr(_attention, "ONEDNN_PAIR_SCORES", 100)  # 10 x 10 scores per pair
    monkeypatch.setattr(_attention, "ONEDNN_SCORE_BLOCK_BYTES", block_bytes)
    calls = onednn_attention_calls
    q, k, v = qkv()
    exact = reference_attention(q.double(), k.double(), v.double(), None, CAP)[0]
    errors = {}
    with torch.no_grad():
        for name in ("aten", "onednn"):
            cpu_gemm(name)
            out = chunked_attention(q / CAP, k, v, None, CAP)
            errors[name] = (out.double() - exact).abs().max().item()
    assert calls == [1]  # only on oneDNN
    assert errors["onednn"] < 3e-5 and errors["onednn"] < 2 * errors["aten"] + 1e-6, errors


def test_onednn_attention_only_where_it_applies(monkeypatch, cpu_gemm, onednn_attention_calls):
    """Masks, short pairs, no cap, autograd and torch's path keep the chunked kernel."""
    monkeypatch.setattr(_attention, "ONEDNN_PAIR_SCORES", 100)
    calls = onednn_attention_calls
    q, k, v = qkv()
    cpu_gemm("onednn")
    with torch.no_grad():
        chunked_attention(q / CAP, k, v, key_mask(), CAP)  # a mask
        chunked_attention(q / CAP, k[:, :, :9], v[:, :, :9], None, CAP)  # 90 scores per pair
        chunked_attention(q, k, v, None, None)  # no cap
        chunked_attention(q.double() / CAP, k.double(), v.double(), None, CAP)  # float64
    chunked_attention(q / CAP, k, v, None, CAP)  # autograd on
    bf16 = {}
    with torch.no_grad():
        for name in ("aten", "onednn"):
            cpu_gemm(name)
            chunked_attention(q / CAP, k, v, None, CAP)
            bf16[name] = chunked_attention(q.bfloat16() / CAP, k.bfloat16(), v.bfloat16(), None, CAP)
    # fp32 and, where oneDNN has bf16 kernels on this CPU, bf16 on oneDNN
    assert calls == [1, 1] if _gemm.onednn_computes(torch.bfloat16) else calls == [1]
    errors = {name: (out.float() - expected(q, k, v, None, CAP)).abs().max().item() for name, out in bf16.items()}
    assert bf16["onednn"].dtype == torch.bfloat16 and errors["onednn"] < 1.5 * errors["aten"], errors


def test_onednn_bf16_only_where_onednn_has_bf16_kernels(monkeypatch, cpu_gemm):
    assert _gemm.onednn_computes(torch.float32) and not _gemm.onednn_computes(torch.float64)
    clear = _gemm.onednn_computes.cache_clear  # the answer for this CPU is cached
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)  # an AVX2 CPU
    clear()
    assert not _gemm.onednn_computes(torch.bfloat16)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    clear()
    assert _gemm.onednn_computes(torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_onednn_tanh_is_as_accurate_as_torchs(dtype):
    """oneDNN's tanh (the soft cap on oneDNN, `_gemm.onednn_tanh` and `tanh_scores`): within 1.5 ulp of float64's over
    the whole range, as fp32; bf16 inputs converted exactly."""
    x = torch.cat([torch.linspace(-12, 12, 100_001), torch.logspace(-9, 0, 10_001), -torch.logspace(-9, 0, 10_001)])
    x = x.to(dtype)
    exact = torch.tanh(x.double())
    ulp = (exact.float().nextafter(torch.tensor(float("inf"))) - exact.float()).double().abs()
    out = _gemm.onednn_tanh(x.reshape(-1, 3))
    assert out.dtype == torch.float32
    assert ((out.reshape(-1).double() - exact).abs() / ulp).max() < 1.5
    scores = _gemm.tanh_scores(x.float()[:, None], torch.ones(1, 1))  # q.k^T with k = 1: tanh(x) itself
    assert ((scores.reshape(-1).double() - exact).abs() / ulp).max() < 1.5
