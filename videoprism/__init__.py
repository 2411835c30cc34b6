"""VideoPrism video foundation models in PyTorch, exact to the original JAX/Flax release.

Only the exceptions are imported with the package; every other public name loads its module (and torch) on first
use, so that `import videoprism.cli` starts in a fraction of a second and the command line can handle Ctrl-C and
bad arguments before the heavy imports.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ConfigError,
    DecodingWorkerError,
    DeviceError,
    EmbedSettingsError,
    EmptyClassError,
    EmptyLabelError,
    EmptyLabelledSetError,
    EmptyStoreError,
    ExportDependencyError,
    ExportDirectoryNotEmptyError,
    ExportError,
    ExportSettingsError,
    FeatureCacheError,
    FeatureExtractionError,
    FeatureSettingsError,
    ItemNotFoundError,
    LabelColumnsError,
    LabelledSetError,
    LabelledSetNotFoundError,
    NotAClassifierError,
    NoVideosFoundError,
    ProbeResumeError,
    ProbeSettingsError,
    QueryError,
    RayNotInstalledError,
    SingleClassError,
    SourceNotFoundError,
    SplitError,
    StoreCorruptedError,
    StoreError,
    StoreLockedError,
    StoreMismatchError,
    StoreNotFoundError,
    TextInputError,
    TimeRangeError,
    TokenizerNotFoundError,
    TowerNotInCheckpointError,
    UnknownExportFormatError,
    UnknownLabelError,
    UnknownTowerError,
    UsageError,
    VideoDecodeError,
    VideoInputError,
    VideoInputNotFoundError,
    WriteError,
)

__version__ = "0.1.0"

# Public name -> the module that defines it.
_LAZY = {
    "ModelSource": "auto",
    "load_model": "auto",
    "resolve_source": "auto",
    "PRESETS": "configuration",
    "VideoPrismConfig": "configuration",
    "VideoPrismTextConfig": "configuration",
    "VideoPrismVisionConfig": "configuration",
    "BatchEncoding": "encoding",
    "VideoPrismClipModel": "modeling",
    "VideoPrismForVideoClassification": "modeling",
    "VideoPrismTextModel": "modeling",
    "VideoPrismVideoModel": "modeling",
    "VideoPrismVisionModel": "modeling",
    "VideoPrismProcessor": "processing",
    "VideoPrismTokenizer": "tokenization",
    "DecodedVideo": "video_io",
    "read_video": "video_io",
    "VideoPrismVideoProcessor": "video_processing",
    "build_zero_shot_classifier": "zero_shot",
    "label_probabilities": "zero_shot",
    "label_probabilities_of_videos": "zero_shot",
    # `classify` is the short public name; `label_probabilities` says what it returns.
    "classify": "zero_shot:label_probabilities",
    # The collection tools load pyarrow and multiprocessing machinery.
    "EmbedSummary": "collection",
    "embed_videos": "collection",
    "open_store": "store",
    "search_text": "collection",
    "search_video": "collection",
    "classify_video_files": "collection",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, _, attr = _LAZY[name].partition(":")
        value = getattr(importlib.import_module(f".{module}", __name__), attr or name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'videoprism' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "PRESETS",
    "BatchEncoding",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "DecodedVideo",
    "DecodingWorkerError",
    "DeviceError",
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
    "TextInputError",
    "TokenizerNotFoundError",
    "UsageError",
    "VideoDecodeError",
    "VideoInputError",
    "VideoInputNotFoundError",
    "WriteError",
    "ExportDependencyError",
    "ExportDirectoryNotEmptyError",
    "ExportError",
    "ExportSettingsError",
    "TowerNotInCheckpointError",
    "UnknownExportFormatError",
    "UnknownTowerError",
    "EmptyClassError",
    "EmptyLabelError",
    "EmptyLabelledSetError",
    "FeatureCacheError",
    "FeatureExtractionError",
    "FeatureSettingsError",
    "LabelColumnsError",
    "LabelledSetError",
    "LabelledSetNotFoundError",
    "NotAClassifierError",
    "ProbeResumeError",
    "ProbeSettingsError",
    "SingleClassError",
    "SplitError",
    "TimeRangeError",
    "UnknownLabelError",
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
