"""Configurations of the VideoPrism models, with transformers' field names, and the presets of the four releases."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import ConfigError

CONFIG_NAME = "config.json"
# Weight dtypes the tools accept by name (torch-free, so that the command line parses without importing torch).
DTYPE_NAMES = ("float32", "bfloat16", "float16")

# Fields that count something and must be at least 1; other integer fields must be at least 0 (a layer count of 0,
# a token id). Fractions of one are dropout probabilities.
_POSITIVE = {
    "image_size", "num_frames", "num_channels", "hidden_size", "num_attention_heads", "intermediate_size",
    "num_spatial_layers", "pooler_intermediate_size", "vocab_size", "num_hidden_layers", "max_position_embeddings",
    "num_labels", "layer_norm_eps",
}  # fmt: skip
_FRACTIONS = {"hidden_dropout_prob", "attention_probs_dropout_prob"}


def _json_type(value: Any) -> str:
    """What a JSON value is, in JSON's words (the user wrote JSON, not Python)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")


def _described(value: Any) -> str:
    return "null" if value is None else f"{_json_type(value)} {value!r:.60}"


def _check_field(name: str, value: Any, annotation: str) -> None:
    """Raises `ConfigError` naming the field when ``value`` is not of its annotated type or range."""
    if value is None and (annotation.endswith("| None") or name.endswith("_token_id")):
        return  # token ids are transformers' bookkeeping: null where a tokenizer has no such token
    base = annotation.removesuffix(" | None")
    got = f"{value!r} ({_json_type(value)})"
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {got}")
    elif base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {got}")
    elif base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {got}")
    elif base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {got}")
    else:
        return
    if name in _POSITIVE and not value > 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    if base in ("int", "float") and name not in _POSITIVE and value < 0:
        raise ConfigError(f"{name} must not be negative, got {value!r}")
    if name in _FRACTIONS and not value <= 1:
        raise ConfigError(f"{name} must be between 0 and 1, got {value!r}")


