"""torch.compile without graph breaks or batch recompiles; autocast and low-precision weights."""

import sys
from pathlib import Path

import pytest
import torch

import videoprism

sys.path.insert(0, str(Path(__file__).parent))
from test_golden import FIXTURES, clip_config, fixture  # noqa: E402


def lvt_model(attn="auto"):
    config = clip_config(fixture("lvt_small")[0]["config"])
    return videoprism.VideoPrismClipModel.from_pretrained(
        FIXTURES / "lvt_small_params.npz", config=config, attn_implementation=attn
    )


@pytest.mark.parametrize("attn", ["auto", "flex"])
def test_compile_fullgraph_with_dynamic_batch(attn):
    import torch._dynamo

    torch._dynamo.reset()
    model = lvt_model(attn)
    # Inductor's CPU flex template cannot lower these shapes, and under other backends flex recompiles an inner
    # wrapper per shape: on CPU, flex checks the full-graph capture (benchmarks/gpu_check.sh compiles it on CUDA).
    backend = "aot_eager" if attn == "flex" else "inductor"
    compiled_video = torch.compile(model.video_model, fullgraph=True, dynamic=True, backend=backend)
    compiled_text = torch.compile(model.text_model, fullgraph=True, dynamic=True, backend=backend)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=attn != "flex"):
        for batch in (2, 3, 5):  # a new batch size must not recompile (error_on_recompile)
            video = torch.rand(batch, 4, 3, 32, 32)
            torch.testing.assert_close(
                compiled_video(video).pooler_output, model.video_model(video).pooler_output, rtol=0, atol=1e-5
            )
            ids = torch.randint(1, 100, (batch, 8))
            mask = (torch.arange(8)[None] < torch.arange(batch)[:, None] + 3).long()
            torch.testing.assert_close(
                compiled_text(ids, mask).pooler_output, model.text_model(ids, mask).pooler_output, rtol=0, atol=1e-5
            )
    torch._dynamo.reset()


def test_autocast_bfloat16():
    model = lvt_model()
    video = torch.rand(2, 4, 3, 32, 32)
    ids = torch.randint(1, 100, (3, 8))
    with torch.no_grad():
        expected = model(video, ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(video, ids)
    assert out.logits_per_video.dtype == torch.float32  # similarity in fp32
    norms = out.video_embeds.float().norm(dim=-1)  # normalised in fp32, then stored in bf16
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=8e-3)
    cosine = torch.nn.functional.cosine_similarity(out.video_embeds.float(), expected.video_embeds, dim=-1)
    assert cosine.min() > 0.99, cosine
    assert torch.isfinite(out.logits_per_video).all()


def test_training_step_runs_with_the_default_attention():
    """The in-place fast paths are inference-only; with gradients the same code stays autograd-safe."""
    model = lvt_model().train()
    video = torch.rand(2, 4, 3, 32, 32)
    ids = torch.randint(1, 100, (2, 8))
    out = model(video, ids, return_loss=True)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        inference = model.eval()(video, ids, return_loss=True).loss
    torch.testing.assert_close(out.loss.detach(), inference, rtol=0, atol=1e-5)
