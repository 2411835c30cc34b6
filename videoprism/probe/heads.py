"""Probe heads trained on frozen features, and their exact mapping onto `VideoPrismForVideoClassification`.

`AttentiveProbe` is the classifier head of `VideoPrismForVideoClassification` (the original's attentive probe: one
learned query attends over the tokens, then LayerNorm and a linear layer); its parameters carry the classifier's
names, so the trained head drops into the saved model as is.

`LinearProbe` is a linear layer on the mean of the tokens, normalised first (as MAE's linear probe normalises its
features). The normalisation makes it exactly an attentive head whose pooler computes the mean: a zero query gives
every token the same score, so the softmax is uniform; the value and output projections are an identity embedding
into and out of the pooler width; the LayerNorm keeps scale 1 and bias 0. `linear_as_attentive` builds that head,
and the saved model computes the linear probe's logits (up to float rounding of the mean).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..configuration import VideoPrismVisionConfig
from ..modeling import VideoPrismAttentionPooler, VideoPrismLayerNorm

HEADS = ("attentive", "linear")


class AttentiveProbe(nn.Module):
    """`VideoPrismForVideoClassification`'s head: attention pooler, LayerNorm, dropout, linear classifier."""

    def __init__(self, config: VideoPrismVisionConfig, num_labels: int, dropout: float = 0.0):
        super().__init__()
        self.head = VideoPrismAttentionPooler(config)
        self.head_layernorm = VideoPrismLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_head(self, config.initializer_range)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of tokens (B, S, D)."""
        pooled, _ = self.head(tokens)
        return self.classifier(self.dropout(self.head_layernorm(pooled)))


class LinearProbe(nn.Module):
    """A linear classifier on the normalised mean of the tokens (no learned scale: the linear layer absorbs it)."""

    def __init__(self, config: VideoPrismVisionConfig, num_labels: int, dropout: float = 0.0):
        super().__init__()
        self.eps = config.layer_norm_eps
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_head(self, config.initializer_range)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of mean-pooled embeddings (B, D)."""
        x = F.layer_norm(embeddings, embeddings.shape[-1:], eps=self.eps)
        return self.classifier(self.dropout(x))


def build_head(kind: str, config: VideoPrismVisionConfig, num_labels: int, dropout: float = 0.0) -> nn.Module:
    """A fresh `kind` ("attentive" or "linear") head for `num_labels` classes."""
    if kind == "attentive":
        return AttentiveProbe(config, num_labels, dropout)
    if kind == "linear":
        return LinearProbe(config, num_labels, dropout)
    raise ValueError(f"head must be one of {HEADS}, got {kind!r}")


@torch.no_grad()
def init_head(head: nn.Module, std: float) -> None:
    """The models' initialisation (`VideoPrismPreTrainedModel.init_weights`): truncated normal weights, zero biases,
    LayerNorm scale 1, PerDimScale 0."""
    for name, param in head.named_parameters():
        if name.endswith("bias") or "layernorm" in name or name.endswith("per_dim_scale"):
            param.zero_()
        else:
            param.normal_(0.0, std).clamp_(-2 * std, 2 * std)


@torch.no_grad()
def linear_as_attentive(probe: LinearProbe, config: VideoPrismVisionConfig) -> dict[str, torch.Tensor]:
    """The state dict of an `AttentiveProbe` that computes `probe`'s logits from the full token sequence."""
    dim, width = config.hidden_size, config.pooler_size
    embed = torch.zeros(width, dim)
    embed[:dim] = torch.eye(dim)  # the pooler width is at least D (4D in every release)
    pooler = VideoPrismAttentionPooler(config)
    state = {f"head.{k}": torch.zeros_like(v) for k, v in pooler.state_dict().items()}  # zero query: uniform scores
    state["head.v_proj.weight"] = embed
    state["head.o_proj.weight"] = embed.T.contiguous()
    state["head_layernorm.weight"] = torch.zeros(dim)  # stored as scale - 1
    state["head_layernorm.bias"] = torch.zeros(dim)
    state["classifier.weight"] = probe.classifier.weight.detach().float().clone()
    state["classifier.bias"] = probe.classifier.bias.detach().float().clone()
    return state


def classifier_head_state(head: nn.Module, config: VideoPrismVisionConfig) -> dict[str, torch.Tensor]:
    """The `head.*`, `head_layernorm.*` and `classifier.*` tensors of the saved `VideoPrismForVideoClassification`."""
    if isinstance(head, LinearProbe):
        if config.pooler_size < config.hidden_size:
            raise ValueError(f"pooler width {config.pooler_size} < hidden size {config.hidden_size}: no exact mean")
        return linear_as_attentive(head, config)
    return {k: v.detach().float().clone() for k, v in head.state_dict().items()}
