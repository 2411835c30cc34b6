"""A tiny random LvT checkpoint folder (weights, config, video processor, optional tokenizer) for tool tests."""

from pathlib import Path

import torch

from videoprism import (
    VideoPrismClipModel,
    VideoPrismConfig,
    VideoPrismProcessor,
    VideoPrismTextConfig,
    VideoPrismTokenizer,
    VideoPrismVideoProcessor,
    VideoPrismVisionConfig,
)


def save_tiny_clip_model(folder: Path, spm_model: Path | None = None) -> Path:
    """32x32 frames, 4 frames, width 32; with `spm_model`, a processor with that tokenizer is saved beside it."""
    config = VideoPrismConfig(
        VideoPrismVisionConfig(
            hidden_size=32, num_attention_heads=2, intermediate_size=128, num_spatial_layers=1, num_temporal_layers=1,
            num_auxiliary_layers=1, image_size=32, tubelet_size=[1, 8, 8], num_frames=4,
        ),
        VideoPrismTextConfig(
            vocab_size=160, hidden_size=32, num_attention_heads=2, num_hidden_layers=1, max_position_embeddings=64
        ),
    )  # fmt: skip
    torch.manual_seed(0)
    model = VideoPrismClipModel(config)
    with torch.no_grad():  # away from the init, so that different videos get clearly different embeddings
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    video_processor = VideoPrismVideoProcessor(num_frames=4, size=32)
    if spm_model is None:
        video_processor.save_pretrained(folder)
    else:
        VideoPrismProcessor(video_processor, VideoPrismTokenizer.from_pretrained(spm_model)).save_pretrained(folder)
    return folder
