"""Query an embedding store with a text or with another video: `search_text`, `search_video`.

`search_text` embeds a text with the store's model (the model id the store records, unless another is given) and
returns the most similar stored clips; `search_video` does the same with a query video, embedded exactly as
`embed_videos` embeds a clip.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._sources import ModelSource, resolve_source
from ..auto import load_model
from ..errors import EmbedSettingsError, EmptyStoreError, SourceNotFoundError, StoreMismatchError
from ..store import SearchHit, StoreReader, open_store
from ..store.format import KINDS
from ..video_io import read_video
from .clips import clip_pixels
from .embedder import DEFAULT_MODEL, load_video_embedder, resolve_device, resolve_dtype

__all__ = ["embed_text", "model_width", "search_text", "search_video", "store_num_frames"]


def model_width(source: ModelSource) -> int | None:
    """The embedding width of a model source, read from its config (or a safetensors header) without loading its
    weights; None when that cannot be told without downloading or loading them."""
    import json

    from ..configuration import PRESETS, VideoPrismConfig, load_config_dict

    text = source.path or source.repo_id
    path = os.path.expanduser(text)
    config = None
    try:
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
            with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
                config = load_config_dict(json.load(f))
        elif os.path.isfile(path) and os.path.isfile(os.path.join(os.path.dirname(path), "config.json")):
            with open(os.path.join(os.path.dirname(path), "config.json"), encoding="utf-8") as f:
                config = load_config_dict(json.load(f))
        elif os.path.isfile(path) and path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, "pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    if key.endswith("patch_embeddings.projection.bias"):
                        return int(f.get_slice(key).get_shape()[0])
            return None
        elif (preset := next((p for p in PRESETS.values() if text in (p.name, p.repo_id)), None)) is not None:
            config = preset.config()
    except (OSError, ValueError, TypeError):
        return None  # unreadable here: loading the model reports it
    if config is None:
        return None
    return int((config.vision_config if isinstance(config, VideoPrismConfig) else config).hidden_size)


def _query_model(reader: StoreReader, model: str | os.PathLike[str] | ModelSource | None) -> ModelSource:
    """The model to embed queries with, resolved once: ``model``, else the store's; warns when they differ. Refuses,
    before any weights are loaded, a model whose embedding width differs from the store's, and a store model that is
    gone."""
    if model is None:
        recorded = reader.model_id
        if os.path.isabs(recorded) and not os.path.exists(recorded):
            raise SourceNotFoundError(
                f"store {reader.path} was embedded with the model at {recorded}, which no longer exists (moved or "
                "deleted?); pass its new location with --model (model= in Python)"
            )
        source = resolve_source(recorded)
        _check_width(reader, source)
        return source
    recorded_gone = os.path.isabs(reader.model_id) and not os.path.exists(reader.model_id)  # moved: no warning
    source = resolve_source(model)
    if source.model_id != reader.model_id and not recorded_gone:
        import warnings

        warnings.warn(
            f"store {reader.path} holds embeddings of {reader.model_id!r}; querying it with {os.fspath(model)!r} "
            "compares embeddings of two models, which is only meaningful if they share an embedding space",
            stacklevel=3,
        )
    _check_width(reader, source)
    return source


def _check_kind(reader: StoreReader, kind: str | Sequence[str] | None) -> None:
    """Refuses a ``kind`` filter that no row of the store matches (the search would silently find nothing)."""
    import pyarrow.compute as pc

    if kind is None or not len(reader):
        return
    kinds = [kind] if isinstance(kind, str) else list(kind)
    if not set(kinds) <= set(KINDS):
        return  # the search names the unknown kind
    counts = {c["values"]: c["counts"] for c in pc.value_counts(reader.metadata["kind"]).to_pylist()}
    if not any(counts.get(k) for k in kinds):
        holds = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
        hint = " (window and video rows come from embedding with --window)" if {"window", "video"} & set(kinds) else ""
        raise EmptyStoreError(f"store {reader.path} has no {' or '.join(kinds)} rows; it holds {holds} rows{hint}")


def _check_width(reader: StoreReader, model: ModelSource) -> None:
    width = model_width(model)
    if width is not None and width != reader.dim:
        raise StoreMismatchError(
            f"store {reader.path} holds {reader.dim}-d embeddings, but model {model} gives {width}-d ones; "
            f"query it with the model it was embedded with ({reader.model_id})"
        )


def store_num_frames(reader: StoreReader) -> int | None:
    """Frames per clip of the store's rows (so that a query video is sampled like them); None for an empty store."""
    import pyarrow.compute as pc

    meta = reader.metadata
    clips = meta.filter(pc.not_equal(meta["kind"], "video"))
    if not clips.num_rows:
        return None
    return int(pc.list_value_length(clips["frame_indices"][0:1])[0].as_py())


