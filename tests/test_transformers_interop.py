"""Checkpoints move both ways between this package and transformers 5.23, with the same outputs."""

import warnings

import pytest
import torch
import transformers

import videoprism

VISION = dict(
    hidden_size=32,
    num_attention_heads=2,
    intermediate_size=128,
    num_spatial_layers=2,
    num_temporal_layers=2,
    num_auxiliary_layers=2,
    image_size=32,
    tubelet_size=[1, 8, 8],
    num_frames=4,
)
TEXT = dict(
    vocab_size=100,
    hidden_size=32,
    num_attention_heads=2,
    intermediate_size=128,
    num_hidden_layers=2,
    max_position_embeddings=16,
)
PAIRS = {
    "vision": (transformers.VideoPrismVisionModel, videoprism.VideoPrismVisionModel),
    "video": (transformers.VideoPrismVideoModel, videoprism.VideoPrismVideoModel),
    "classification": (transformers.VideoPrismForVideoClassification, videoprism.VideoPrismForVideoClassification),
}


@torch.no_grad()
def perturb(model, seed):
    """Moves every parameter (LayerNorms included) off its initial value; q/k larger so the soft cap matters."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen) * 0.1
        if "q_proj.weight" in name or "k_proj.weight" in name:
            noise *= 3
        param.add_(noise)
    return model


def hf_vision_config(num_labels=None):
    extra = {} if num_labels is None else {"num_labels": num_labels}
    return transformers.VideoPrismVisionConfig(**VISION, **extra)


def video(batch=2, seed=0):
    return torch.rand(batch, 4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def outputs(kind, model, x):
    with torch.no_grad():
        out = model(pixel_values_videos=x)
    if kind == "vision":
        return out.last_hidden_state
    if kind == "video":
        return out.pooler_output.reshape(x.shape[0], -1)  # transformers returns (B, 1, D)
    return out.logits.reshape(x.shape[0], -1)


@pytest.mark.parametrize("kind", list(PAIRS))
def test_transformers_checkpoint_loads_here(kind, tmp_path):
    hf_cls, our_cls = PAIRS[kind]
    hf = perturb(hf_cls(hf_vision_config(3 if kind == "classification" else None)), seed=1).eval()
    hf.save_pretrained(tmp_path)
    ours = our_cls.from_pretrained(tmp_path)
    x = video()
    torch.testing.assert_close(outputs(kind, ours, x), outputs(kind, hf, x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", list(PAIRS))
def test_our_checkpoint_loads_in_transformers(kind, tmp_path):
    hf_cls, our_cls = PAIRS[kind]
    config = videoprism.VideoPrismVisionConfig(**VISION, num_labels=3 if kind == "classification" else None)
    ours = perturb(our_cls(config), seed=2).eval()
    ours.save_pretrained(tmp_path)
    hf, info = hf_cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    x = video(seed=3)
    torch.testing.assert_close(outputs(kind, ours, x), outputs(kind, hf.eval(), x), rtol=0, atol=1e-5)


def test_state_dict_keys_and_shapes_match_transformers():
    hf_config = transformers.VideoPrismConfig(text_config=TEXT, vision_config=VISION)
    hf = transformers.VideoPrismClipModel(hf_config)
    ours = videoprism.VideoPrismClipModel(
        videoprism.VideoPrismConfig(
            videoprism.VideoPrismVisionConfig(**VISION), videoprism.VideoPrismTextConfig(**TEXT)
        )
    )
    hf_shapes = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert our_shapes == hf_shapes


def clip_pair(tmp_path, direction):
    """A perturbed clip model in both packages with the same weights, saved by `direction`'s source side."""
    if direction == "ours":
        config = videoprism.VideoPrismConfig(
            videoprism.VideoPrismVisionConfig(**VISION), videoprism.VideoPrismTextConfig(**TEXT)
        )
        ours = perturb(videoprism.VideoPrismClipModel(config), seed=4).eval()
        ours.save_pretrained(tmp_path)
        hf = transformers.VideoPrismClipModel.from_pretrained(tmp_path).eval()
    else:
        hf = perturb(
            transformers.VideoPrismClipModel(transformers.VideoPrismConfig(text_config=TEXT, vision_config=VISION)),
            seed=5,
        ).eval()
        hf.save_pretrained(tmp_path)
        ours = videoprism.VideoPrismClipModel.from_pretrained(tmp_path)
    return ours, hf


def text_batch():
    ids = torch.tensor([[5, 17, 33, 2, 9, 0, 0, 0], [7, 8, 9, 10, 11, 12, 13, 14]])
    mask = (torch.arange(8)[None] < torch.tensor([[5], [8]])).long()
    return ids, mask


def test_text_from_our_checkpoint_matches_transformers_given_a_mask(tmp_path):
    """Our checkpoints carry the original sinusoid in the position buffer, so transformers reproduces our text
    embeddings when it is given an attention mask (its only causal path)."""
    ours, hf = clip_pair(tmp_path, "ours")
    ids, mask = text_batch()
    with torch.no_grad():
        expected = ours.text_model(ids, mask).pooler_output
        torch.testing.assert_close(
            hf.text_model(input_ids=ids, attention_mask=mask).pooler_output, expected, rtol=0, atol=1e-5
        )


def test_known_text_differences_of_transformers(tmp_path):
    ours, hf = clip_pair(tmp_path, "transformers")
    ids, mask = text_batch()
    full = torch.ones_like(mask)
    with torch.no_grad():
        # Ours is causal with or without a mask; transformers is bidirectional without one.
        torch.testing.assert_close(ours.text_model(ids).pooler_output, ours.text_model(ids, full).pooler_output)
        hf_no_mask = hf.text_model(input_ids=ids).pooler_output
        hf_mask = hf.text_model(input_ids=ids, attention_mask=full).pooler_output
        assert (hf_no_mask - hf_mask).abs().max() > 1e-3
        # transformers' own sinusoid (stored in its checkpoint) differs from the original, which we recompute.
        table = hf.text_model.embeddings.position_embedding
        assert (table - videoprism.modeling.text_sinusoid(*table.shape)).abs().max() > 1e-2
        ours_embeds = ours.text_model(ids, mask).pooler_output
        assert (ours_embeds - hf.text_model(input_ids=ids, attention_mask=mask).pooler_output).abs().max() > 1e-4
        # Video embeddings agree; transformers' clip "logits" are exp(similarity) normalised over videos.
        x = video()
        hf_out = hf(pixel_values_videos=x, input_ids=ids, attention_mask=mask, temperature=0.01)
        our_out = ours(x, ids, attention_mask=mask, temperature=0.01)
        torch.testing.assert_close(our_out.video_embeds, hf_out.video_embeds, rtol=0, atol=1e-5)
        torch.testing.assert_close(hf_out.logits_per_video.sum(0), torch.ones(2))
        similarity = our_out.video_embeds @ our_out.text_embeds.T
        torch.testing.assert_close(our_out.logits_per_video, similarity / 0.01)


def test_pooler_width_not_equal_to_intermediate_size_warns_on_save(tmp_path):
    config = videoprism.VideoPrismVisionConfig(**{**VISION, "intermediate_size": 96})
    model = videoprism.VideoPrismVideoModel(config)
    with pytest.warns(UserWarning, match="transformers 5.23 cannot"):
        model.save_pretrained(tmp_path)
    reloaded = videoprism.VideoPrismVideoModel.from_pretrained(tmp_path)
    assert reloaded.config.pooler_size == 128
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        videoprism.VideoPrismVisionModel(config).save_pretrained(tmp_path / "vision")
