"""VideoPrism video foundation models in PyTorch, exact to the original JAX/Flax release."""

from .auto import load_model
from .configuration import PRESETS, VideoPrismConfig, VideoPrismTextConfig, VideoPrismVisionConfig
from .modeling import (
    VideoPrismClipModel,
    VideoPrismForVideoClassification,
    VideoPrismTextModel,
    VideoPrismVideoModel,
    VideoPrismVisionModel,
)
from .processing import VideoPrismProcessor
from .tokenization import TokenizerNotFoundError, VideoPrismTokenizer
from .video_io import DecodedVideo, VideoDecodeError, read_video
from .video_processing import VideoPrismVideoProcessor
from .zero_shot import build_zero_shot_classifier, classify

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
    "DecodedVideo",
    "TokenizerNotFoundError",
    "VideoDecodeError",
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
    "classify_video_files",
    "embed_videos",
    "EmbedSummary",
    "open_store",
    "search_text",
    "search_video",
    "load_model",
    "read_video",
]
