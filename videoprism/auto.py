"""Load any VideoPrism checkpoint as the model class it holds, and resolve model sources (`resolve_source`)."""

from __future__ import annotations

import os

from ._loading import IGNORED_KEYS, load_checkpoint
from ._sources import ModelSource, resolve_source
from .configuration import PRESETS, VideoPrismConfig, VideoPrismTextConfig
from .modeling import (
    VideoPrismClipModel,
    VideoPrismForVideoClassification,
    VideoPrismPreTrainedModel,
    VideoPrismTextModel,
    VideoPrismVideoModel,
    VideoPrismVisionModel,
)


def model_class_for(config, state_dict) -> type[VideoPrismPreTrainedModel]:
    """The class whose weights a checkpoint holds: LvT -> clip model; a pooler -> video model; and so on."""
    if isinstance(config, VideoPrismConfig) or any(k.startswith("text_model.") for k in state_dict):
        return VideoPrismClipModel
    if isinstance(config, VideoPrismTextConfig):
        return VideoPrismTextModel
    if "classifier.weight" in state_dict:
        return VideoPrismForVideoClassification
    if any(k.startswith("head.") for k in state_dict):
        return VideoPrismVideoModel
    return VideoPrismVisionModel


def _as_config(config):
    return PRESETS[config].config() if isinstance(config, str) else config


def describe(source: str | os.PathLike | ModelSource, config=None, revision: str | None = None, cache_dir=None) -> dict:
    """What a checkpoint holds: model class, config, parameter count, and where it was read from."""
    checkpoint = load_checkpoint(source, revision, cache_dir)
    config = _as_config(config) or checkpoint.config
    cls = model_class_for(config, checkpoint.state_dict)
    params = sum(v.numel() for k, v in checkpoint.state_dict.items() if k not in IGNORED_KEYS)
    return {
        "source": str(source),
        "resolved": checkpoint.description,
        "model_class": cls.__name__,
        "num_parameters": params,
        "num_tensors": len(checkpoint.state_dict),
        "config": config.to_dict() if config is not None else None,
    }


def load_model(source: str | os.PathLike | ModelSource, **kwargs) -> VideoPrismPreTrainedModel:
    """Loads `source` (see `resolve_source`) as the class it holds (see `model_class_for`); kwargs go to
    `from_pretrained`."""
    checkpoint = load_checkpoint(source, kwargs.pop("revision", None), kwargs.pop("cache_dir", None))
    cls = model_class_for(_as_config(kwargs.get("config")) or checkpoint.config, checkpoint.state_dict)
    return cls.from_checkpoint(checkpoint, **kwargs)


__all__ = ["ModelSource", "describe", "load_model", "model_class_for", "resolve_source"]
