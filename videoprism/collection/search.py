"""Query an embedding store with a text or with another video: `search_text`, `search_video`.

`search_text` embeds a text with the store's model (the model id the store records, unless another is given) and
returns the most similar stored clips; `search_video` does the same with a query video, embedded exactly as
`embed_videos` embeds a clip.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import EmbedSettingsError
from ..store import SearchHit, StoreReader, open_store
from ..video_io import read_video
from .clips import clip_pixels
from .embedder import DEFAULT_MODEL, VideoEmbedder, load_video_embedder, model_id_for

__all__ = ["embed_text", "search_text", "search_video"]


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
    from ..tokenization import VideoPrismTokenizer

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
    source = _query_model(reader, model)
    frames = num_frames or _store_num_frames(reader)
    embedder, processor = load_video_embedder(source, device=device, dtype=dtype, num_frames=frames)
    decoded = read_video(os.fspath(video), num_frames=embedder.num_frames)
    embeds, _ = embedder(clip_pixels(processor, decoded)[None])
    return reader.search(embeds[0], k, kind)
