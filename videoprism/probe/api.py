"""`train_probe`, `evaluate_probe`, `classify_with_probe`: labelled videos in, a trained classifier folder out."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..collection.embedder import resolve_device
from .classifier import (
    Clip,
    build_classifier,
    class_names_of,
    evaluate_logits,
    load_classifier,
    load_encoder,
    predict_clips,
    probabilities,
    save_classifier,
)
from .data import LabelledSet, UnknownLabelError, load_labelled_set
from .features import extract_features
from .train import ProbeResult, ProbeSettings, ProbeSettingsError, fit_head

DEFAULT_CACHE = "tokens"
FEATURE_CACHE_DIR = "feature-cache"


@dataclass
class ProbeRun:
    """What `train_probe` produced.

    Attributes:
        out: The classifier folder.
        metrics: The content of its `metrics.json`.
        result: The training result (head, history, best epoch).
    """

    out: str
    metrics: dict[str, Any]
    result: ProbeResult


def _as_set(
    data: str | os.PathLike | LabelledSet, class_names: list[str] | None = None, quiet: bool = True
) -> LabelledSet:
    """The labelled set `data` (read when a path; `quiet`: without listing skipped videos on stderr), with the target
    columns of `class_names` when given."""
    if not isinstance(data, LabelledSet):
        return load_labelled_set(data, class_names=class_names, quiet=quiet)
    if class_names is None:
        return data
    unknown = sorted(set(data.class_names) - set(class_names))
    if unknown:
        raise UnknownLabelError(
            f"{data.source or 'the set'} has classes the classifier does not know: {unknown[:8]}; its classes are "
            f"{class_names[:8]}{' ...' if len(class_names) > 8 else ''}"
        )
    return dataclasses.replace(data, class_names=list(class_names))


def clips_of(data: LabelledSet) -> list[Clip]:
    return [Clip(item.path, item.start, item.end) for item in data.items]


def train_probe(
    data: str | os.PathLike | LabelledSet,
    out: str | os.PathLike,
    model: str | os.PathLike,
    *,
    val: str | os.PathLike | LabelledSet | None = None,
    val_split: float = 0.2,
    shots: int | None = None,
    cache: str = DEFAULT_CACHE,
    cache_dir: str | os.PathLike | None = None,
    unfreeze: int = 0,
    grad_accum: int = 1,
    num_frames: int | None = None,
    workers: int | None = None,
    feature_batch_size: int = 8,
    dtype: str | torch.dtype | None = None,
    evaluate_saved: bool = True,
    **settings: Any,
) -> ProbeRun:
    """Trains a classifier on a labelled video set and writes it as a `VideoPrismForVideoClassification` folder.

    The frozen encoder's features are extracted once into ``cache_dir`` (reused by later runs), a head is trained on
    them (`ProbeSettings`), and the best epoch's head is saved with the encoder's weights, the source's video
    processor settings, ``metrics.json`` and ``confusion_matrix.png``. The saved model is then run on the validation
    videos (full token grid, from pixels) and its accuracy recorded beside the accuracy on the cache.

    Args:
        data: A labelled set or where to read one (class-per-folder tree, CSV or JSONL).
        out: The classifier folder (holds the epoch checkpoint a re-run resumes from).
        model: The encoder: preset name, hub repo id, local folder, ``.npz`` or ``.safetensors``.
        val: A separate validation set; default: ``val_split`` of ``data``, stratified, seeded by ``seed``.
        val_split: Share of ``data`` held out for validation when ``val`` is not given.
        shots: Train on this many clips per class (drawn with ``seed``).
        cache: Feature cache kind: "tokens", "pooled2", "pooled4" (see docs/probe.md).
        cache_dir: Feature cache folder (default: ``out/feature-cache``).
        unfreeze: Also train the encoder's last N layers (temporal first); decodes the videos every epoch.
        grad_accum: Steps accumulated per optimiser update (with ``unfreeze``).
        num_frames: Frames per clip (default: the model's).
        workers: Decoding processes for feature extraction.
        feature_batch_size: Clips per encoder forward pass.
        dtype: Encoder weights dtype for feature extraction.
        evaluate_saved: Run the saved model on the validation videos.
        settings: `ProbeSettings` fields (head, epochs, lr, batch_size, ...).

    Raises:
        LabelledSetError: A bad data set (see `videoprism.probe.data`).
        ProbeSettingsError: Invalid settings.
        ProbeResumeError: ``out`` holds the checkpoint of another run.
    """
    settings_obj = ProbeSettings(**settings)
    out = os.fspath(out)
    train_set = _as_set(data, quiet=not settings_obj.progress)
    if val is not None:
        val_set = _as_set(val, train_set.class_names, quiet=not settings_obj.progress)
    else:
        train_set, val_set = train_set.split(val_split, seed=settings_obj.seed)
    if shots is not None:
        train_set = train_set.sample_shots(shots, seed=settings_obj.seed)
    if not isinstance(unfreeze, int) or isinstance(unfreeze, bool) or unfreeze < 0:
        raise ProbeSettingsError(f"unfreeze={unfreeze!r}; give a non-negative number of encoder layers")
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()

    if unfreeze:
        from .finetune import fit_encoder

        result, encoder = fit_encoder(
            train_set, val_set, model, settings_obj, unfreeze, grad_accum, out, num_frames=num_frames
        )
        cache_info: dict[str, Any] = {"cache": None}
    else:
        cache_root = os.path.join(out, FEATURE_CACHE_DIR) if cache_dir is None else os.fspath(cache_dir)
        common = dict(
            cache=cache,
            num_frames=num_frames,
            batch_size=feature_batch_size,
            workers=workers,
            device=settings_obj.device,
            dtype=dtype,
            progress="auto" if settings_obj.progress else False,
        )
        train_features = extract_features(train_set, model, cache_root, **common)
        val_features = extract_features(val_set, model, cache_root, **common)
        encoder = load_encoder(model)
        result = fit_head(train_features, val_features, encoder.config, settings_obj, checkpoint_dir=out)
        val_set = dataclasses.replace(val_set, items=list(val_features.items))  # the clips that decoded
        cache_info = {
            "cache": cache,
            "cache_dir": cache_root,
            "decoded_clips": train_features.decoded_clips + val_features.decoded_clips,
            "failures": [list(f) for f in train_features.failures + val_features.failures],
        }
    classifier = build_classifier(encoder, result.head, train_set.class_names, train_set.multi_label)
    metrics: dict[str, Any] = {
        "model": os.fspath(model),
        "classes": list(train_set.class_names),
        "multi_label": train_set.multi_label,
        "n_train": len(train_set),
        "n_val": len(val_set),
        "settings": {
            **dataclasses.asdict(settings_obj),
            "shots": shots,
            "unfreeze": unfreeze,
            "grad_accum": grad_accum,
            **cache_info,
        },
        "best_epoch": result.best_epoch,
        "history": result.history,
        "val_features": result.val_metrics,
        "train_seconds": time.perf_counter() - started,
    }
    confusion = None
    processor = _processor_of(model, num_frames)
    if evaluate_saved:
        classifier.to(resolve_device(settings_obj.device))
        logits, _ = predict_clips(classifier, processor, clips_of(val_set))
        saved, confusion = evaluate_logits(logits, val_set.targets(), val_set.multi_label)
        metrics["val"] = saved
        classifier.cpu()
    save_classifier(classifier, out, processor, metrics, confusion)
    return ProbeRun(out, metrics, result)


def _processor_of(model: str | os.PathLike, num_frames: int | None):
    from ..video_processing import VideoPrismVideoProcessor

    overrides = {} if num_frames is None else {"num_frames": num_frames}
    return VideoPrismVideoProcessor.from_pretrained(model, **overrides)


def evaluate_probe(
    model: str | os.PathLike,
    data: str | os.PathLike | LabelledSet,
    *,
    batch_size: int = 8,
    device: str = "auto",
    quiet: bool = True,
) -> dict[str, Any]:
    """Top-1, top-5 and mean per-class accuracy (and mAP for multi-label) of a trained classifier on labelled videos.

    `quiet` False lists the set's missing videos on stderr.

    Returns:
        ``{"top1", "top5", "mean_class_accuracy", "n"}`` (+ ``"map"``) over the clips that decoded, plus
        ``"failures"`` (``[[path, error], ...]``) when some did not.
    """
    classifier, processor = load_classifier(model, device=resolve_device(device))
    names = class_names_of(classifier.config)
    labelled = _as_set(data, names, quiet=quiet)
    logits, failures = predict_clips(classifier, processor, clips_of(labelled), batch_size)
    multi = classifier.config.problem_type == "multi_label_classification" or labelled.multi_label
    metrics, _ = evaluate_logits(logits, labelled.targets(), multi)
    if failures:
        metrics["failures"] = [[labelled.items[i].path, message] for i, message in sorted(failures.items())]
    return metrics


def classify_with_probe(
    videos: Iterable[str], model: str | os.PathLike, *, batch_size: int = 8, device: str = "auto"
) -> list[dict[str, Any]]:
    """Classifies video files with a trained classifier folder.

    Returns:
        Per video, in input order: ``{"video", "labels": [{"label", "probability"}, ...]}`` (most probable first;
        sigmoid probabilities for a multi-label classifier), or ``{"video", "labels": [], "error"}``.
    """
    classifier, processor = load_classifier(model, device=resolve_device(device))
    names = class_names_of(classifier.config)
    paths = list(videos)
    logits, failures = predict_clips(classifier, processor, [Clip(p) for p in paths], batch_size)
    probs = probabilities(logits, classifier.config.problem_type == "multi_label_classification")
    results = []
    for i, path in enumerate(paths):
        if i in failures:
            results.append({"video": path, "labels": [], "error": failures[i]})
            continue
        order = np.argsort(-probs[i], kind="stable")
        results.append(
            {"video": path, "labels": [{"label": names[j], "probability": float(probs[i, j])} for j in order]}
        )
    return results
