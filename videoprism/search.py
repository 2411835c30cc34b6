"""Query videos with text or with another video: search an embedding store, and zero-shot classify video files.

`search_text` embeds a text with the store's model (the model id the store records, unless another is given) and
returns the most similar stored clips; `search_video` does the same with a query video, embedded exactly as
`embed_videos` embeds a clip. `classify_video_files` scores video files against class names with prompt templates
(see `videoprism.zero_shot`), decoding them in worker processes like `embed_videos`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .embedding import (
    DEFAULT_MODEL,
    ClipSettings,
    DecodePool,
    EmbedSettingsError,
    NoVideosFoundError,
    Progress,
    VideoEmbedder,
    default_workers,
    expand_inputs,
    load_video_embedder,
    model_id_for,
)
from .store import SearchHit, StoreReader, open_store

__all__ = ["Classification", "classify_video_files", "search_text", "search_video"]


def _query_model(reader: StoreReader, model: str | os.PathLike[str] | None) -> str:
    """The model to embed queries with: ``model``, else the store's; warns when they differ."""
    if model is None:
        return reader.model_id
    if model_id_for(model) != reader.model_id:
        import warnings

        warnings.warn(
            f"store {reader.path} holds embeddings of {reader.model_id!r}; querying it with {os.fspath(model)!r} "
            "compares embeddings of two models, which is only meaningful if they share an embedding space",
            stacklevel=3,
        )
    return os.fspath(model)


def _store_num_frames(reader: StoreReader) -> int | None:
    """Frames per clip of the store's rows (so a query video is sampled like them)."""
    import pyarrow.compute as pc

    meta = reader.metadata
    clips = meta.filter(pc.not_equal(meta["kind"], "video"))
    if not clips.num_rows:
        return None
    return int(pc.list_value_length(clips["frame_indices"][0:1])[0].as_py())


def embed_text(embedder: VideoEmbedder, source: str, texts: Sequence[str]) -> np.ndarray:
    """(len(texts), D) text embeddings of an LvT model loaded from ``source`` (whose tokenizer is used)."""
    from .tokenization import VideoPrismTokenizer

    if not embedder.has_text:
        raise EmbedSettingsError(
            f"model {source} embeds videos only (no text tower); search it with a query video (--video) or use a "
            f"video-text checkpoint such as {DEFAULT_MODEL}"
        )
    tokenizer = VideoPrismTokenizer.from_pretrained(source)
    tokens = tokenizer(list(texts), return_tensors="pt")
    device = next(embedder.model.parameters()).device
    with torch.inference_mode():
        features = embedder.model.get_text_features(
            tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        )
    return features.float().cpu().numpy()


