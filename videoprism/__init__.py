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
    "load_model",
    "read_video",
]