class _ConfigBase:
    """JSON round trips shared by the three config classes (a `config.json` that transformers 5.23 also reads)."""

    model_type: ClassVar[str]
    # Upper bounds of the size fields (far above the released models'), checked before anything is allocated: a
    # corrupt or hostile config.json must not make the loader build millions of layers or a 100 GB table.
    _SIZE_LIMITS: ClassVar[dict[str, tuple[int, int]]] = {}

    def _check_sizes(self) -> None:
        for name, (low, high) in self._SIZE_LIMITS.items():
            value = getattr(self, name)
            if value is None and name in ("intermediate_size", "pooler_intermediate_size", "num_labels"):
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
                raise ConfigError(
                    f"{type(self).__name__}: {name} must be an integer from {low} to {high}, got {value!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _ConfigBase):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = copy.deepcopy(value)
            out[f.name] = value
        out["model_type"] = self.model_type
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Builds a config from a dict; keys this package does not use (transformers' bookkeeping) are ignored."""
        if not isinstance(data, dict):
            raise ConfigError(f"a {cls.__name__} needs a JSON object of fields, got {_described(data)}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def _check_fields(self) -> None:
        """Checks every plain field (numbers, flags, names) against its annotated type and range."""
        for f in dataclasses.fields(self):
            _check_field(f.name, getattr(self, f.name), str(f.type))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, folder: str | os.PathLike) -> str:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())
        return path

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        try:
            return cls.from_dict(_read_json(path))
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def copy(self, **changes):
        return dataclasses.replace(copy.deepcopy(self), **changes)


@dataclass
class VideoPrismVisionConfig(_ConfigBase):
    """The video tower: factorized spatial/temporal encoder, plus the auxiliary layers and attention pooler of LvT.

    Also the config of `VideoPrismForVideoClassification` (`num_labels`, `id2label`, `label2id`).

    Args:
        image_size: Side of the square frames the position embeddings were trained for.
        num_frames: Frames the temporal position embedding was trained for.
        tubelet_size: (time, height, width) of a patch; time must be 1.
        num_spatial_layers: Layers of the per-frame spatial transformer.
        num_temporal_layers: Layers of the per-patch temporal transformer.
        num_auxiliary_layers: Layers over all T*N tokens before the pooler (LvT video tower only).
        attn_logit_softcapping: Attention logits are capped as `c * tanh(logits / c)` in every transformer layer.
        pooler_intermediate_size: Width of the attention pooler's q/k/v projections; `None` means 4 x hidden_size,
            as in the original. transformers 5.23 assumes it equals `intermediate_size`.
        apply_l2norm: Whether `VideoPrismVideoModel` L2-normalises its pooled embedding.
    """

    model_type: ClassVar[str] = "videoprism_vision_model"

    image_size: int = 288
    num_frames: int = 16
    tubelet_size: list[int] = field(default_factory=lambda: [1, 18, 18])
    num_channels: int = 3
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu_python"
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    num_spatial_layers: int = 12
    num_temporal_layers: int = 4
    num_auxiliary_layers: int = 2
    attn_logit_softcapping: float = 50.0
    pooler_intermediate_size: int | None = None
    apply_l2norm: bool = True
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    num_labels: int | None = None
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None

    _SIZE_LIMITS: ClassVar[dict[str, tuple[int, int]]] = {
        "image_size": (1, 8192),
        "num_frames": (1, 4096),
        "num_channels": (1, 16),
        "hidden_size": (1, 65536),
        "num_attention_heads": (1, 1024),
        "intermediate_size": (1, 262144),
        "num_spatial_layers": (1, 1024),
        "num_temporal_layers": (1, 1024),
        "num_auxiliary_layers": (0, 1024),
        "pooler_intermediate_size": (1, 262144),
        "num_labels": (1, 1 << 20),
    }

    def __post_init__(self):
        tubelet = self.tubelet_size
        if (
            not isinstance(tubelet, (list, tuple))
            or len(tubelet) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in tubelet)
            or tubelet[0] != 1
            or tubelet[1] != tubelet[2]
        ):
            raise ConfigError(f"tubelet_size must be [1, P, P] with a positive integer P, got {tubelet!r}")
        self.tubelet_size = list(tubelet)
        if isinstance(self.image_size, (list, tuple)):
            if len(set(self.image_size)) != 1:
                raise ConfigError(f"image_size must be square, got {self.image_size}")
            self.image_size = self.image_size[0]
        if self.id2label is not None and not isinstance(self.id2label, dict):
            raise ConfigError(f"id2label must be an object of index -> label, got {self.id2label!r}")
        self._check_fields()
        self._check_sizes()
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"image_size ({self.image_size}) must be a multiple of the patch size ({self.patch_size})"
            )
        if self.pooler_size % self.num_attention_heads:
            raise ConfigError(f"pooler width {self.pooler_size} must be a multiple of {self.num_attention_heads} heads")
        self._sync_labels()

    def _sync_labels(self):
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            if self.num_labels is None:
                self.num_labels = len(self.id2label)
        if self.num_labels is not None and self.id2label is None:
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        if self.id2label is not None:
            if len(self.id2label) != self.num_labels:
                raise ConfigError(f"id2label has {len(self.id2label)} entries but num_labels is {self.num_labels}")
            self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def patch_size(self) -> int:
        return self.tubelet_size[1]

    @property
    def pooler_size(self) -> int:
        return self.pooler_intermediate_size or 4 * self.hidden_size

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in ("num_labels", "id2label", "label2id", "problem_type", "pooler_intermediate_size"):
            if out[key] is None:
                del out[key]
        if out.get("id2label") is not None:
            out["id2label"] = {str(k): v for k, v in out["id2label"].items()}
        return out


@dataclass
class VideoPrismTextConfig(_ConfigBase):
    """The text tower of the LvT models (causal transformer whose appended CLS token is the text embedding).

    Args:
        intermediate_size: Width of the ReLU MLP; `None` means 4 x hidden_size, as in the original.
        max_position_embeddings: Longest token sequence (64 in the released models).
    """

    model_type: ClassVar[str] = "videoprism_text_model"

    vocab_size: int = 32000
    hidden_size: int = 768
    intermediate_size: int | None = None
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 64
    hidden_act: str = "relu"
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    attn_logit_softcapping: float = 50.0
    apply_l2norm: bool = True
    pad_token_id: int = 0
    eos_token_id: int | None = None
    bos_token_id: int | None = None
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02

    _SIZE_LIMITS: ClassVar[dict[str, tuple[int, int]]] = {
        "vocab_size": (1, 1 << 22),
        "hidden_size": (1, 65536),
        "intermediate_size": (1, 262144),
        "num_hidden_layers": (1, 1024),
        "num_attention_heads": (1, 1024),
        "max_position_embeddings": (1, 65536),
    }

    def __post_init__(self):
        self._check_fields()
        self._check_sizes()
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_size % 2 or self.hidden_size < 4:
            raise ConfigError(f"text hidden_size must be even and >= 4 for the sinusoid, got {self.hidden_size}")


