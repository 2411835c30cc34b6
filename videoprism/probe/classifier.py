"""The trained probe as a `VideoPrismForVideoClassification` folder: writing it, and running it on videos."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..configuration import VideoPrismVisionConfig
from ..errors import NotAClassifierError
from ..modeling import VideoPrismForVideoClassification, VideoPrismVisionModel
from ..video_processing import VideoPrismVideoProcessor
from .heads import classifier_head_state
from .metrics import classification_metrics, confusion_matrix
from .report import draw_confusion_matrix

METRICS_NAME = "metrics.json"
CONFUSION_NAME = "confusion_matrix.png"
MULTI_LABEL = "multi_label_classification"
SINGLE_LABEL = "single_label_classification"


@dataclass
class Clip:
    """One clip to classify: a video file and an optional window in seconds."""

    path: str
    start: float | None = None
    end: float | None = None


def load_encoder(source: str | os.PathLike, dtype: torch.dtype | None = None) -> VideoPrismVisionModel:
    """The vision encoder of any checkpoint (LvT or video-only, folder, hub repo, preset, file)."""
    return VideoPrismVisionModel.from_pretrained(source, dtype=dtype)


def build_classifier(
    encoder: VideoPrismVisionModel, head: nn.Module, class_names: Sequence[str], multi_label: bool
) -> VideoPrismForVideoClassification:
    """A `VideoPrismForVideoClassification` of `encoder`'s weights and the trained `head` (attentive or linear)."""
    config = encoder.config.copy(
        num_labels=len(class_names),
        id2label=dict(enumerate(class_names)),
        label2id=None,
        problem_type=MULTI_LABEL if multi_label else SINGLE_LABEL,
    )
    state = {f"vision_model.{k}": v.detach().float() for k, v in encoder.state_dict().items()}
    state.update(classifier_head_state(head, config))
    with torch.device("meta"):
        model = VideoPrismForVideoClassification(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def save_classifier(
    model: VideoPrismForVideoClassification,
    out: str | os.PathLike,
    processor: VideoPrismVideoProcessor,
    metrics: dict[str, Any],
    confusion: np.ndarray | None = None,
) -> None:
    """Writes the transformers-format folder: config.json, model.safetensors, the video processor settings the
    features were computed with, `metrics.json` and (given `confusion`) the confusion-matrix PNG."""
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    with open(os.path.join(out, METRICS_NAME), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    if confusion is not None:
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        draw_confusion_matrix(confusion, names, os.path.join(out, CONFUSION_NAME))


def load_classifier(
    folder: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[VideoPrismForVideoClassification, VideoPrismVideoProcessor]:
    """A trained classifier folder's model and video processor.

    Raises:
        NotAClassifierError: The folder's config has no labels (not written by `videoprism probe train`).
    """
    config_path = os.path.join(os.fspath(folder), "config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            data = json.load(f)
        if not data.get("id2label") or "VideoPrismForVideoClassification" not in (data.get("architectures") or []):
            raise NotAClassifierError(
                f"{folder!s} holds no trained classifier (config.json has no id2label); train one with "
                "`videoprism probe train`, or give --labels for zero-shot classification"
            )
    model = VideoPrismForVideoClassification.from_pretrained(folder, dtype=dtype, device=device)
    return model, VideoPrismVideoProcessor.from_pretrained(folder)


def class_names_of(config: VideoPrismVisionConfig) -> list[str]:
    return [config.id2label[i] for i in range(config.num_labels)]


def decoded_batches(
    clips: Sequence[Clip], processor: VideoPrismVideoProcessor, batch_size: int, workers: int = 2
) -> Iterator[tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]]:
    """Yields (clip indices, pixels (B, T, 3, H, W), failures [(index, message)]) in clip order; decoding runs in
    `workers` threads ahead of the caller."""
    from ..video_io import VideoDecodeError

    def decode(clip: Clip) -> torch.Tensor | str:
        try:
            return processor(clip.path, return_tensors="pt", start_time=clip.start, end_time=clip.end)[
                "pixel_values_videos"
            ][0]
        except (VideoDecodeError, ValueError, OSError) as err:
            return f"{clip.path}: {err}"

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(clips), batch_size):
            indices = list(range(start, min(start + batch_size, len(clips))))
            decoded = list(pool.map(decode, [clips[i] for i in indices]))
            ok = [(i, d) for i, d in zip(indices, decoded, strict=True) if isinstance(d, torch.Tensor)]
            failed = [(i, d) for i, d in zip(indices, decoded, strict=True) if isinstance(d, str)]
            pixels = torch.stack([d for _, d in ok]) if ok else None
            yield [i for i, _ in ok], pixels, failed


@torch.no_grad()
def predict_clips(
    model: VideoPrismForVideoClassification,
    processor: VideoPrismVideoProcessor,
    clips: Sequence[Clip],
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """(n, C) float32 logits of the clips (NaN rows for clips that failed) and {clip index: error message}."""
    device = model.device
    logits = np.full((len(clips), model.config.num_labels), np.nan, dtype=np.float32)
    failures: dict[int, str] = {}
    for indices, pixels, failed in decoded_batches(clips, processor, batch_size):
        failures.update(failed)
        if pixels is not None:
            out = model(pixels.to(device=device, dtype=model.dtype)).logits
            logits[indices] = out.float().cpu().numpy()
        if progress is not None:
            progress(len(indices) + len(failed))
    return logits, failures


def probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Softmax over the classes (sigmoid per class for a multi-label classifier)."""
    x = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    return (torch.sigmoid(x) if multi_label else torch.softmax(x, dim=-1)).numpy()


def evaluate_logits(logits: np.ndarray, targets: np.ndarray, multi_label: bool) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics and confusion matrix of the clips whose logits are finite."""
    ok = np.isfinite(logits).all(axis=1)
    if not ok.any():
        raise ValueError("no clip could be classified (every video failed to decode)")
    return classification_metrics(logits[ok], targets[ok], multi_label), confusion_matrix(logits[ok], targets[ok])
