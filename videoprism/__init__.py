"""VideoPrism video foundation models in PyTorch, exact to the original JAX/Flax release."""

from .configuration import PRESETS, VideoPrismConfig, VideoPrismTextConfig, VideoPrismVisionConfig
from .modeling import (
    VideoPrismClipModel,
    VideoPrismForVideoClassification,
    VideoPrismTextModel,
    VideoPrismVideoModel,
    VideoPrismVisionModel,
)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "VideoPrismClipModel",
    "VideoPrismConfig",
    "VideoPrismForVideoClassification",
    "VideoPrismTextConfig",
    "VideoPrismTextModel",
    "VideoPrismVideoModel",
    "VideoPrismVisionConfig",
    "VideoPrismVisionModel",
]
