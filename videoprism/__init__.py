"""VideoPrism video foundation models in PyTorch, exact to the original JAX/Flax release."""

from .auto import ModelSource, load_model, resolve_source
from .configuration import PRESETS, VideoPrismConfig, VideoPrismTextConfig, VideoPrismVisionConfig
from .encoding import BatchEncoding
from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    DecodingWorkerError,
    EmbedSettingsError,
    EmptyStoreError,
    ItemNotFoundError,
    NoVideosFoundError,
    QueryError,
    RayNotInstalledError,
    SourceNotFoundError,
    StoreCorruptedError,
    StoreError,
    StoreLockedError,
    StoreMismatchError,
    StoreNotFoundError,
    TokenizerNotFoundError,
    UsageError,
    VideoDecodeError,
    VideoInputError,
    VideoInputNotFoundError,
)
from .modeling import (
    VideoPrismClipModel,
    VideoPrismForVideoClassification,
    VideoPrismTextModel,
    VideoPrismVideoModel,
    VideoPrismVisionModel,
)
from .processing import VideoPrismProcessor
from .tokenization import VideoPrismTokenizer
from .video_io import DecodedVideo, read_video
from .video_processing import VideoPrismVideoProcessor
from .zero_shot import build_zero_shot_classifier, label_probabilities, label_probabilities_of_videos

# `classify` is the short public name; `label_probabilities` says what it returns.
classify = label_probabilities

__version__ = "0.1.0"

# The collection tools load pyarrow and multiprocessing machinery: import them on first use.
_LAZY = {
    "EmbedSummary": "collection",
    "embed_videos": "collection",
    "open_store": "store",
    "search_text": "collection",
    "search_video": "collection",
    "classify_video_files": "collection",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'videoprism' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "BatchEncoding",
    "CheckpointError",
    "CheckpointNotFoundError",
    "DecodedVideo",
    "DecodingWorkerError",
    "EmbedSettingsError",
    "EmptyStoreError",
    "ItemNotFoundError",
    "ModelSource",
    "NoVideosFoundError",
    "QueryError",
    "RayNotInstalledError",
    "SourceNotFoundError",
    "StoreCorruptedError",
    "StoreError",
    "StoreLockedError",
    "StoreMismatchError",
    "StoreNotFoundError",
    "TokenizerNotFoundError",
    "UsageError",
    "VideoDecodeError",
    "VideoInputError",
    "VideoInputNotFoundError",
    "VideoPrismClipModel",
    "VideoPrismConfig",
    "VideoPrismForVideoClassification",
    "VideoPrismProcessor",
    "VideoPrismTextConfig",
    "VideoPrismTextModel",
    "VideoPrismTokenizer",
    "VideoPrismVideoModel",
    "VideoPrismVideoProcessor",
    "VideoPrismVisionConfig",
    "VideoPrismVisionModel",
    "build_zero_shot_classifier",
    "classify",
    "label_probabilities",
    "label_probabilities_of_videos",
    "classify_video_files",
    "embed_videos",
    "EmbedSummary",
    "open_store",
    "search_text",
    "search_video",
    "load_model",
    "read_video",
    "resolve_source",
]
