"""What the VideoPrism models return: dataclasses that also answer `output["name"]` and `to_tuple()`."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


class ModelOutput:
    """Dataclass outputs that also answer `output["name"]` and `to_tuple()` (the non-None fields, in order)."""

    def __getitem__(self, key: str):
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, k) for k in self.keys())


@dataclass
class VideoPrismVisionOutput(ModelOutput):
    """`last_hidden_state` (B, T*N, D), frame-major; `spatial_features` (B, T*N, D) after the spatial LayerNorm."""

    last_hidden_state: torch.Tensor
    spatial_features: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class VideoPrismVideoOutput(ModelOutput):
    """`pooler_output` (B, D) video embedding; `last_hidden_state` (B, T*N, D) auxiliary-encoder tokens;
    `frame_embeds` (B, T, D) when asked for; `vision_model_output` the factorized encoder's output."""

    pooler_output: torch.Tensor
    last_hidden_state: torch.Tensor | None = None
    frame_embeds: torch.Tensor | None = None
    vision_model_output: VideoPrismVisionOutput | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class VideoPrismTextOutput(ModelOutput):
    """`pooler_output` (B, D) text embedding (the appended CLS token); `last_hidden_state` (B, L + 1, D)."""

    pooler_output: torch.Tensor
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class VideoPrismClipOutput(ModelOutput):
    """`logits_per_video` (Bv, Bt) = cosine / temperature; `logits_per_text` its transpose."""

    logits_per_video: torch.Tensor
    logits_per_text: torch.Tensor
    video_embeds: torch.Tensor
    text_embeds: torch.Tensor
    loss: torch.Tensor | None = None
    video_model_output: VideoPrismVideoOutput | None = None
    text_model_output: VideoPrismTextOutput | None = None


@dataclass
class VideoPrismClassifierOutput(ModelOutput):
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
