"""Zero-shot classification: the template-ensemble arithmetic, probabilities, and a tiny real model end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _videos import make_video
from torch import nn

from videoprism.tokenization import VideoPrismTokenizer
from videoprism.zero_shot import (
    DEFAULT_TEMPLATE,
    TEMPLATE_ENSEMBLES,
    build_zero_shot_classifier,
    label_probabilities,
    label_probabilities_of_videos,
    zero_shot_logits,
)
from videoprism.zero_shot_metadata import KINETICS_TEMPLATES

SPM = Path(__file__).parent / "fixtures" / "tokenizer" / "spm_t5layout.model"
LABELS = ["playing drums", "playing flute", "walking the dog", "riding a horse"]


class MeanEmbeddingTextEncoder(nn.Module):
    """A stand-in text tower: the masked mean of token embeddings, deliberately NOT normalised."""

    def __init__(self, vocab_size: int = 160, dim: int = 24):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        with torch.no_grad():
            self.embedding.weight.copy_(torch.randn(vocab_size, dim, generator=torch.Generator().manual_seed(0)))
        self.calls = 0

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        mask = attention_mask.unsqueeze(-1).float()
        return 3.0 * (self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        # A deterministic "video tower" for label_probabilities(): mean pixel per channel, tiled to the text width.
        return pixel_values_videos.mean(dim=(1, 3, 4)).repeat(1, 8)


@pytest.fixture(scope="module")
def tokenizer() -> VideoPrismTokenizer:
    return VideoPrismTokenizer.from_pretrained(SPM)


def _direct_classifier(encoder, tokenizer, labels, templates) -> torch.Tensor:
    """The arithmetic written out: one prompt at a time, normalise, average per label, renormalise."""
    rows = []
    for label in labels:
        embeds = []
        for template in templates:
            tokens = tokenizer(template.format(label), return_tensors="pt")
            e = encoder.get_text_features(tokens["input_ids"], tokens["attention_mask"])[0].double()
            embeds.append(e / e.norm())
        mean = torch.stack(embeds).mean(0)
        rows.append(mean / mean.norm())
    return torch.stack(rows)


def test_classifier_arithmetic(tokenizer):
    encoder = MeanEmbeddingTextEncoder()
    templates = KINETICS_TEMPLATES[:5]
    classifier = build_zero_shot_classifier(encoder, tokenizer, LABELS, templates, batch_size=3)
    assert classifier.shape == (len(LABELS), 24) and classifier.dtype == torch.float32
    expected = _direct_classifier(encoder, tokenizer, LABELS, templates)
    torch.testing.assert_close(classifier.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(classifier.norm(dim=-1), torch.ones(len(LABELS)))
    # Batching does not change the result; 20 prompts in batches of 3 = 7 calls.
    assert encoder.calls >= 7
    torch.testing.assert_close(build_zero_shot_classifier(encoder, tokenizer, LABELS, templates), classifier)


def test_default_template_and_ensembles(tokenizer):
    encoder = MeanEmbeddingTextEncoder()
    assert DEFAULT_TEMPLATE == "a video of {}."
    assert TEMPLATE_ENSEMBLES["default"] == (DEFAULT_TEMPLATE,)
    assert len(TEMPLATE_ENSEMBLES["ensemble"]) == 28 and DEFAULT_TEMPLATE in TEMPLATE_ENSEMBLES["ensemble"]
    single = build_zero_shot_classifier(encoder, tokenizer, LABELS)
    tokens = tokenizer([DEFAULT_TEMPLATE.format(label) for label in LABELS], return_tensors="pt")
    direct = encoder.get_text_features(tokens["input_ids"], tokens["attention_mask"])
    torch.testing.assert_close(single, direct / direct.norm(dim=-1, keepdim=True))
    by_name = build_zero_shot_classifier(encoder, tokenizer, LABELS, templates="ensemble")
    torch.testing.assert_close(by_name, build_zero_shot_classifier(encoder, tokenizer, LABELS, KINETICS_TEMPLATES))
    callable_templates = build_zero_shot_classifier(encoder, tokenizer, LABELS, [lambda c: f"a video of {c}."])
    torch.testing.assert_close(callable_templates, single)


def test_probabilities_sum_to_one_and_rank(tokenizer):
    encoder = MeanEmbeddingTextEncoder()
    classifier = build_zero_shot_classifier(encoder, tokenizer, LABELS)
    # Videos whose embeddings are (noisy, scaled) copies of labels 2, 0 and 3.
    videos = classifier[[2, 0, 3]] * 5 + 0.01 * torch.randn(3, 24, generator=torch.Generator().manual_seed(1))
    probs, logits = label_probabilities(encoder, videos, classifier, return_logits=True)
    assert probs.shape == (3, len(LABELS)) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))
    assert probs.argmax(-1).tolist() == [2, 0, 3]
    cosine = torch.nn.functional.normalize(videos, dim=-1) @ classifier.T
    torch.testing.assert_close(logits, cosine / 0.01, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(zero_shot_logits(videos, classifier, temperature=0.5), cosine / 0.5)
    # A higher temperature flattens the distribution without changing the ranking.
    soft = label_probabilities(encoder, videos, classifier, temperature=1.0)
    assert soft.argmax(-1).tolist() == [2, 0, 3] and (soft.max(-1).values < probs.max(-1).values).all()


def test_classify_pixel_values(tokenizer):
    encoder = MeanEmbeddingTextEncoder()
    classifier = build_zero_shot_classifier(encoder, tokenizer, LABELS)
    pixels = torch.rand(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    probs = label_probabilities(encoder, pixels, classifier)
    expected = zero_shot_logits(encoder.get_video_features(pixels), classifier).softmax(-1)
    torch.testing.assert_close(probs, expected)


def test_errors(tokenizer):
    encoder = MeanEmbeddingTextEncoder()
    with pytest.raises(ValueError, match="labels is empty"):
        build_zero_shot_classifier(encoder, tokenizer, [])
    with pytest.raises(TypeError, match=r"labels\[1\]"):
        build_zero_shot_classifier(encoder, tokenizer, ["a", 3])
    with pytest.raises(ValueError, match="'{}'"):
        build_zero_shot_classifier(encoder, tokenizer, LABELS, ["a video"])
    with pytest.raises(ValueError, match="templates is empty"):
        build_zero_shot_classifier(encoder, tokenizer, LABELS, [])
    classifier = build_zero_shot_classifier(encoder, tokenizer, LABELS)
    with pytest.raises(ValueError, match="temperature"):
        label_probabilities(encoder, classifier, classifier, temperature=0)
    with pytest.raises(ValueError, match="expected pixel values"):
        label_probabilities(encoder, torch.zeros(2, 3, 4), classifier)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        zero_shot_logits(torch.zeros(2, 5), classifier)


def test_end_to_end_with_tiny_clip_model(tmp_path, tokenizer):
    from videoprism.configuration import VideoPrismConfig, VideoPrismTextConfig, VideoPrismVisionConfig
    from videoprism.modeling import VideoPrismClipModel
    from videoprism.processing import VideoPrismProcessor
    from videoprism.video_processing import VideoPrismVideoProcessor

    config = VideoPrismConfig(
        vision_config=VideoPrismVisionConfig(
            image_size=36,
            num_frames=4,
            hidden_size=32,
            num_attention_heads=2,
            intermediate_size=128,
            num_spatial_layers=1,
            num_temporal_layers=1,
            num_auxiliary_layers=1,
        ),
        text_config=VideoPrismTextConfig(vocab_size=160, hidden_size=32, num_attention_heads=2, num_hidden_layers=1),
    )
    torch.manual_seed(0)
    model = VideoPrismClipModel(config)
    model.init_weights()
    folder = tmp_path / "tiny-lvt"
    model.save_pretrained(folder)
    VideoPrismProcessor(VideoPrismVideoProcessor(num_frames=4, size=36), tokenizer).save_pretrained(folder)

    model = VideoPrismClipModel.from_pretrained(folder)
    processor = VideoPrismProcessor.from_pretrained(folder)
    video = make_video(tmp_path / "clip.mp4", num_frames=12, size=(64, 48))

    probs = label_probabilities_of_videos(model, processor, [str(video), str(video)], LABELS)
    assert probs.shape == (2, len(LABELS))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    torch.testing.assert_close(probs[0], probs[1])

    # Same as the model's own scoring with the default prompt: cosine / 0.01, softmax over the labels.
    inputs = processor(
        text=[DEFAULT_TEMPLATE.format(label) for label in LABELS], videos=str(video), return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs).logits_per_video
    torch.testing.assert_close(probs[:1], logits.softmax(-1), rtol=1e-4, atol=1e-5)
    assert np.isfinite(probs.numpy()).all()