def search_text(
    store: str | os.PathLike[str],
    query: str,
    k: int = 10,
    *,
    model: str | os.PathLike[str] | None = None,
    kind: str | Sequence[str] | None = None,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
) -> list[SearchHit]:
    """The ``k`` stored clips most similar (cosine) to a text.

    Args:
        store: Store folder written by `embed_videos`.
        query: The text, e.g. "a dog catching a frisbee".
        k: Number of hits.
        model: Model to embed the text with (a video-text checkpoint); default: the model the store records.
        kind: Only rows of this kind or these kinds ("clip", "window", "video").
        device: "auto" (CUDA when available), "cpu", ...
        dtype: Weights dtype; None keeps float32.

    Returns:
        Hits ``SearchHit(score, id, metadata)``, best first; ``metadata`` holds ``path``, ``start``, ``end``, ...

    Raises:
        videoprism.store.StoreNotFoundError: No store there.
        videoprism.store.EmptyStoreError: The store holds no embeddings.
        EmbedSettingsError: The model has no text tower.
        videoprism.tokenization.TokenizerNotFoundError: The model's folder or repo has no tokenizer.
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query must be a non-empty text, got {query!r}")
    reader = open_store(store)
    source = _query_model(reader, model)
    embedder, _ = load_video_embedder(source, device=device, dtype=dtype)
    return reader.search(embed_text(embedder, source, [query])[0], k, kind)


def search_video(
    store: str | os.PathLike[str],
    video: str | os.PathLike[str],
    k: int = 10,
    *,
    model: str | os.PathLike[str] | None = None,
    kind: str | Sequence[str] | None = None,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    num_frames: int | None = None,
) -> list[SearchHit]:
    """The ``k`` stored clips most similar (cosine) to a query video, embedded as one clip (the whole video).

    Args:
        store: Store folder written by `embed_videos`.
        video: Query video file or URL.
        k: Number of hits.
        model: Model to embed the video with; default: the model the store records.
        kind: Only rows of this kind or these kinds ("clip", "window", "video").
        device: "auto" (CUDA when available), "cpu", ...
        dtype: Weights dtype; None keeps float32.
        num_frames: Frames sampled from the query; default: as many as the store's clips have.

    Returns:
        Hits ``SearchHit(score, id, metadata)``, best first.

    Raises:
        videoprism.video_io.VideoDecodeError: The query video cannot be decoded.
    """
    from .video_io import read_video

    reader = open_store(store)
    source = _query_model(reader, model)
    frames = num_frames or _store_num_frames(reader)
    embedder, processor = load_video_embedder(source, device=device, dtype=dtype, num_frames=frames)
    decoded = read_video(os.fspath(video), num_frames=embedder.num_frames)
    pixels = processor(decoded, return_tensors="pt", num_frames=embedder.num_frames)["pixel_values_videos"]
    embeds, _ = embedder(pixels)
    return reader.search(embeds[0], k, kind)


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
    dtype: str | torch.dtype | None = None,
    batch_size: int = 8,
    workers: int | None = None,
    num_frames: int | None = None,
    temperature: float = 0.01,
    progress: bool | str = False,
) -> list[Classification]:
    """Zero-shot classifies video files over ``labels``: softmax of cosine similarity / temperature.

    Each label's embedding is the renormalised mean of its prompt embeddings (one per template); each video is one
    clip sampled over the whole video. Videos that fail to decode get ``error`` set and no labels.

    Args:
        videos: Files, folders, globs, URLs or ``@list.txt`` files (see `videoprism.embedding.expand_inputs`).
        labels: Class names ("playing drums", ...).
        model: A video-text (LvT) checkpoint: preset name, hub repo id, local folder, ``.npz`` or ``.safetensors``.
        templates: "default" (the original demo's "a video of {}."), "ensemble" (the Kinetics prompt ensemble),
            another `TEMPLATE_ENSEMBLES` name, a template with ``{}`` or a sequence of templates.
        device: "auto" (CUDA when available), "cpu", ...
        dtype: Weights dtype; None keeps float32.
        batch_size: Videos per forward pass.
        workers: Decoding processes (0: a thread of this process; None: `default_workers`).
        num_frames: Frames per clip; default: the model's video processor's.
        temperature: Softmax temperature (the original demo's 0.01).
        progress: As in `embed_videos`.

    Returns:
        One `Classification` per video, in input order.

    Raises:
        NoVideosFoundError: The inputs hold no video.
        EmbedSettingsError: The model has no text tower.
        ValueError: Empty or duplicate labels, or a template without ``{}``.
    """
    from .tokenization import VideoPrismTokenizer
    from .zero_shot import build_zero_shot_classifier, zero_shot_logits

    labels = [str(label).strip() for label in labels]
    if not labels or not all(labels):
        raise ValueError(f"labels must be non-empty class names, got {labels!r}")
    if len(set(labels)) != len(labels):
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        raise ValueError(f"labels {dupes} are given more than once; each class name must be unique")
    paths = expand_inputs(videos)
    if not paths:
        raise NoVideosFoundError(f"no video files found in {videos!r}")
    source = os.fspath(model)
    embedder, processor = load_video_embedder(source, device=device, dtype=dtype, num_frames=num_frames)
    if not embedder.has_text:
        raise EmbedSettingsError(
            f"model {source} embeds videos only (no text tower); zero-shot classification needs a video-text "
            f"checkpoint such as {DEFAULT_MODEL}"
        )
    tokenizer = VideoPrismTokenizer.from_pretrained(source)
    classifier = build_zero_shot_classifier(embedder.model, tokenizer, labels, templates)

    results = [Classification(path) for path in paths]
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        embeds, _ = embedder(torch.from_numpy(np.stack([p for _, p in pending])))
        probs = zero_shot_logits(torch.from_numpy(embeds), classifier.cpu(), temperature).softmax(dim=-1).numpy()
        for (idx, _), row in zip(pending, probs, strict=True):
            order = np.argsort(-row, kind="stable")
            results[idx].labels = [(labels[j], float(row[j])) for j in order]
        pending.clear()

    settings = ClipSettings(processor.to_dict(), embedder.num_frames, None, None)
    bar = Progress(len(paths), progress, 10.0, name="classify")
    done = failed = 0
    try:
        num_workers = default_workers(len(paths)) if workers is None else workers
        with DecodePool(paths, settings, num_workers, 2 * batch_size) as pool:
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