@dataclass
class VideoPrismConfig(_ConfigBase):
    """The video-text (LvT) model: a `vision_config` and a `text_config`."""

    model_type: ClassVar[str] = "videoprism"

    vision_config: VideoPrismVisionConfig = field(default_factory=VideoPrismVisionConfig)
    text_config: VideoPrismTextConfig = field(default_factory=VideoPrismTextConfig)

    def __post_init__(self):
        for name, cls in (("vision_config", VideoPrismVisionConfig), ("text_config", VideoPrismTextConfig)):
            value = getattr(self, name)
            if not isinstance(value, (dict, cls)):
                raise ConfigError(f"{name} must be an object of fields, got {value!r}")
            if isinstance(value, dict):
                try:
                    setattr(self, name, cls.from_dict(value))
                except ConfigError as err:
                    raise ConfigError(f"{name}: {err}") from None
        if self.vision_config.hidden_size != self.text_config.hidden_size:
            raise ConfigError(
                f"vision hidden_size ({self.vision_config.hidden_size}) and text hidden_size "
                f"({self.text_config.hidden_size}) must match: the embeddings share one space"
            )


def load_config_dict(data: dict[str, Any]) -> VideoPrismConfig | VideoPrismVisionConfig | VideoPrismTextConfig:
    """The config class named by a `config.json`'s `model_type` (ours and transformers' use the same names).

    Raises:
        ConfigError: ``data`` is not an object, names another model type, or a field has a wrong type or value.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a JSON object of fields, got {_described(data)}")
    model_type = data.get("model_type")
    for cls in (VideoPrismConfig, VideoPrismVisionConfig, VideoPrismTextConfig):
        if cls.model_type == model_type:
            return cls.from_dict(data)
    raise ConfigError(
        f"model_type is {model_type!r}; expected one of videoprism, videoprism_vision_model, videoprism_text_model"
    )


def _read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"not valid UTF-8 JSON ({err})") from None


def read_config_file(path: str | os.PathLike) -> VideoPrismConfig | VideoPrismVisionConfig | VideoPrismTextConfig:
    """The config a `config.json` file holds (`load_config_dict`).

    Raises:
        ConfigError: The file is not JSON, or not a valid config; the message names the file and the field.
        OSError: The file cannot be read.
    """
    try:
        return load_config_dict(_read_json(path))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


# The four released checkpoints: hub repo, Flax file, and exact hyper-parameters.
_BASE = dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_spatial_layers=12)
_LARGE = dict(hidden_size=1024, num_attention_heads=16, intermediate_size=4096, num_spatial_layers=24)


@dataclass(frozen=True)
class Preset:
    name: str
    repo_id: str
    flax_file: str
    num_params: int
    vision: dict[str, Any]
    text: dict[str, Any] | None = None

    @property
    def is_lvt(self) -> bool:
        return self.text is not None

    def config(self) -> VideoPrismConfig | VideoPrismVisionConfig:
        vision = VideoPrismVisionConfig(**self.vision)
        if self.text is None:
            return vision
        return VideoPrismConfig(vision_config=vision, text_config=VideoPrismTextConfig(**self.text))


def _text(size: dict[str, Any]) -> dict[str, Any]:
    return dict(
        hidden_size=size["hidden_size"],
        num_attention_heads=size["num_attention_heads"],
        intermediate_size=4 * size["hidden_size"],
        num_hidden_layers=12,
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "videoprism-base-f16r288",
            "google/videoprism-base-f16r288",
            "flax_base_f16r288_repeated.npz",
            114_365_184,
            dict(_BASE, num_frames=16, num_temporal_layers=4),
        ),
        Preset(
            "videoprism-large-f8r288",
            "google/videoprism-large-f8r288",
            "flax_large_f8r288_repeated.npz",
            353_965_056,
            dict(_LARGE, num_frames=8, num_temporal_layers=4),
        ),
        Preset(
            "videoprism-lvt-base-f16r288",
            "google/videoprism-lvt-base-f16r288",
            "flax_lvt_base_f16r288_repeated.npz",
            247_623_424,
            dict(_BASE, num_frames=16, num_temporal_layers=4, num_auxiliary_layers=2),
            _text(_BASE),
        ),
        Preset(
            "videoprism-lvt-large-f8r288",
            "google/videoprism-lvt-large-f8r288",
            "flax_lvt_large_f8r288_repeated.npz",
            579_877_120,
            dict(_LARGE, num_frames=8, num_temporal_layers=4, num_auxiliary_layers=2),
            _text(_LARGE),
        ),
    )
}


def find_preset(name: str) -> Preset | None:
    """The preset whose name, hub repo or Flax file name matches `name` (a path or repo id may surround it)."""
    lowered = os.path.basename(str(name).rstrip("/")).lower()
    for preset in PRESETS.values():
        if lowered in (preset.name, preset.flax_file, preset.repo_id.split("/")[1]):
            return preset
    for preset in PRESETS.values():  # e.g. "flax_lvt_base_f16r288_repeated.npz" inside another folder name
        key = preset.name.removeprefix("videoprism-")
        if key.replace("-", "_") in lowered or key in lowered:
            if preset.is_lvt or "lvt" not in lowered:
                return preset
    return None
