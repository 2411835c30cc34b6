"""Fine-tuning the encoder's last layers with the head (`--unfreeze N`): videos decoded every epoch, no cache."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..modeling import VideoPrismVisionModel
from .classifier import Clip, decoded_batches, load_encoder
from .data import LabelledSet
from .heads import build_head
from .train import ProbeResult, ProbeSettings, ProbeSettingsError, train_loop


class EncoderProbe(nn.Module):
    """Encoder + head: logits of pixel values (B, T, 3, H, W)."""

    def __init__(self, encoder: VideoPrismVisionModel, head: nn.Module, kind: str):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.kind = kind

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(pixels).last_hidden_state
        return self.head(tokens.mean(dim=1) if self.kind == "linear" else tokens)


def unfreeze_layers(encoder: VideoPrismVisionModel, count: int) -> list[str]:
    """Freezes the encoder but its last `count` layers (temporal layers first, then spatial from the top) and the
    LayerNorm after each unfrozen stage; returns the unfrozen layers' names."""
    layers = [(f"temporal_layers.{i}", layer) for i, layer in enumerate(encoder.temporal_layers)][::-1]
    layers += [(f"spatial_layers.{i}", layer) for i, layer in enumerate(encoder.spatial_layers)][::-1]
    if count > len(layers):
        raise ProbeSettingsError(f"--unfreeze {count}: the encoder has only {len(layers)} layers")
    encoder.requires_grad_(False)
    chosen = layers[:count]
    for _, layer in chosen:
        layer.requires_grad_(True)
        layer.forward = functools.partial(_checkpointed, type(layer).forward, layer)
    encoder.layernorm2.requires_grad_(True)
    if count > len(encoder.temporal_layers):
        encoder.layernorm1.requires_grad_(True)
    return [name for name, _ in chosen]


def _checkpointed(forward, layer: nn.Module, *args, **kwargs):
    """Gradient checkpointing: the layer's activations are recomputed in the backward pass instead of kept."""
    if not (layer.training and torch.is_grad_enabled()):
        return forward(layer, *args, **kwargs)
    return checkpoint(forward, layer, *args, use_reentrant=False, **kwargs)


class VideoBatches:
    """Batches of decoded clips (pixels) with their targets; decoding runs in threads, every time a batch is read."""

    def __init__(self, data: LabelledSet, processor, workers: int = 2):
        self.clips = [Clip(item.path, item.start, item.end) for item in data.items]
        self.targets = data.targets()
        self.multi_label = data.multi_label
        self.processor = processor
        self.workers = workers

    def __len__(self) -> int:
        return len(self.clips)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        clips = [self.clips[i] for i in indices]
        _, pixels, failed = next(decoded_batches(clips, self.processor, len(clips), self.workers))
        if failed:
            raise ProbeSettingsError(f"cannot decode {failed[0][1]}; remove the video from the data set")
        return pixels, torch.from_numpy(self.targets[np.asarray(indices)])

    def ordered(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            yield self.batch(range(start, min(start + batch_size, len(self))))


def fit_encoder(
    train: LabelledSet,
    val: LabelledSet,
    model: str | os.PathLike,
    settings: ProbeSettings,
    unfreeze: int,
    grad_accum: int,
    out: str | os.PathLike,
    num_frames: int | None = None,
) -> tuple[ProbeResult, VideoPrismVisionModel]:
    """Trains a fresh head together with the encoder's last `unfreeze` layers; returns the result (with the best
    epoch's weights) and the fine-tuned encoder."""
    from ..video_processing import VideoPrismVideoProcessor

    if not isinstance(grad_accum, int) or isinstance(grad_accum, bool) or grad_accum < 1:
        raise ProbeSettingsError(f"grad_accum={grad_accum!r}; give a positive number of batches per update")
    overrides = {} if num_frames is None else {"num_frames": num_frames}
    processor = VideoPrismVideoProcessor.from_pretrained(model, **overrides)
    encoder = load_encoder(model)
    unfrozen = unfreeze_layers(encoder, unfreeze)
    train_data, val_data = VideoBatches(train, processor), VideoBatches(val, processor)
    identity = {
        "settings": settings.fingerprint(),
        "classes": list(train.class_names),
        "clips": [(c.path, c.start, c.end) for c in train_data.clips],
        "unfreeze": unfrozen,
        "grad_accum": grad_accum,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        head = build_head(settings.head, encoder.config, len(train.class_names), settings.dropout)
        module = EncoderProbe(encoder, head, settings.head)
        result = train_loop(module, train_data, val_data, settings, identity, out, grad_accum)
    result.head = module.head
    for layer in encoder.modules():
        layer.__dict__.pop("forward", None)  # drop the checkpointing wrappers
    encoder.requires_grad_(False)
    return result, encoder