def embed_text(
    model: torch.nn.Module, source: str | ModelSource, texts: Sequence[str], tokenizer: Any = None
) -> np.ndarray:
    """(len(texts), D) text embeddings of an LvT model loaded from ``source`` (whose tokenizer is used, unless one
    already loaded is given)."""
    from ..tokenization import VideoPrismTokenizer

    if not hasattr(model, "get_text_features"):
        raise EmbedSettingsError(
            f"model {source} embeds videos only (no text tower); search it with a query video (--video) or use a "
            f"video-text checkpoint such as {DEFAULT_MODEL}"
        )
    from ..zero_shot import check_text

    for i, text in enumerate(texts):
        check_text(text, f"query {i}" if len(texts) > 1 else "query")
    if tokenizer is None:
        tokenizer = VideoPrismTokenizer.from_pretrained(source)
    tokens = tokenizer(list(texts), return_tensors="pt")
    device = next(model.parameters()).device
    with torch.inference_mode():
        features = model.get_text_features(
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
    dtype: str | torch.dtype | None = "auto",
) -> list[SearchHit]:
    """The ``k`` stored clips most similar (cosine) to a text.

    Args:
        store: Store folder written by `embed_videos`.
        query: The text, e.g. "a dog catching a frisbee".
        k: Number of hits.
        model: Model to embed the text with (a video-text checkpoint); default: the model the store records.
        kind: Only rows of this kind or these kinds ("clip", "window", "video").
        device: "auto" (CUDA when available), "cpu", ...
        dtype: Weights dtype: "auto" (bfloat16 where the device computes it natively, else float32), a `DTYPES`
            name or a torch dtype; None keeps float32.

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
    _check_kind(reader, kind)
    source = _query_model(reader, model)
    text_model = load_model(source, device=resolve_device(device), dtype=resolve_dtype(dtype))
    return reader.search(embed_text(text_model, source, [query])[0], k, kind)


def search_video(
    store: str | os.PathLike[str],
    video: str | os.PathLike[str],
    k: int = 10,
    *,
    model: str | os.PathLike[str] | None = None,
    kind: str | Sequence[str] | None = None,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
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
        dtype: Weights dtype: "auto" (bfloat16 where the device computes it natively, else float32), a `DTYPES`
            name or a torch dtype; None keeps float32.
        num_frames: Frames sampled from the query; default: as many as the store's clips have.

    Returns:
        Hits ``SearchHit(score, id, metadata)``, best first.

    Raises:
        videoprism.errors.VideoDecodeError: The query video cannot be decoded.
    """
    reader = open_store(store)
    _check_kind(reader, kind)
    source = _query_model(reader, model)
    frames = num_frames or store_num_frames(reader)
    embedder, processor = load_video_embedder(source, device=device, dtype=dtype, num_frames=frames)
    decoded = read_video(os.fspath(video), num_frames=embedder.num_frames)
    embeds, _ = embedder(clip_pixels(processor, decoded)[None])
    return reader.search(embeds[0], k, kind)
