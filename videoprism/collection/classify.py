"""Zero-shot classification of video files: `classify_video_files` scores each video against class names.

The labels are embedded with prompt templates (see `videoprism.zero_shot`); the videos are decoded in worker
processes as `embed_videos` decodes them (`videoprism.collection.decode_pool`), one clip over the whole video each.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._sources import resolve_source
from ..errors import EmbedSettingsError, NoVideosFoundError
from ..video_io import URL_TIMEOUT_S
from .clips import MAX_CLIP_BYTES, ClipSettings
from .decode_pool import model_decode_pool
from .embedder import DEFAULT_MODEL, load_processor, load_video_embedder, require_finite, resolve_device
from .inputs import expand_inputs
from .progress import Progress

__all__ = ["Classification", "classify_video_files"]


@dataclass
class Classification:
    """Zero-shot result of one video: every label with its probability, most probable first (or the error)."""

    video: str
    labels: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"video": path, "labels": [{"label", "probability"}, ...]}`` (plus ``"error"`` for a failed video)."""
        out: dict[str, Any] = {
            "video": self.video,
            "labels": [{"label": label, "probability": p} for label, p in self.labels],
        }
        if self.error is not None:
            out["error"] = self.error
        return out


def classify_video_files(
    videos: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    labels: Sequence[str],
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    templates: str | Sequence[str] = "default",
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    batch_size: int = 8,
    workers: int | None = None,
    num_frames: int | None = None,
    temperature: float = 0.01,
    progress: bool | str = False,
    network_timeout: float = URL_TIMEOUT_S,
    max_clip_bytes: int = MAX_CLIP_BYTES,
) -> list[Classification]:
    """Zero-shot classifies video files over ``labels``: softmax of cosine similarity / temperature.

    Each label's embedding is the renormalised mean of its prompt embeddings (one per template); each video is one
    clip sampled over the whole video. Videos that fail to decode get ``error`` set and no labels.

    Args:
        videos: Files, folders, globs, URLs or ``@list.txt`` files (see `videoprism.collection.expand_inputs`).
        labels: Class names ("playing drums", ...).
        model: A video-text (LvT) checkpoint: preset name, hub repo id, local folder, ``.npz`` or ``.safetensors``.
        templates: "default" (the original demo's "a video of {}."), "ensemble" (the Kinetics prompt ensemble),
            another `TEMPLATE_ENSEMBLES` name, a template with ``{}`` or a sequence of templates.
        device: "auto" (CUDA when available), "cpu", ...
        dtype: Weights dtype: "auto" (bfloat16 where the device computes it natively, else float32), a `DTYPES`
            name or a torch dtype; None keeps float32.
        batch_size: Videos per forward pass.
        workers: Decoding processes (0: a thread of this process; None: `default_workers`).
        num_frames: Frames per clip; default: the model's video processor's.
        temperature: Softmax temperature (the original demo's 0.01).
        progress: As in `embed_videos`.
        network_timeout: Seconds a URL input may take to connect and to send each piece of data (see `read_video`).
        max_clip_bytes: Refuse settings (``num_frames`` x frame size) whose clips take more bytes than this.

    Returns:
        One `Classification` per video, in input order.

    Raises:
        NoVideosFoundError: The inputs hold no video.
        EmbedSettingsError: The model has no text tower.
        ValueError: Empty or duplicate labels, or a template without ``{}``.
    """
    from ..tokenization import VideoPrismTokenizer
    from ..zero_shot import build_zero_shot_classifier, zero_shot_logits

    labels = [str(label).strip() for label in labels]
    if not labels or not all(labels):
        raise ValueError(f"labels must be non-empty class names, got {labels!r}")
    if len(set(labels)) != len(labels):
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        raise ValueError(f"labels {dupes} are given more than once; each class name must be unique")
    paths = expand_inputs(videos)
    if not paths:
        raise NoVideosFoundError(f"no video files found in {videos!r}")
    source = resolve_source(model)  # once, for the model, its processor and its tokenizer
    processor = load_processor(source, num_frames)
    settings = ClipSettings.of(processor, network_timeout=network_timeout, max_clip_bytes=max_clip_bytes)
    results = [Classification(path) for path in paths]
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        pixels = torch.from_numpy(np.stack([p for _, p in pending]))
        with pool.paused():  # see `decode_between_batches`
            embeds, _ = embedder(pixels)
        require_finite(embeds, source, "video embeddings")
        probs = zero_shot_logits(torch.from_numpy(embeds), classifier.cpu(), temperature).softmax(dim=-1).numpy()
        for (idx, _), row in zip(pending, probs, strict=True):
            order = np.argsort(-row, kind="stable")
            results[idx].labels = [(labels[j], float(row[j])) for j in order]
        pending.clear()

    bar = Progress(len(paths), progress, 10.0, name="classify")
    done = failed = 0
    try:
        # Decoding starts while the model loads and embeds the labels.
        with model_decode_pool(paths, settings, workers, 2 * batch_size, resolve_device(device)).start() as pool:
            embedder, _ = load_video_embedder(source, device=device, dtype=dtype, processor=processor)
            if not embedder.has_text:
                raise EmbedSettingsError(
                    f"model {source} embeds videos only (no text tower); zero-shot classification needs a video-text "
                    f"checkpoint such as {DEFAULT_MODEL}"
                )
            tokenizer = VideoPrismTokenizer.from_pretrained(source)
            classifier = build_zero_shot_classifier(embedder.model, tokenizer, labels, templates)
            require_finite(classifier, source, "label embeddings")
            for event in pool.events():
                kind, idx = event[:2]
                if kind == "clip":
                    pending.append((idx, event[3]))
                    if len(pending) >= batch_size:
                        flush()
                elif kind == "fail":
                    results[idx].error = event[2]
                    failed += 1
                if kind in ("done", "fail"):
                    done += 1
                    bar.update(done, done - failed, failed)
            flush()
    finally:
        bar.close()
    return results
