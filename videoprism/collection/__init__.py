"""Collection tools: embed a video collection into an embedding store, search it, classify video files.

The modules, in the order a video passes them:

* `inputs`: expanding inputs (files, folders, globs, ``@list.txt``, URLs) into videos, and their resume keys.
* `clips`: the clips of one video (the whole video, or one per window), decoded and pre-processed.
* `decode_pool`: worker processes that decode videos into clips and stream them back (`DecodePool`).
* `embedder`: the model wrapper (`VideoEmbedder`) that turns clips into embeddings.
* `pipeline`: what both engines share: the plan of videos to do, store rows, pooled video rows, `EmbedSummary`.
* `progress`: the progress bar or lines.
* `local`: `embed_videos`, the engine of this machine; `ray_engine`: `embed_videos_ray`, on a Ray cluster.
* `search`: `search_text`, `search_video`; `classify`: `classify_video_files`.

The names below load their module on first use (the tools import pyarrow and multiprocessing machinery).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DEFAULT_MODEL": "embedder",
    "DTYPES": "embedder",
    "VideoEmbedder": "embedder",
    "load_video_embedder": "embedder",
    "VIDEO_EXTENSIONS": "inputs",
    "expand_inputs": "inputs",
    "EmbedSummary": "pipeline",
    "embed_videos": "local",
    "embed_videos_ray": "ray_engine",
    "search_text": "search",
    "search_video": "search",
    "Classification": "classify",
    "classify_video_files": "classify",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
