"""The store and the model behind `videoprism serve`: searches, "more like this", video queries and zero-shot labels.

`ServeEngine` is shared by all request threads. The store is opened read-only and re-opened when its manifest or its
list of metadata parts changes (a running `videoprism embed` commits a part per batch, a compaction replaces them),
so new rows appear on the next query; a request keeps the snapshot it started with. The model is loaded on the first
query that needs it (text, uploaded video or labels), once, and its forward passes run one at a time; searching the
store needs no model and runs in parallel. Text query embeddings are cached (least recently used first out).
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._sources import resolve_source
from ..collection.search import embed_text, store_num_frames
from ..collection.thumbnails import thumbnail_key, thumbnail_path
from ..errors import ItemNotFoundError, QueryError
from ..store import MANIFEST_NAME, META_DIR, EmptyStoreError, SearchHit, StoreError, StoreReader, open_store

__all__ = ["ItemNotFoundError", "QueryError", "ServeEngine"]


def _seconds(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


class ServeEngine:
    """Thread-safe search over one store.

    Args:
        store: Store folder written by `videoprism embed`.
        model: Model to embed queries with; default: the one the store records.
        device: "auto" (CUDA when available), "cpu", ...
        dtype: Weights dtype: "auto" (bfloat16 where the device computes it natively, as `videoprism search`),
            a name such as "float32", or None (float32).
        text_cache: Text query embeddings kept (0: none).

    Raises:
        videoprism.store.StoreError: No store there, or it is unreadable.
    """

    def __init__(
        self,
        store: str | os.PathLike[str],
        model: str | os.PathLike[str] | None = None,
        *,
        device: str | None = "auto",
        dtype: str | None = "auto",
        text_cache: int = 1024,
    ) -> None:
        self.path = Path(store)
        self._reader = open_store(self.path)
        self._signature = self._read_signature()
        self.model_source = resolve_source(model if model is not None else self._reader.model_id)
        self.device, self.dtype = device, dtype
        self._reload_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._embedder: Any = None
        self._processor: Any = None
        self._tokenizer: Any = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = int(text_cache)
        self._cache_lock = threading.Lock()

    # ---------------------------------------------------------------------------------------------------------------
    # The store

    def _read_signature(self) -> tuple[Any, ...]:
        """What changes whenever a writer commits: the manifest's stat and the names of the metadata parts (parts are
        written once under unique names, so the listing identifies the store's content)."""
        try:
            st = os.stat(self.path / MANIFEST_NAME)
            parts = sorted(n for n in os.listdir(self.path / META_DIR) if not n.startswith((".", "_")))
        except OSError:
            return ()
        return st.st_mtime_ns, st.st_size, tuple(parts)

    @property
    def reader(self) -> StoreReader:
        """The current snapshot, re-opened first if a writer committed since the last one."""
        signature = self._read_signature()
        if signature == self._signature or not signature:
            return self._reader
        with self._reload_lock:
            if signature != self._signature:
                try:
                    self._reader = open_store(self.path)
                except (StoreError, OSError):  # caught between two files of a compaction: keep the last snapshot
                    return self._reader
                self._signature = signature
        return self._reader

    def stats(self) -> dict[str, Any]:
        """Rows, distinct videos, kinds, failures, model and dimensions of the current snapshot."""
        import pyarrow.compute as pc

        reader = self.reader
        meta = reader.metadata
        kinds = {str(k): int(n) for k, n in zip(*_value_counts(meta["kind"]), strict=True)} if len(reader) else {}
        failed_paths = reader.failures["path"] if reader.failures.num_rows else None
        return {
            "store": str(self.path),
            "rows": len(reader),
            "videos": int(pc.count_distinct(meta["path"]).as_py()) if len(reader) else 0,
            "kinds": kinds,
            "failures": int(pc.count_distinct(failed_paths).as_py()) if failed_paths is not None else 0,
            "model": reader.model_id,
            "query_model": str(self.model_source),
            "dimensions": reader.dim,
            "model_loaded": self._embedder is not None,
        }

    def item(self, item_id: int, reader: StoreReader | None = None) -> dict[str, Any]:
        """Metadata of the live row with ``item_id``.

        Raises:
            ItemNotFoundError: No such row.
        """
        reader = reader or self.reader
        i = int(np.searchsorted(reader.ids, item_id))
        if i >= len(reader.ids) or reader.ids[i] != item_id:
            raise ItemNotFoundError(f"no item {item_id} in store {self.path}")
        return reader.row(i)

    def thumbnail_file(self, meta: dict[str, Any]) -> Path | None:
        """The row's thumbnail file, or None when it has none."""
        key = thumbnail_key(meta["path"], meta["kind"], meta["start"], meta["end"])
        path = thumbnail_path(self.path, key)
        return path if path.is_file() else None

    def media_file(self, item_id: int) -> Path:
        """The video file of a row (only paths the store records are ever returned).

        Raises:
            ItemNotFoundError: No such row, or the file is gone.
        """
        path = Path(self.item(item_id)["path"])
        if not path.is_file():
            raise ItemNotFoundError(f"the video of item {item_id} is no longer at {path}")
        return path

    # ---------------------------------------------------------------------------------------------------------------
    # The model

    def _load(self) -> Any:
        if self._embedder is None:
            with self._load_lock:
                if self._embedder is None:
                    from ..collection import load_video_embedder

                    frames = store_num_frames(self.reader)
                    embedder, processor = load_video_embedder(
                        self.model_source, device=self.device, dtype=self.dtype, num_frames=frames
                    )
                    self._processor = processor
                    self._embedder = embedder
        return self._embedder

    def _text_tower(self) -> tuple[Any, Any]:
        embedder = self._load()
        if not embedder.has_text:
            raise QueryError(
                f"model {self.model_source} embeds videos only (no text tower); query it with a video, or serve the "
                "store with a video-text model (--model)"
            )
        if self._tokenizer is None:
            with self._load_lock:
                if self._tokenizer is None:
                    from ..tokenization import VideoPrismTokenizer

                    self._tokenizer = VideoPrismTokenizer.from_pretrained(self.model_source)
        return embedder, self._tokenizer

    def embed_text(self, text: str) -> np.ndarray:
        """The (D,) embedding of a text query (cached)."""
        with self._cache_lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return self._cache[text]
        embedder, tokenizer = self._text_tower()
        with self._model_lock:
            vector = embed_text(embedder.model, self.model_source, [text], tokenizer)[0]
        if self._cache_size > 0:
            with self._cache_lock:
                self._cache[text] = vector
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vector

    def embed_video_file(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The (D,) embedding of a video file, sampled as one clip like the store's clips.

        Raises:
            videoprism.video_io.VideoDecodeError: Not a decodable video.
        """
        from ..collection.clips import clip_pixels
        from ..video_io import read_video

        embedder = self._load()
        decoded = read_video(os.fspath(path), num_frames=embedder.num_frames)
        pixels = clip_pixels(self._processor, decoded)[None]
        with self._model_lock:
            embeds, _ = embedder(pixels)
        return embeds[0]

    # ---------------------------------------------------------------------------------------------------------------
    # Queries

    def search(self, query: np.ndarray, k: int, kind: str = "all", exclude: int | None = None) -> list[SearchHit]:
        """The ``k`` rows most similar to an embedding (none for an empty store), best first."""
        reader = self.reader
        kinds = None if kind == "all" else kind
        try:
            hits = reader.search(query, k + (exclude is not None), kinds)
        except EmptyStoreError:
            return []
        return [h for h in hits if h.id != exclude][:k]

    def search_text(self, text: str, k: int, kind: str = "all") -> list[SearchHit]:
        """Rows most similar to a text."""
        return self.search(self.embed_text(text), k, kind)

    def search_like(self, item_id: int, k: int, kind: str = "all") -> list[SearchHit]:
        """Rows most similar to a stored row (using its stored embedding), the row itself left out.

        Raises:
            ItemNotFoundError: No such row.
        """
        reader = self.reader
        self.item(item_id, reader)
        vector = np.asarray(reader.embeddings[int(np.searchsorted(reader.ids, item_id))], np.float32)
        return self.search(vector, k, kind, exclude=item_id)

    def classify(self, path: str | os.PathLike[str], labels: Sequence[str], templates: str = "default") -> list:
        """Zero-shot probabilities of a video file over ``labels``: ``[(label, probability)]``, most probable first.

        Raises:
            QueryError: Fewer than two labels, repeated labels, or a model without a text tower.
            videoprism.video_io.VideoDecodeError: Not a decodable video.
        """
        import torch

        from ..zero_shot import build_zero_shot_classifier, zero_shot_logits

        labels = [str(label).strip() for label in labels if str(label).strip()]
        if len(labels) < 2:
            raise QueryError(f"zero-shot classification needs at least two labels, got {labels}")
        if len(set(labels)) != len(labels):
            raise QueryError(f"labels repeat: {sorted({x for x in labels if labels.count(x) > 1})}")
        embedder, tokenizer = self._text_tower()
        video = self.embed_video_file(path)
        with self._model_lock:
            classifier = build_zero_shot_classifier(embedder.model, tokenizer, labels, templates)
        probs = zero_shot_logits(torch.from_numpy(video[None]), classifier.cpu()).softmax(dim=-1)[0].numpy()
        order = np.argsort(-probs, kind="stable")
        return [(labels[j], float(probs[j])) for j in order]

    def hit_json(self, rank: int, hit: SearchHit) -> dict[str, Any]:
        """One hit as the API returns it: rank, score, id, path, start, end and the thumbnail URL (or null)."""
        meta = hit.metadata
        has_thumb = self.thumbnail_file(meta) is not None
        return {
            "rank": rank,
            "score": hit.score,
            "id": hit.id,
            "path": meta["path"],
            "start": _seconds(meta["start"]),
            "end": _seconds(meta["end"]),
            "thumbnail": f"/api/items/{hit.id}/thumbnail" if has_thumb else None,
        }


def _value_counts(column: Any) -> tuple[list[Any], list[int]]:
    import pyarrow.compute as pc

    counts = pc.value_counts(column)
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()
