"""The original Flax `.npz` checkpoints -> transformers-format state dicts, in one table.

Layout of the released `flax_*_repeated.npz` files:
* keys are '/'-joined Flax paths starting with `params/`; LvT files put the video encoder under `vision_encoder/`;
* transformer stacks were built with scan, so every tensor under `x_layers/` has a leading layer axis;
* dense kernels are [in, out] (torch Linear wants [out, in]);
* q/k/v `w` is [D, heads, head_dim] used as '...D,DNH->...NH'; `post/w` is stored the same way but used as
  '...NH,DNH->...D', so it is already torch's [out=D, in=heads*head_dim] once flattened;
* LayerNorm `scale` holds (scale - 1), exactly what the transformers `weight` holds;
* the patch kernel is [P*P*3, D] with rows ordered (p, q, c).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable

import numpy as np
import torch

from .errors import CheckpointError


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _kernel(a: np.ndarray) -> np.ndarray:  # [in, out] -> [out, in]
    _rank(a, 2)
    return a.T


def _heads_in(a: np.ndarray) -> np.ndarray:  # [D, N, H] -> [N*H, D]
    _rank(a, 3)
    return a.reshape(a.shape[0], -1).T


def _heads_out(a: np.ndarray) -> np.ndarray:  # [D, N, H] -> [D, N*H]
    _rank(a, 3)
    return a.reshape(a.shape[0], -1)


def _flat(a: np.ndarray) -> np.ndarray:  # [N, H] -> [N*H]
    _rank(a, 2)
    return a.reshape(-1)


def _vector(a: np.ndarray) -> np.ndarray:
    _rank(a, 1)
    return a


def _add_batch_axis(a: np.ndarray) -> np.ndarray:  # [L, D] -> [1, L, D]
    _rank(a, 2)
    return a[None]


def _patch_kernel(a: np.ndarray) -> np.ndarray:  # [P*P*3, D] rows (p, q, c) -> Conv3d [D, 3, 1, P, P]
    _rank(a, 2)
    p = int(round((a.shape[0] / 3) ** 0.5))
    if p * p * 3 != a.shape[0]:
        raise CheckpointError(f"patch kernel has {a.shape[0]} rows; expected P*P*3")
    return a.reshape(p, p, 3, a.shape[1]).transpose(3, 2, 0, 1)[:, :, None]


def _rank(a: np.ndarray, rank: int) -> None:
    if a.ndim != rank:
        raise CheckpointError(f"expected a rank-{rank} tensor, got shape {a.shape}")


# One transformer block: Flax suffix under x_layers/ -> transformers suffix under layers.{i}.
BLOCK_TABLE: tuple[tuple[str, str, Callable], ...] = (
    ("layer_norm/scale", "layernorm_before.weight", _vector),
    ("layer_norm/bias", "layernorm_before.bias", _vector),
    ("self_attention/query/w", "attention.q_proj.weight", _heads_in),
    ("self_attention/query/b", "attention.q_proj.bias", _flat),
    ("self_attention/key/w", "attention.k_proj.weight", _heads_in),
    ("self_attention/key/b", "attention.k_proj.bias", _flat),
    ("self_attention/value/w", "attention.v_proj.weight", _heads_in),
    ("self_attention/value/b", "attention.v_proj.bias", _flat),
    ("self_attention/post/w", "attention.o_proj.weight", _heads_out),
    ("self_attention/post/b", "attention.o_proj.bias", _vector),
    ("ff_layer/layer_norm/scale", "layernorm_after.weight", _vector),
    ("ff_layer/layer_norm/bias", "layernorm_after.bias", _vector),
    ("ff_layer/ffn_layer1/linear/kernel", "mlp.fc1.weight", _kernel),
    ("ff_layer/ffn_layer1/linear/bias", "mlp.fc1.bias", _vector),
    ("ff_layer/ffn_layer2/linear/kernel", "mlp.fc2.weight", _kernel),
    ("ff_layer/ffn_layer2/linear/bias", "mlp.fc2.bias", _vector),
)

# Stacks with a leading layer axis: (Flax prefix, transformers prefix); "{v}"/"{t}" mark the video-encoder prefixes.
STACK_TABLE: tuple[tuple[str, str], ...] = (
    ("{v}spatial_encoder/transformers_stack/x_layers/", "{t}spatial_layers"),
    ("{v}temporal_encoder/transformers_stack/x_layers/", "{t}temporal_layers"),
    ("auxiliary_encoder/transformers_stack/x_layers/", "video_model.auxiliary_layers"),
    ("text_encoder/unimodal_transformer/x_layers/", "text_model.layers"),
)

# Single tensors: Flax path -> transformers name.
TENSOR_TABLE: tuple[tuple[str, str, Callable], ...] = (
    ("{v}patch_projection/linear/kernel", "{t}spatial_embeddings.patch_embeddings.projection.weight", _patch_kernel),
    ("{v}patch_projection/linear/bias", "{t}spatial_embeddings.patch_embeddings.projection.bias", _vector),
    ("{v}spatial_pos_emb/emb_var", "{t}spatial_embeddings.position_embeddings", _add_batch_axis),
    ("{v}spatial_ln/scale", "{t}layernorm1.weight", _vector),
    ("{v}spatial_ln/bias", "{t}layernorm1.bias", _vector),
    ("{v}temporal_pos_emb/emb_var", "{t}temporal_embeddings.position_embeddings", _add_batch_axis),
    ("{v}temporal_ln/scale", "{t}layernorm2.weight", _vector),
    ("{v}temporal_ln/bias", "{t}layernorm2.bias", _vector),
    ("contrastive_vision_pooler/pooling_attention_query", "video_model.head.pooling_attention_query", _add_batch_axis),
    ("contrastive_vision_pooler/pooling_attention/query/w", "video_model.head.q_proj.weight", _heads_in),
    ("contrastive_vision_pooler/pooling_attention/query/b", "video_model.head.q_proj.bias", _flat),
    ("contrastive_vision_pooler/pooling_attention/key/w", "video_model.head.k_proj.weight", _heads_in),
    ("contrastive_vision_pooler/pooling_attention/key/b", "video_model.head.k_proj.bias", _flat),
    ("contrastive_vision_pooler/pooling_attention/value/w", "video_model.head.v_proj.weight", _heads_in),
    ("contrastive_vision_pooler/pooling_attention/value/b", "video_model.head.v_proj.bias", _flat),
    ("contrastive_vision_pooler/pooling_attention/post/w", "video_model.head.o_proj.weight", _heads_out),
    ("contrastive_vision_pooler/pooling_attention/post/b", "video_model.head.o_proj.bias", _vector),
    (
        "contrastive_vision_pooler/pooling_attention/per_dim_scale/per_dim_scale",
        "video_model.head.per_dim_scale",
        _vector,
    ),
    ("contrastive_vision_pooler/pooling_attention_layer_norm/scale", "video_model.head_layernorm.weight", _vector),
    ("contrastive_vision_pooler/pooling_attention_layer_norm/bias", "video_model.head_layernorm.bias", _vector),
    ("text_encoder/token_emb/emb_var", "text_model.embeddings.token_embedding.weight", _same),
    ("text_encoder/cls_emb", "text_model.embeddings.cls_emb", _same),
    ("text_encoder/unimodal_ln/scale", "text_model.layernorm.weight", _vector),
    ("text_encoder/unimodal_ln/bias", "text_model.layernorm.bias", _vector),
)


def is_lvt(keys) -> bool:
    """LvT files nest the video encoder under `vision_encoder/`; video-only files do not."""
    return any(k.startswith("params/vision_encoder/") for k in keys)


def flax_to_state_dict(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Converts a whole Flax checkpoint; every tensor must be used exactly once.

    Video-only files become `VideoPrismVisionModel` names; LvT files become `VideoPrismClipModel` names.
    """
    lvt = is_lvt(arrays)
    prefixes = {"v": "vision_encoder/", "t": "video_model.vision_model."} if lvt else {"v": "", "t": ""}
    remaining = {k.removeprefix("params/"): k for k in arrays}
    out: dict[str, torch.Tensor] = {}

    def take(flax_name: str) -> np.ndarray | None:
        full = remaining.pop(flax_name, None)
        return None if full is None else np.asarray(arrays[full])

    def put(name: str, value: np.ndarray, source: str) -> None:
        if name in out:
            raise CheckpointError(f"two Flax tensors map to {name} (second: {source})")
        out[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))

    for flax_name, torch_name, convert in TENSOR_TABLE:
        flax_name, torch_name = flax_name.format(**prefixes), torch_name.format(**prefixes)
        value = take(flax_name)
        if value is not None:
            try:
                put(torch_name, convert(value), flax_name)
            except CheckpointError as err:
                raise CheckpointError(f"{flax_name}: {err}") from None

    for flax_prefix, torch_prefix in STACK_TABLE:
        flax_prefix, torch_prefix = flax_prefix.format(**prefixes), torch_prefix.format(**prefixes)
        for suffix, torch_suffix, convert in BLOCK_TABLE:
            value = take(flax_prefix + suffix)
            if value is None:
                continue
            for i, layer in enumerate(value):  # leading layer axis from the scanned stack
                try:
                    put(f"{torch_prefix}.{i}.{torch_suffix}", convert(layer), flax_prefix + suffix)
                except CheckpointError as err:
                    raise CheckpointError(f"{flax_prefix + suffix}[{i}]: {err}") from None

    if remaining:
        raise CheckpointError(
            f"Flax checkpoint has tensors this converter does not know: {sorted(remaining.values())[:8]}"
        )
    if not out:
        raise CheckpointError("Flax checkpoint holds no VideoPrism tensors")
    return out


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads every array of an `.npz` without pickle."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise CheckpointError(
            f"{path} is not a readable .npz file, truncated or damaged ({type(err).__name__}: {err}); download it again"
        ) from err
    if not arrays or not all(k.startswith("params/") for k in arrays):
        raise CheckpointError(f"{path} is not a VideoPrism Flax checkpoint: its keys do not start with 'params/'")
    return arrays
