"""The original Flax release's outputs on small random models (tests/fixtures/videoprism_flax), via the public API."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from videoprism import (
    VideoPrismClipModel,
    VideoPrismConfig,
    VideoPrismTextConfig,
    VideoPrismTextModel,
    VideoPrismVideoModel,
    VideoPrismVisionConfig,
    VideoPrismVisionModel,
    _attention,
    _blocks,
)

FIXTURES = Path(__file__).parent / "fixtures" / "videoprism_flax"
# benchmarks/gpu_check.sh runs these on a GPU with VIDEOPRISM_TEST_DEVICE=cuda.
DEVICE = os.environ.get("VIDEOPRISM_TEST_DEVICE", "cpu")


def fixture(name):
    meta = json.loads((FIXTURES / f"{name}_config.json").read_text())
    with np.load(FIXTURES / f"{name}_io.npz", allow_pickle=False) as data:
        io = {k: data[k] for k in data.files}
    cases = sorted({k.split("/")[0] for k in io})
    return meta, io, cases, FIXTURES / f"{name}_params.npz"


def vision_config(original: dict, **extra) -> VideoPrismVisionConfig:
    """Maps the original FactorizedEncoder keyword arguments to our field names."""
    t0, h0, w0 = original["pos_emb_shape"]
    assert h0 == w0
    return VideoPrismVisionConfig(
        hidden_size=original["model_dim"],
        num_attention_heads=original["num_heads"],
        intermediate_size=original["mlp_dim"],
        num_spatial_layers=original["num_spatial_layers"],
        num_temporal_layers=original["num_temporal_layers"],
        num_auxiliary_layers=original.get("num_auxiliary_layers", 0),
        tubelet_size=[1, original["patch_size"], original["patch_size"]],
        image_size=h0 * original["patch_size"],
        num_frames=t0,
        attn_logit_softcapping=original["atten_logit_cap"],
        **extra,
    )


def clip_config(original: dict, normalize: bool = True) -> VideoPrismConfig:
    text = VideoPrismTextConfig(
        vocab_size=original["vocabulary_size"],
        hidden_size=original["model_dim"],
        num_attention_heads=original["num_heads"],
        num_hidden_layers=original["num_unimodal_layers"],
        attn_logit_softcapping=original["atten_logit_cap"],
        apply_l2norm=normalize,
    )
    return VideoPrismConfig(vision_config(original, apply_l2norm=normalize), text)


def video_input(io, case):
    video = torch.from_numpy(io[f"{case}/input/video"]).permute(0, 1, 4, 2, 3)  # original is channels-last
    paddings = io.get(f"{case}/input/frame_paddings")
    frame_mask = None if paddings is None else torch.from_numpy(1 - paddings).to(DEVICE)
    return video.to(DEVICE), frame_mask


def text_input(io, case):
    ids = torch.from_numpy(io[f"{case}/input/text_token_ids"]).long()
    mask = torch.from_numpy(1 - io[f"{case}/input/text_paddings"]).long()
    return ids.to(DEVICE), mask.to(DEVICE)


def assert_close(actual, expected, atol):
    actual = actual.detach().float().cpu().numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("attn", ["auto", "chunked", "eager", "flex"])
def test_video_encoder(attn):
    meta, io, cases, params = fixture("video_encoder_small")
    model = VideoPrismVisionModel.from_pretrained(
        params, config=vision_config(meta["config"]), attn_implementation=attn, device=DEVICE
    )
    assert model.attn_implementation == attn
    for case in cases:
        video, frame_mask = video_input(io, case)
        with torch.no_grad():
            out = model(video, frame_mask=frame_mask, interpolate_pos_encoding=True)
        assert_close(out.last_hidden_state, io[f"{case}/output/embeddings"], 2e-5)
        assert_close(out.spatial_features, io[f"{case}/output/spatial_features"], 2e-5)
        grid = video.shape[-1] // model.config.patch_size
        assert_close(model.spatial_embeddings.positions(grid), io[f"{case}/output/spatial_pos_emb_used"], 1e-6)
        assert_close(
            model.temporal_embeddings.positions(video.shape[1]), io[f"{case}/output/temporal_pos_emb_used"], 1e-6
        )


@pytest.mark.parametrize("normalize, attn", [(True, "auto"), (False, "auto"), (True, "flex"), (True, "eager")])
def test_lvt(normalize, attn):
    meta, io, cases, params = fixture("lvt_small")
    model = VideoPrismClipModel.from_pretrained(
        params, config=clip_config(meta["config"], normalize), attn_implementation=attn, device=DEVICE
    )
    suffix = "" if normalize else "_unnormalized"
    for case in cases:
        video, frame_mask = video_input(io, case)
        ids, mask = text_input(io, case)
        with torch.no_grad():
            out = model(video, ids, attention_mask=mask, frame_mask=frame_mask, interpolate_pos_encoding=True)
            frames = model.video_model(video, frame_mask, interpolate_pos_encoding=True, return_frame_embeds=True)
        assert_close(
            out.video_model_output.vision_model_output.last_hidden_state,
            io[f"{case}/output/spatiotemporal_features"],
            2e-5,
        )
        assert_close(out.video_embeds, io[f"{case}/output/video_embeddings{suffix}"], 1e-5)
        assert_close(out.text_embeds, io[f"{case}/output/text_embeddings{suffix}"], 1e-5)
        assert_close(frames.frame_embeds, io[f"{case}/output/frame_embeddings{suffix}"], 1e-5)
        assert_close(frames.pooler_output, out.video_embeds.cpu().numpy(), 1e-6)
        if normalize:
            assert_close(out.logits_per_video, io[f"{case}/output/similarity_logits"], 1e-4)
            probs = torch.softmax(out.logits_per_video, dim=1)
            assert_close(probs, io[f"{case}/output/similarity_probs_over_texts"], 1e-5)


@pytest.mark.parametrize("block_rows", [5, 64])
def test_blockwise_cpu_inference(monkeypatch, block_rows):
    """CPU inference runs layers in row blocks (BLOCK_ROWS never splits these small fixtures): force the split."""
    monkeypatch.setattr(_blocks, "BLOCK_ROWS", block_rows)
    test_video_encoder("chunked")
    test_lvt(True, "chunked")


@pytest.mark.parametrize("library", ["aten", "onednn"])
def test_each_cpu_gemm_library(cpu_gemm, library):
    """fp32 CPU inference through either library (linear layers; on oneDNN also the soft cap's tanh) matches the
    original."""
    cpu_gemm(library)
    test_video_encoder("auto")
    test_lvt(True, "auto")
    test_lvt(False, "auto")


@pytest.mark.parametrize("block_bytes", [64, 2**20])
def test_onednn_attention_pair_by_pair(monkeypatch, cpu_gemm, onednn_attention_calls, block_bytes):
    """On oneDNN, unmasked soft-capped attention with many scores per pair runs pair by pair with the tanh fused into
    q.k^T (`_attention.onednn_capped_attention`; these fixtures are too small for it): forced, with blocks of a row
    or two and of all rows, it matches the original at the same tolerances."""
    monkeypatch.setattr(_attention, "ONEDNN_PAIR_SCORES", 1)
    monkeypatch.setattr(_attention, "ONEDNN_SCORE_BLOCK_BYTES", block_bytes)
    cpu_gemm("onednn")
    test_video_encoder("auto")
    test_lvt(True, "auto")
    assert onednn_attention_calls


@pytest.mark.parametrize("score_bytes", [64, 2048])
def test_chunked_scores(monkeypatch, score_bytes):
    """Attention scores split into chunks of query rows, heads and sequences (never needed at these sizes): forced."""
    monkeypatch.setattr(_attention, "SCORE_CHUNK_BYTES", score_bytes)
    test_video_encoder("chunked")
    test_lvt(True, "chunked")


def test_lvt_submodels_load_from_the_lvt_file():
    meta, io, cases, params = fixture("lvt_small")
    config = clip_config(meta["config"])
    video_model = VideoPrismVideoModel.from_pretrained(params, config=config, device=DEVICE)
    vision_model = VideoPrismVisionModel.from_pretrained(params, config=config, device=DEVICE)
    text_model = VideoPrismTextModel.from_pretrained(params, config=config, device=DEVICE)
    video, frame_mask = video_input(io, "native")
    ids, mask = text_input(io, "native")
    with torch.no_grad():
        assert_close(video_model(video).pooler_output, io["native/output/video_embeddings"], 1e-5)
        assert_close(vision_model(video).last_hidden_state, io["native/output/spatiotemporal_features"], 2e-5)
        assert_close(text_model(ids, mask).pooler_output, io["native/output/text_embeddings"], 1e-5)


def test_sdpa_is_an_approximate_opt_in():
    """SDPA has no soft cap: it warns, and its deviation from the original is measurable (docs/benchmarks.md)."""
    meta, io, cases, params = fixture("lvt_small")
    model = VideoPrismClipModel.from_pretrained(
        params, config=clip_config(meta["config"]), attn_implementation="sdpa", device=DEVICE
    )
    video, frame_mask = video_input(io, "frame_paddings")
    with pytest.warns(UserWarning, match="drops the attention logit soft cap"), torch.no_grad():
        embeds = model.get_video_features(video, frame_mask, interpolate_pos_encoding=True)
    deviation = (embeds.cpu().numpy() - io["frame_paddings/output/video_embeddings"]).__abs__().max()
    assert 1e-4 < deviation < 0.5 and torch.isfinite(embeds).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lvt_low_precision(dtype):
    """bf16/fp16 weights and activations: embeddings stay within cosine 0.999 of the original's fp32 outputs."""
    meta, io, cases, params = fixture("lvt_small")
    model = VideoPrismClipModel.from_pretrained(params, config=clip_config(meta["config"]), dtype=dtype, device=DEVICE)
    for case in cases:
        video, frame_mask = video_input(io, case)
        ids, mask = text_input(io, case)
        with torch.no_grad():
            out = model(video.to(dtype), ids, attention_mask=mask, frame_mask=frame_mask, interpolate_pos_encoding=True)
        for name, actual in (("video", out.video_embeds), ("text", out.text_embeds)):
            expected = torch.from_numpy(io[f"{case}/output/{name}_embeddings"])
            cosine = torch.nn.functional.cosine_similarity(actual.float().cpu(), expected, dim=-1)
            assert cosine.min() > 0.999, (case, name, cosine)
