"""Zero-shot video classification with a VideoPrism video-text (LvT) model.

A class's embedding is the mean of its L2-normalised prompt embeddings, renormalised (as open_clip does); a video
is scored by cosine similarity / temperature (0.01 in the original demo), softmax over the classes.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._numerics import l2_normalize
from ._text import printable
from .errors import TextInputError
from .zero_shot_metadata import DEFAULT_TEMPLATE, TEMPLATE_ENSEMBLES

__all__ = [
    "DEFAULT_TEMPLATE",
    "TEMPLATE_ENSEMBLES",
    "build_zero_shot_classifier",
    "check_text",
    "label_probabilities",
    "label_probabilities_of_videos",
    "zero_shot_logits",
]

Template = str | Callable[[str], str]


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def check_text(text: str, what: str) -> None:
    """Raises `TextInputError` naming ``what`` when ``text`` is not valid Unicode: lone surrogates stand for bytes
    that were not UTF-8 (a command-line argument or file name decoded with ``surrogateescape``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise TextInputError(
            f"{what} = {printable(text)} is not valid UTF-8 text (undecodable byte at position {err.start}); "
            "pass the text in UTF-8"
        ) from None


def checked_templates(templates: str | Sequence[Template]) -> list[Template]:
    if isinstance(templates, str):
        if templates in TEMPLATE_ENSEMBLES:
            return list(TEMPLATE_ENSEMBLES[templates])
        templates = [templates]
    templates = list(templates)
    if not templates:
        raise TextInputError("templates is empty; pass at least one, e.g. (DEFAULT_TEMPLATE,)")
    for i, t in enumerate(templates):
        if isinstance(t, str):
            check_text(t, f"templates[{i}]")
            try:
                fields = [name for _, name, _, _ in string.Formatter().parse(t) if name is not None]
            except ValueError as err:  # a lone { or }
                raise TextInputError(
                    f"templates[{i}] = {t!r} is not a template ({err}); write {{{{ for a brace"
                ) from None
            if fields != [""]:
                raise TextInputError(
                    f"templates[{i}] = {t!r} must hold exactly one '{{}}' where the label goes, found {len(fields)} "
                    "fields; write {{ and }} for literal braces"
                )
        elif not callable(t):
            raise TypeError(f"templates[{i}] is a {type(t).__name__}; expected a str with '{{}}' or a callable")
    return templates


@torch.no_grad()
def build_zero_shot_classifier(
    model: Any,
    tokenizer: Callable[..., Any],
    labels: Sequence[str],
    templates: str | Sequence[Template] = (DEFAULT_TEMPLATE,),
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Class embeddings for zero-shot classification.

    Args:
        model: A model with `get_text_features(input_ids, attention_mask)` (e.g. `VideoPrismClipModel`).
        tokenizer: A `VideoPrismTokenizer` (or anything called as `tokenizer(texts, return_tensors="pt")`).
        labels: Class names, put into each template ("playing drums").
        templates: Prompt templates with `{}` for the label (or callables label -> prompt), or the name of an
            ensemble in `TEMPLATE_ENSEMBLES` ("default", "ensemble").
        batch_size: Prompts per text-tower forward pass.
        device: Where to run the text tower (default: the model's device).

    Returns:
        (num_labels, D) float32: per label, the mean of its L2-normalised prompt embeddings, renormalised.
    """
    labels = list(labels)
    if not labels:
        raise TextInputError("labels is empty; pass at least one class name")
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise TypeError(f"labels[{i}] is a {type(label).__name__}; expected a str")
        check_text(label, f"labels[{i}]")
    templates = checked_templates(templates)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device) if device is not None else _model_device(model)
    prompts = [t.format(label) if isinstance(t, str) else t(label) for label in labels for t in templates]
    embeds = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[start : start + batch_size], return_tensors="pt")
        features = model.get_text_features(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        )
        embeds.append(l2_normalize(features.float()))
    embeds = torch.cat(embeds).reshape(len(labels), len(templates), -1)
    return l2_normalize(embeds.mean(dim=1).float())


def zero_shot_logits(video_embeds: torch.Tensor, classifier: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """(B, num_labels) logits: cosine similarity / temperature, in fp32 (the embeddings are renormalised)."""
    if not temperature or temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if video_embeds.ndim != 2 or classifier.ndim != 2 or video_embeds.shape[1] != classifier.shape[1]:
        raise ValueError(
            f"video embeddings {tuple(video_embeds.shape)} and classifier {tuple(classifier.shape)} must be "
            "(B, D) and (num_labels, D)"
        )
    video = l2_normalize(video_embeds.float())
    return video @ l2_normalize(classifier.float()).to(video.device).T / temperature


@torch.no_grad()
def label_probabilities(
    model: Any,
    videos: torch.Tensor,
    classifier: torch.Tensor,
    temperature: float = 0.01,
    return_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Zero-shot class probabilities of videos.

    Args:
        model: A model with `get_video_features(pixel_values_videos)`; unused when embeddings are given.
        videos: `pixel_values_videos` (B, T, 3, H, W) or video embeddings (B, D).
        classifier: (num_labels, D) from `build_zero_shot_classifier`.
        temperature: Softmax temperature (the original demo's 0.01).
        return_logits: Also return the logits.

    Returns:
        (B, num_labels) probabilities (softmax over the labels, fp32); with `return_logits`, (probs, logits).
    """
    if videos.ndim == 5:
        embeds = model.get_video_features(videos.to(_model_device(model)))
    elif videos.ndim == 2:
        embeds = videos
    else:
        raise ValueError(
            f"videos has shape {tuple(videos.shape)}; expected pixel values (B, T, 3, H, W) or embeddings (B, D)"
        )
    logits = zero_shot_logits(embeds, classifier, temperature)
    probs = logits.softmax(dim=-1)
    return (probs, logits) if return_logits else probs


@torch.no_grad()
def label_probabilities_of_videos(
    model: Any,
    processor: Any,
    videos: Any,
    labels: Sequence[str],
    templates: str | Sequence[Template] = (DEFAULT_TEMPLATE,),
    temperature: float = 0.01,
) -> torch.Tensor:
    """Zero-shot probabilities of raw videos (paths, arrays, ...) over `labels`, in one call.

    Args:
        model: A `VideoPrismClipModel`.
        processor: A `VideoPrismProcessor` (with a tokenizer).
        videos: A video or a batch, in any form the video processor accepts.
        labels: Class names.
        templates: Prompt templates or an ensemble name (see `build_zero_shot_classifier`).
        temperature: Softmax temperature.

    Returns:
        (B, num_labels) probabilities.
    """
    tokenizer = processor._require_tokenizer() if hasattr(processor, "_require_tokenizer") else processor.tokenizer
    classifier = build_zero_shot_classifier(model, tokenizer, labels, templates)
    pixels = processor(videos=videos, return_tensors="pt")["pixel_values_videos"]
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        pixels = pixels.to(dtype)
    return label_probabilities(model, pixels, classifier, temperature)
