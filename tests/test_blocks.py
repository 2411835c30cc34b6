"""Per-call work folded away in the building blocks stays correct: weight updates, blockwise CPU inference."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from _checkpoints import save_tiny_clip_model

from videoprism import VideoPrismClipModel, _attention, _blocks, modeling
from videoprism.modeling import VideoPrismAttention, VideoPrismLayerNorm


def reference(norm, x):
    return F.layer_norm(x, norm.weight.shape, norm.weight.detach() + 1.0, norm.bias.detach(), norm.eps)


def test_layernorm_folds_its_plus_one_once_and_follows_weight_updates():
    norm = VideoPrismLayerNorm(8, 1e-6)
    x = torch.randn(3, 8)
    with torch.no_grad():
        norm.weight.normal_()
        first = norm(x)
        assert norm.scale() is norm.scale()  # folded once, reused
        torch.testing.assert_close(first, reference(norm, x), rtol=0, atol=0)
        norm.weight.mul_(2)  # an in-place update must not leave a stale scale
        torch.testing.assert_close(norm(x), reference(norm, x), rtol=0, atol=0)
        norm.load_state_dict({"weight": torch.full((8,), 0.5), "bias": torch.zeros(8)})
        torch.testing.assert_close(norm(x), reference(norm, x), rtol=0, atol=0)
        for _ in range(3):  # fresh storage each time (an allocator may hand back a freed address)
            norm.weight.data = torch.randn(8)
            torch.testing.assert_close(norm(x), reference(norm, x), rtol=0, atol=0)
    norm.to(torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(norm(x.double()), reference(norm, x.double()), rtol=0, atol=0)


def test_layernorm_scale_carries_gradients_when_training():
    norm = VideoPrismLayerNorm(8, 1e-6)
    norm(torch.randn(3, 8)).square().sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0


def test_layernorm_under_inference_mode():
    with torch.inference_mode():
        norm = VideoPrismLayerNorm(8, 1e-6)
        x = torch.randn(3, 8)
        torch.testing.assert_close(norm(x), reference(norm, x), rtol=0, atol=0)


def attention_reference(attention, x):
    """The eager path (separate q/k/v projections, the reference attention), as a whole-tensor function."""
    q, k, v = (attention._split(proj(x)) for proj in (attention.q_proj, attention.k_proj, attention.v_proj))
    out, _ = _attention.reference_attention(q, k, v, None, attention.softcap, attention.head_dim**-0.5)
    return attention.merge(out)


def test_fused_qkv_is_cached_only_where_asked():
    """The text tower keeps its fused q/k/v weights (short inputs); the video towers rebuild them per call (their
    weights would cost 3 D^2 per layer more memory for a negligible share of the time)."""
    attention = VideoPrismAttention(16, 2, softcap=50.0)
    with torch.no_grad():
        assert attention.fused_qkv()[0] is not attention.fused_qkv()[0]
    assert attention._qkv is None


def test_text_tower_caches_its_fused_qkv(tmp_path):
    model = VideoPrismClipModel.from_pretrained(save_tiny_clip_model(tmp_path)).eval()
    assert all(layer.attention.cache_fused_qkv for layer in model.text_model.layers)
    video_layers = [*model.video_model.vision_model.modules(), *model.video_model.auxiliary_layers.modules()]
    assert not any(m.cache_fused_qkv for m in video_layers if isinstance(m, VideoPrismAttention))


def test_fused_qkv_is_built_once_and_follows_weight_updates():
    attention = VideoPrismAttention(16, 2, softcap=50.0)
    attention.cache_fused_qkv = True
    x = torch.randn(2, 5, 16)

    def check():
        torch.testing.assert_close(attention(x)[0], attention_reference(attention, x), rtol=0, atol=1e-6)

    with torch.no_grad():
        first = attention.fused_qkv()
        assert attention.fused_qkv() is first  # built once, reused
        check()
        attention.k_proj.weight.mul_(2)  # an in-place update of any of the six tensors must not leave it stale
        check()
        attention.v_proj.bias.add_(1)
        check()
        assert attention.fused_qkv() is not first
        attention.load_state_dict({**attention.state_dict(), "q_proj.weight": torch.randn(16, 16)})
        check()
        for _ in range(3):  # fresh storage each time (an allocator may hand back a freed address)
            attention.q_proj.weight.data = torch.randn(16, 16)
            check()
    attention.to(torch.float64)
    assert attention._qkv is None  # dropped on .to(), with the old weights it held
    with torch.no_grad():
        assert attention.fused_qkv()[0].dtype == torch.float64
        x = x.double()
        check()


def test_fused_qkv_carries_gradients_when_training():
    attention = VideoPrismAttention(16, 2, softcap=50.0)
    attention.cache_fused_qkv = True
    attention(torch.randn(2, 5, 16))[0].square().sum().backward()
    assert attention._qkv is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attention.parameters())


def test_fused_qkv_under_inference_mode():
    with torch.inference_mode():
        attention = VideoPrismAttention(16, 2, softcap=50.0)
        attention.cache_fused_qkv = True
        x = torch.randn(2, 5, 16)
        torch.testing.assert_close(attention(x)[0], attention_reference(attention, x), rtol=0, atol=1e-6)
        assert attention._qkv is None


@pytest.mark.parametrize("block_rows", [3, 40])
def test_blockwise_inference_equals_the_whole_tensor_path(tmp_path, monkeypatch, block_rows):
    """Blocks of a few rows (ragged ends, several per sequence) or of whole sequences; masks sliced per block; the
    in-place reuse of a stage's own tensor leaves returned hidden states and the vision output alone."""
    model = VideoPrismClipModel.from_pretrained(save_tiny_clip_model(tmp_path)).eval()
    monkeypatch.setattr(_blocks, "BLOCK_ROWS", block_rows)
    video = torch.rand(3, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    frame_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    ids = torch.randint(1, 160, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = (torch.arange(7)[None] < torch.tensor([[7], [4], [1]])).long()

    def run():
        video_out = model.video_model(video, frame_mask, output_hidden_states=True)
        return video_out, model.text_model(ids, mask, output_hidden_states=True)

    with torch.enable_grad():  # the whole-tensor path (autograd)
        whole = run()
    with torch.no_grad():
        blocks = run()
        vision_alone = model.video_model.vision_model(video, frame_mask).last_hidden_state
        aux_only = model.video_model(video, frame_mask).last_hidden_state  # no hidden states: reuses in place
    pairs = [
        (aux_only, whole[0].last_hidden_state),
        (blocks[0].vision_model_output.last_hidden_state, vision_alone),
    ]
    for block_out, whole_out in zip(blocks, whole, strict=True):
        pairs += [
            (block_out.pooler_output, whole_out.pooler_output),
            (block_out.last_hidden_state, whole_out.last_hidden_state),
        ]
        pairs += zip(block_out.hidden_states, whole_out.hidden_states, strict=True)
    for actual, expected in pairs:
        torch.testing.assert_close(actual, expected.detach(), rtol=0, atol=2e-6)


def test_whole_tensor_path_with_flex_reads_strided_heads(tmp_path, monkeypatch):
    """The whole-tensor path hands flex q/k/v as strided views of the fused projection (no layout copy) and merges its
    output, laid out like q, without a copy: same outputs as the chunked kernel on contiguous heads."""
    model = VideoPrismClipModel.from_pretrained(save_tiny_clip_model(tmp_path)).eval()
    video = torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(1, 160, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = (torch.arange(7)[None] < torch.tensor([[7], [3]])).long()
    monkeypatch.setattr(modeling, "runs_blockwise", lambda x: False)  # the whole-tensor path, as on CUDA
    outputs = {}
    for kernel in ("flex", "chunked"):
        model.set_attn_implementation(kernel)
        with torch.no_grad():  # flex has no backward on CPU
            out = model(video, ids, attention_mask=mask)
        outputs[kernel] = (out.video_embeds, out.text_embeds)
    for flex, chunked in zip(outputs["flex"], outputs["chunked"], strict=True):
        torch.testing.assert_close(flex, chunked, rtol=0, atol=2e-6)


MALLOC_SCRIPT = """
import ctypes, sys
from videoprism import _blocks
if sys.argv[1] == "raised":
    _blocks.raise_heap_thresholds()
libc = _blocks.libc()
block = libc.malloc(20 << 20)  # a block's worth of intermediates
size_field = ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value
libc.free(block)
print(bool(size_field & 2))  # glibc's IS_MMAPPED chunk bit: a fresh mapping, returned to the kernel on free
"""


def test_raised_heap_thresholds_serve_a_block_from_the_heap():
    """After the hint glibc serves 20 MB from its heap (kept and reused after free); before it, from a new mapping."""
    assert _blocks.is_glibc(), "this test reads glibc's chunk header: run it on a glibc Linux, as CI does"
    mapped = {}
    for mode in ("raised", "plain"):
        done = subprocess.run([sys.executable, "-c", MALLOC_SCRIPT, mode], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        mapped[mode] = done.stdout.split()[-1]
    assert mapped == {"raised": "False", "plain": "True"}
