"""Finding, converting, loading and saving checkpoints: local folders, hub repos and the original Flax `.npz` files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ._flax import flax_to_state_dict, read_npz
from ._sources import WEIGHTS_INDEX_NAME, WEIGHTS_NAME, ModelSource, resolve_source
from .configuration import (
    CONFIG_NAME,
    PRESETS,
    VideoPrismConfig,
    VideoPrismTextConfig,
    VideoPrismVisionConfig,
    find_preset,
    load_config_dict,
    read_config_file,
)
from .errors import CheckpointError, CheckpointNotFoundError, SourceNotFoundError

logger = logging.getLogger(__name__)

# Buffers transformers keeps in its checkpoints; their values are recomputed here, never trusted.
IGNORED_KEYS = ("text_model.embeddings.position_embedding", "text_model.embeddings.position_ids")


@dataclass
class ResolvedCheckpoint:
    description: str
    config: Any | None  # a config object from config.json or a preset, or None
    state_dict: dict[str, torch.Tensor]


def default_cache_dir() -> Path:
    return Path(os.environ.get("VIDEOPRISM_CACHE", Path.home() / ".cache" / "videoprism"))


# ----------------------------------------------------------------------------------------------------------------
# Reading weights


def read_safetensors(paths: list[str]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state = {}
    for p in paths:
        try:
            state.update(load_file(p))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{p} is not a readable safetensors file ({err})") from err
    return state


def _folder_weights(folder: str) -> list[str]:
    index = os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(folder, s) for s in shards]
    single = os.path.join(folder, WEIGHTS_NAME)
    if os.path.isfile(single):
        return [single]
    raise CheckpointNotFoundError(f"folder {folder} has config.json but no {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}")


def _converted_cache_path(npz_path: str, cache_dir) -> Path:
    real = os.path.realpath(npz_path)
    stat = os.stat(real)
    key = hashlib.sha1(f"{real}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    root = Path(cache_dir) / "videoprism-converted" if cache_dir else default_cache_dir() / "converted"
    return root / f"{Path(real).stem}-{key}.safetensors"


def load_flax_converted(npz_path: str, cache_dir=None) -> dict[str, torch.Tensor]:
    """A Flax `.npz` converted to a state dict; cached as safetensors so the next load skips the conversion."""
    from safetensors.torch import save_file

    cached = _converted_cache_path(npz_path, cache_dir)
    if cached.is_file():
        try:
            return read_safetensors([str(cached)])
        except CheckpointError:
            logger.warning("ignoring unreadable conversion cache %s", cached)
    state = flax_to_state_dict(read_npz(npz_path))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
        os.close(fd)
        save_file(state, tmp, metadata={"format": "pt", "source": os.path.basename(npz_path)})
        os.replace(tmp, cached)
    except OSError as err:  # a read-only cache must not stop loading
        logger.warning("could not cache the converted checkpoint at %s: %s", cached, err)
    return state


def load_checkpoint(
    source: str | os.PathLike | ModelSource, revision: str | None = None, cache_dir=None
) -> ResolvedCheckpoint:
    """The config and state dict a source holds (see `resolve_source` for the forms of `source`).

    Raises:
        CheckpointNotFoundError: The source does not exist, or a hub repo cannot be used.
        CheckpointError: The files are not a readable checkpoint.
    """
    try:
        source = resolve_source(source, revision, cache_dir)
        kind, path = source.checkpoint_file()
    except CheckpointNotFoundError:
        raise
    except SourceNotFoundError as err:
        raise CheckpointNotFoundError(f"checkpoint {source!s}: {err}") from err
    if kind == "folder":
        config = read_config_file(os.path.join(path, CONFIG_NAME))
        return ResolvedCheckpoint(path, config, read_safetensors(_folder_weights(path)))
    if kind == "safetensors":
        sibling = os.path.join(os.path.dirname(path), CONFIG_NAME)
        config = read_config_file(sibling) if os.path.isfile(sibling) else None
        return ResolvedCheckpoint(path, config, read_safetensors([path]))
    preset = PRESETS.get(source.preset) if source.preset else find_preset(path)
    return ResolvedCheckpoint(path, preset.config() if preset else None, load_flax_converted(path, source.cache_dir))


# ----------------------------------------------------------------------------------------------------------------
# Fitting a state dict to a model


def _pick_prefix(prefixes: tuple[str, ...], expected: set[str], state: dict[str, torch.Tensor]) -> str:
    def coverage(prefix):
        return sum(1 for k in expected if prefix + k in state)

    return max(prefixes, key=coverage)


def select_state_dict(model: PreTrainedMixin, state: dict[str, torch.Tensor], description: str):
    """The part of `state` that belongs to `model` (a sub-model may come from a larger checkpoint).

    Returns (state dict in the model's names, missing keys). Raises on mis-shaped tensors and on unexpected
    tensors inside the model's own sub-modules.
    """
    own = model.state_dict()
    ignored = {k.removeprefix("text_model.") for k in IGNORED_KEYS} | set(IGNORED_KEYS)
    expected = {k for k in own if k not in ignored}
    prefix = _pick_prefix(model.checkpoint_prefixes, expected, state)
    picked, unexpected, mismatched, wrong_dtype = {}, [], [], []
    roots = {k.split(".")[0] for k in own}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name in ignored:
            continue
        if name not in expected:
            if name.split(".")[0] in roots:
                unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(own[name].shape):
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[name].shape)}")
            continue
        if own[name].is_floating_point() and not value.is_floating_point():
            wrong_dtype.append(f"{key}: {str(value.dtype).removeprefix('torch.')}")
            continue
        picked[name] = value
    if mismatched:
        raise CheckpointError(f"{description}: tensors of the wrong shape for {type(model).__name__}: {mismatched[:8]}")
    if wrong_dtype:
        raise CheckpointError(
            f"{description}: weights stored as integers or booleans, not floating point (a damaged or relabelled "
            f"file; convert the checkpoint again): {wrong_dtype[:8]}"
        )
    if unexpected:
        raise CheckpointError(f"{description}: unexpected tensors for {type(model).__name__}: {sorted(unexpected)[:8]}")
    return picked, sorted(expected - set(picked))


# ----------------------------------------------------------------------------------------------------------------
# Configs


def _config_for(cls, config, description: str):
    """The config `cls` needs, taken out of a full/sub config."""
    want = cls.config_class
    if isinstance(config, want):
        return config
    if isinstance(config, VideoPrismConfig):
        return config.vision_config if want is VideoPrismVisionConfig else config.text_config
    if config is None:
        raise CheckpointError(
            f"{description} carries no config; pass config= (a {want.__name__} or a preset name such as "
            f"{next(iter(PRESETS))!r})"
        )
    raise CheckpointError(f"{description} holds a {type(config).__name__}, but {cls.__name__} needs a {want.__name__}")


# Layer stacks: (config field, the pattern of their checkpoint keys; group 1 is the layer index).
_LAYER_KEYS = (
    ("num_spatial_layers", re.compile(r"(?:^|\.)spatial_layers\.(\d+)\.")),
    ("num_temporal_layers", re.compile(r"(?:^|\.)temporal_layers\.(\d+)\.")),
    ("num_auxiliary_layers", re.compile(r"(?:^|\.)auxiliary_layers\.(\d+)\.")),
    ("num_hidden_layers", re.compile(r"(?:^|text_model\.)layers\.(\d+)\.")),
)
# Sizes read off tensor shapes: (config field, key suffix, dim, how the config gives the size).
_SHAPE_KEYS = (
    ("hidden_size", "spatial_embeddings.patch_embeddings.projection.bias", 0, lambda c: c.hidden_size),
    ("image_size", "spatial_embeddings.position_embeddings", 1, lambda c: c.num_patches),
    ("num_frames", "temporal_embeddings.position_embeddings", 1, lambda c: c.num_frames),
    ("hidden_size", "embeddings.token_embedding.weight", 1, lambda c: c.hidden_size),
    ("vocab_size", "embeddings.token_embedding.weight", 0, lambda c: c.vocab_size),
    ("max_position_embeddings", "embeddings.position_embedding", 0, lambda c: c.max_position_embeddings),
)


def check_config_fits(config: Any, state: dict[str, torch.Tensor], description: str) -> None:
    """Refuses a config whose sizes disagree with the checkpoint's tensors, before any model is built.

    A wrong size would otherwise surface only after the model is built (a config asking for millions of layers
    takes minutes; a huge position table allocates gigabytes). Families the checkpoint lacks are not checked here
    (loading reports the missing tensors).

    Raises:
        CheckpointError: naming the config field, its value and what the checkpoint holds.
    """
    if isinstance(config, VideoPrismConfig):
        check_config_fits(config.vision_config, state, description)
        check_config_fits(config.text_config, state, description)
        return
    text = isinstance(config, VideoPrismTextConfig)

    def refuse(name: str, value: Any, holds: str) -> CheckpointError:
        return CheckpointError(
            f"{description}: the config's {name} is {value}, but the checkpoint's tensors hold {holds}; correct "
            f"{name} in config.json (or the config you pass) to match the weights"
        )

    for name, pattern in _LAYER_KEYS:
        if not hasattr(config, name) or (name == "num_hidden_layers") != text:
            continue
        found = {int(m.group(1)) for key in state if (m := pattern.search(key))}
        if found and getattr(config, name) != len(found):
            raise refuse(name, getattr(config, name), f"{len(found)} layers")
    for name, suffix, dim, size in _SHAPE_KEYS:
        if (suffix.startswith("embeddings.")) != text or not hasattr(config, name):
            continue
        key = next((k for k in state if k == suffix or k.endswith("." + suffix)), None)
        if key is None or len(state[key].shape) <= dim:
            continue
        if size(config) != state[key].shape[dim]:
            raise refuse(name, getattr(config, name), f"{state[key].shape[dim]} ({key} {tuple(state[key].shape)})")


def _materialize_meta(model: torch.nn.Module, dtype: torch.dtype | None) -> None:
    """Real (uninitialised) storage for what the checkpoint did not provide: fresh heads and recomputed buffers."""
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None and param.is_meta:
                data = torch.empty(param.shape, dtype=dtype if dtype and param.is_floating_point() else param.dtype)
                module._parameters[name] = torch.nn.Parameter(data, requires_grad=param.requires_grad)
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.is_meta:
                floating = dtype and buffer.is_floating_point()
                module._buffers[name] = torch.empty(buffer.shape, dtype=dtype if floating else buffer.dtype)


# ----------------------------------------------------------------------------------------------------------------
# The mixin


class PreTrainedMixin:
    """`from_pretrained` / `save_pretrained` for the model classes.

    Loading knows files and state dicts; what it needs to know about a model, the model class says through these
    attributes and hooks (overridden in the model classes):

    * `config_class`: the config the class is built from;
    * `checkpoint_prefixes`: where the class's weights sit in its own and in larger models' checkpoints;
    * `fresh_keys`: weights a fine-tuning user expects to start fresh (every other missing tensor is an error);
    * `fit_config(config, state)`: the config adjusted to the checkpoint's tensor shapes;
    * `after_load()`: recomputes what checkpoints do not hold, once the weights are in place;
    * `before_save()`: checks run before `save_pretrained` writes anything;
    * `set_attn_implementation(name)`: the attention kernel chosen at load time.
    """

    config_class: type
    checkpoint_prefixes: tuple[str, ...] = ("",)
    fresh_keys: tuple[str, ...] = ()

    @classmethod
    def fit_config(cls, config, state: dict[str, torch.Tensor]):
        """The config to build the model with for a checkpoint holding `state` (default: `config` unchanged)."""
        return config

    def after_load(self) -> None:
        """Runs once the checkpoint's tensors are the model's (default: nothing)."""

    def before_save(self) -> None:
        """Runs before `save_pretrained` writes anything (default: nothing)."""

    def set_attn_implementation(self, name: str | None) -> None:
        """Chooses the attention kernel; the model classes implement it."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike | ModelSource,
        *,
        config=None,
        revision: str | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        attn_implementation: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        **config_overrides,
    ):
        """Loads weights from a transformers-format folder or hub repo, or an original Flax `.npz`.

        Args:
            source: A preset name, a hub repo id (`google/videoprism-lvt-base-f16r288`), a local folder
                (config.json + model.safetensors, sharded or not), a `.npz` or `.safetensors` file, or a
                `ModelSource` from `resolve_source`.
            config: Overrides the checkpoint's config: a config object, a preset name, or a dict.
            revision: Hub branch, tag, commit or ref such as `refs/pr/4`.
            dtype: Cast the weights (e.g. torch.bfloat16); softmax and L2 norms stay fp32.
            attn_implementation: The attention kernel (see `ATTENTION_FUNCTIONS`): "auto" (default: "chunked" on
                CPU; on CUDA "flex" for large 16-bit attention, else "chunked"), "chunked" (exact, bounded memory),
                "flex" (exact, torch flex_attention), "eager" (the reference, all scores at once) or "sdpa"
                (APPROXIMATE: no soft cap).
            cache_dir: Hub cache folder (default: huggingface_hub's); converted Flax files are cached beside it.
            config_overrides: Fields changed on the model's config, e.g. `num_labels=400` for a classifier.
        """
        checkpoint = load_checkpoint(source, revision, cache_dir)
        return cls.from_checkpoint(checkpoint, config, dtype, device, attn_implementation, **config_overrides)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: ResolvedCheckpoint,
        config=None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        attn_implementation: str | None = None,
        **config_overrides,
    ):
        """Builds the model from a checkpoint `load_checkpoint` read (the arguments as in `from_pretrained`).

        The checkpoint's tensors become the model's parameters: `checkpoint.state_dict` is emptied.
        """
        if isinstance(config, str):
            if config not in PRESETS:
                raise ValueError(f"config={config!r} is not a preset; choose one of {', '.join(PRESETS)}")
            config = PRESETS[config].config()
        elif isinstance(config, dict):
            config = load_config_dict(config) if "model_type" in config else cls.config_class.from_dict(config)
        config = _config_for(cls, config if config is not None else checkpoint.config, checkpoint.description)
        config = cls.fit_config(config, checkpoint.state_dict)
        if config_overrides:
            config = config.copy(**config_overrides)
            if (
                isinstance(config, VideoPrismVisionConfig)
                and "num_labels" in config_overrides
                and "id2label" not in config_overrides
            ):
                config.id2label = None
                config._sync_labels()
        check_config_fits(config, checkpoint.state_dict, checkpoint.description)

        with torch.device("meta"):
            model = cls(config)
        state, missing = select_state_dict(model, checkpoint.state_dict, checkpoint.description)
        fresh = [k for k in missing if k in cls.fresh_keys]
        missing = [k for k in missing if k not in cls.fresh_keys]
        if missing:
            raise CheckpointError(
                f"{checkpoint.description} lacks weights of {cls.__name__}: {missing[:8]}"
                f"{f' (+{len(missing) - 8} more)' if len(missing) > 8 else ''}"
            )
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        # The checkpoint's tensors become the parameters (no second copy of the weights in memory).
        model.load_state_dict(state, strict=False, assign=True)
        del state
        checkpoint.state_dict = {}  # drop the last reference to tensors the model did not take
        _materialize_meta(model, dtype)
        if fresh:
            logger.warning("%s: %s are newly initialised; fine-tune them", cls.__name__, ", ".join(fresh))
            model.init_fresh_weights(fresh)
        model.after_load()
        if device is not None:
            model.to(device)
        model.set_attn_implementation(attn_implementation)
        model.name_or_path = checkpoint.description
        return model.eval()

    @torch.no_grad()
    def init_fresh_weights(self, names: list[str]) -> None:
        """Initialises the parameters `names` as in training from scratch (truncated normal, zero biases)."""
        params = dict(self.named_parameters())
        for name in names:
            if name.endswith("bias"):
                params[name].zero_()
            else:
                torch.nn.init.trunc_normal_(params[name], std=self.config.initializer_range)

    def save_pretrained(self, folder: str | os.PathLike, max_shard_size: int = 5 * 2**30) -> None:
        """Writes config.json + model.safetensors (sharded past `max_shard_size` bytes) in transformers' format."""
        from safetensors.torch import save_file

        self.before_save()
        os.makedirs(folder, exist_ok=True)
        config = self.config.to_dict()
        config["architectures"] = [type(self).__name__]
        with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        shards, current, size = [], {}, 0
        for key, value in state.items():
            nbytes = value.numel() * value.element_size()
            if current and size + nbytes > max_shard_size:
                shards.append(current)
                current, size = {}, 0
            current[key] = value
            size += nbytes
        shards.append(current)
        if len(shards) == 1:
            save_file(shards[0], os.path.join(folder, WEIGHTS_NAME), metadata={"format": "pt"})
            return
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(folder, name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(v.numel() * v.element_size() for v in state.values())
        with open(os.path.join(folder, WEIGHTS_INDEX_NAME), "w", encoding="utf-8") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
