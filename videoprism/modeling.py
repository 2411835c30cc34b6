"""The VideoPrism model family: blocks first, then the five public model classes (outputs in `outputs.py`).

Arithmetic follows the original JAX/Flax release (google-deepmind/videoprism); state-dict names follow
transformers 5.23 so checkpoints move both ways.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ._attention import ATTENTION_FUNCTIONS, AttentionChoice, check_implementation, reference_attention
from ._blocks import layer_in_blocks, runs_blockwise
from ._gemm import Linear, linear
from ._input_checks import check_frame_mask, check_video
from ._loading import PreTrainedMixin
from ._numerics import l2_normalize, resize_positions, text_sinusoid
from .configuration import VideoPrismConfig, VideoPrismTextConfig, VideoPrismVisionConfig
from .outputs import (
    VideoPrismClassifierOutput,
    VideoPrismClipOutput,
    VideoPrismTextOutput,
    VideoPrismVideoOutput,
    VideoPrismVisionOutput,
)

# ----------------------------------------------------------------------------------------------------------------
# Blocks


class VideoPrismLayerNorm(nn.Module):
    """LayerNorm whose stored weight is (scale - 1): the original applies (1 + scale)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self._scale: tuple[torch.Tensor, int, torch.Tensor] | None = None  # (weight's storage, its version, weight + 1)

    def scale(self) -> torch.Tensor:
        """`weight + 1`, folded once per weight version; recomputed where gradients or a compiled graph need it."""
        weight = self.weight
        if (
            torch.compiler.is_compiling()
            or (weight.requires_grad and torch.is_grad_enabled())
            or torch.is_inference(weight)  # no version counter to tell an in-place update
        ):
            return weight + 1.0
        cached = self._scale
        # Holding the weight's storage keeps its address from being reused, so the same address means the same data.
        fresh = (
            cached is not None
            and cached[0].data_ptr() == weight.data_ptr()
            and cached[0].dtype == weight.dtype
            and cached[0].device == weight.device
            and cached[1] == weight._version
        )
        if not fresh:
            with torch.no_grad():
                self._scale = cached = (weight.detach(), weight._version, weight + 1.0)
        return cached[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.scale(), self.bias, self.eps)


class VideoPrismAttention(nn.Module):
    """Multi-head self-attention with biases on q/k/v/out, q scaled by Dh^-0.5, and a tanh logit soft cap."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        softcap: float,
        qkv_bias: bool = True,
        attention: AttentionChoice | None = None,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.softcap = softcap
        self.attention_choice = attention if attention is not None else AttentionChoice()
        self.q_proj = Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.k_proj = Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.v_proj = Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.o_proj = Linear(hidden_size, hidden_size)
        # Whether `fused_qkv` keeps its result: worth its memory (3 D^2 per layer) where inputs are short, as in the
        # text tower, where rebuilding it would be a sizeable share of each call.
        self.cache_fused_qkv = False
        self._qkv: tuple | None = None  # (the q/k/v tensors' storages, their (address, dtype, device, version), fused)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _build_qkv(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        q_scale = self.head_dim**-0.5 / (self.softcap or 1.0)
        weight = torch.cat([self.q_proj.weight * q_scale, self.k_proj.weight, self.v_proj.weight])
        if self.q_proj.bias is None:
            return weight, None
        return weight, torch.cat([self.q_proj.bias * q_scale, self.k_proj.bias, self.v_proj.bias])

    def fused_qkv(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One (3D, D) projection whose query rows carry Dh**-0.5 / cap, so no pass over q or the scores scales.

        With `cache_fused_qkv`, built once per version of the six q/k/v tensors (like `VideoPrismLayerNorm.scale`);
        rebuilt where gradients or a compiled graph need it."""
        if not self.cache_fused_qkv:
            return self._build_qkv()
        sources = [
            p for proj in (self.q_proj, self.k_proj, self.v_proj) for p in (proj.weight, proj.bias) if p is not None
        ]
        if (
            torch.compiler.is_compiling()
            or (torch.is_grad_enabled() and any(p.requires_grad for p in sources))
            or any(torch.is_inference(p) for p in sources)  # no version counter to tell an in-place update
        ):
            return self._build_qkv()
        # Holding the sources' storages keeps their addresses from being reused: same address, same data.
        key = [(p.data_ptr(), p.dtype, p.device, p._version) for p in sources]
        cached = self._qkv
        if cached is None or cached[1] != key:
            with torch.no_grad():
                self._qkv = cached = ([p.detach() for p in sources], key, self._build_qkv())
        return cached[2]

    def _apply(self, *args, **kwargs):
        self._qkv = None  # .to() / .cuda() / .half(): drop the fused copy (and the old weights it holds) now
        return super()._apply(*args, **kwargs)

    def implementation(self, x: torch.Tensor) -> str:
        return self.attention_choice.kernel(x.device)

    def project(self, x: torch.Tensor, qkv=None) -> torch.Tensor:
        """(B, L, 3, H, Dh) heads from one fused projection, q pre-scaled for the fast paths; `qkv`: `fused_qkv()`
        when the caller already has it."""
        return linear(x, *(qkv or self.fused_qkv())).unflatten(-1, (3, self.num_heads, self.head_dim))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        """The fast exact path on (B, H, L, Dh) heads from `project`."""
        return ATTENTION_FUNCTIONS[self.attention_choice.kernel_for(q, k)](q, k, v, allowed, self.softcap)

    def merge(self, heads: torch.Tensor) -> torch.Tensor:
        """(B, H, L, Dh) -> output projection (B, L, D)."""
        return self.o_proj(heads.transpose(1, 2).flatten(2))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None = None, output_attentions: bool = False, qkv=None):
        if self.implementation(x) == "eager" or output_attentions:
            q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
            out, probs = reference_attention(
                q, k, v, allowed, self.softcap, self.head_dim**-0.5, output_attentions=output_attentions
            )
            return self.merge(out), probs
        heads = self.project(x, qkv).permute(2, 0, 3, 1, 4)  # (B, L, 3, H, Dh) -> (3, B, H, L, Dh), a view
        kernel = self.attention_choice.kernel_for(heads[0], heads[1])
        if kernel != "flex":  # flex reads strided heads and writes in q's layout, so merging the heads copies nothing
            heads = heads.contiguous()  # one copy; q, k, v are then contiguous per head
        q, k, v = heads.unbind(0)
        return self.merge(ATTENTION_FUNCTIONS[kernel](q, k, v, allowed, self.softcap)), None


class VideoPrismMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, activation: str):
        super().__init__()
        self.fc1 = Linear(hidden_size, intermediate_size)
        self.fc2 = Linear(intermediate_size, hidden_size)
        # Exact erf GELU in the video towers (tanh-GELU is off by ~1e-3), ReLU in the text tower.
        self.relu = activation == "relu"
        self.act = nn.ReLU() if self.relu else nn.GELU(approximate="none")

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.fc1(x)
        # In place when no gradient is needed: one 4D-wide activation less to allocate.
        if torch.is_grad_enabled():
            hidden = self.act(hidden)
        else:
            hidden = hidden.relu_() if self.relu else torch.ops.aten.gelu_(hidden)
        if keep is not None:
            # The original zeroes padded positions after each FFN matmul (W1 branch and W2 bias alike).
            return self.fc2(hidden * keep) * keep
        return self.fc2(hidden)


class VideoPrismLayer(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self, hidden_size, num_heads, intermediate_size, activation, softcap, eps, qkv_bias=True, attention=None
    ):
        super().__init__()
        self.layernorm_before = VideoPrismLayerNorm(hidden_size, eps)
        self.attention = VideoPrismAttention(hidden_size, num_heads, softcap, qkv_bias, attention)
        self.layernorm_after = VideoPrismLayerNorm(hidden_size, eps)
        self.mlp = VideoPrismMLP(hidden_size, intermediate_size, activation)

    @classmethod
    def from_config(
        cls, config: VideoPrismVisionConfig | VideoPrismTextConfig, attention: AttentionChoice | None = None
    ) -> VideoPrismLayer:
        return cls(
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            config.hidden_act,
            config.attn_logit_softcapping,
            config.layer_norm_eps,
            config.qkv_bias,
            attention,
        )

    def forward(self, x, allowed=None, keep=None, output_attentions=False, out=None):
        """`out`: where CPU inference, which runs in blocks (see `_blocks`), may write the result (may be `x`)."""
        if not output_attentions and runs_blockwise(x):
            return layer_in_blocks(self, x, allowed, keep, out), None
        attn, probs = self.attention(self.layernorm_before(x), allowed, output_attentions)
        x = x + attn
        x = x + self.mlp(self.layernorm_after(x), keep)
        return x, probs


def _run_layers(layers, x, allowed=None, keep=None, output_hidden_states=False, output_attentions=False):
    states = (x,) if output_hidden_states else None
    probs_all = () if output_attentions else None
    for index, layer in enumerate(layers):
        # After the first layer x is this loop's own tensor: blockwise inference may overwrite it in place.
        reuse = x if index and not output_hidden_states else None
        x, probs = layer(x, allowed, keep, output_attentions, out=reuse)
        if output_hidden_states:
            states += (x,)
        if output_attentions:
            probs_all += (probs,)
    return x, states, probs_all


class VideoPrismPatchEmbeddings(nn.Module):
    """Non-overlapping P x P patches, token index row * G + col, as a Conv3d-shaped weight (D, 3, 1, P, P)."""

    def __init__(self, config: VideoPrismVisionConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.projection = nn.Conv3d(
            config.num_channels, config.hidden_size, kernel_size=config.tubelet_size, stride=config.tubelet_size
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        n, c, h, w = frames.shape
        p = self.patch_size
        patches = frames.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c * p * p)
        weight = self.projection.weight.reshape(self.projection.weight.shape[0], -1)
        return linear(patches, weight, self.projection.bias)


class VideoPrismSpatialEmbeddings(nn.Module):
    def __init__(self, config: VideoPrismVisionConfig):
        super().__init__()
        self.grid = config.image_size // config.patch_size
        self.patch_embeddings = VideoPrismPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid * self.grid, config.hidden_size))

    def positions(self, grid: int) -> torch.Tensor:
        return resize_positions(self.position_embeddings[0], (self.grid, self.grid), (grid, grid))


class VideoPrismTemporalEmbeddings(nn.Module):
    def __init__(self, config: VideoPrismVisionConfig):
        super().__init__()
        self.num_frames = config.num_frames
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_frames, config.hidden_size))

    def positions(self, num_frames: int) -> torch.Tensor:
        return resize_positions(self.position_embeddings[0], (self.num_frames,), (num_frames,))


class VideoPrismAttentionPooler(nn.Module):
    """One learned query attends over tokens: head dim 4D/heads, query scaled by
    1.442695041 / sqrt(Dh) * softplus(per_dim_scale) (the original's PerDimScale), no soft cap, no mask."""

    def __init__(self, config: VideoPrismVisionConfig, attention: AttentionChoice | None = None):
        super().__init__()
        width = config.pooler_size
        self.num_heads = config.num_attention_heads
        self.head_dim = width // self.num_heads
        self.attention_choice = attention if attention is not None else AttentionChoice()
        self.pooling_attention_query = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.q_proj = Linear(config.hidden_size, width)
        self.k_proj = Linear(config.hidden_size, width)
        self.v_proj = Linear(config.hidden_size, width)
        self.o_proj = Linear(width, config.hidden_size)
        self.per_dim_scale = nn.Parameter(torch.zeros(self.head_dim))

    def _query(self) -> torch.Tensor:
        scale = 1.442695041 / math.sqrt(self.head_dim) * F.softplus(self.per_dim_scale)
        return self.q_proj(self.pooling_attention_query[0, 0]).view(self.num_heads, self.head_dim) * scale

    def forward(self, tokens: torch.Tensor, output_attentions: bool = False):
        """Pools (B, S, D) tokens to (B, D)."""
        q = self._query()
        if self.attention_choice.name == "eager" or output_attentions:
            k = self.k_proj(tokens).unflatten(-1, (self.num_heads, self.head_dim))
            v = self.v_proj(tokens).unflatten(-1, (self.num_heads, self.head_dim))
            scores = torch.einsum("hd,bshd->bhs", q, k).float()
            probs = torch.softmax(scores, dim=-1).to(v.dtype)
            pooled = torch.einsum("bhs,bshd->bhd", probs, v)
            return self.o_proj(pooled.flatten(1)), (probs if output_attentions else None)
        # Same arithmetic with the single query folded into the key weights, so the (B, S, 4D) key and value
        # projections are never formed: scores = x . (Wk_h^T q_h) + q_h . bk_h; values = Wv_h (sum_s p_s x_s) + bv_h.
        w_k = self.k_proj.weight.view(self.num_heads, self.head_dim, -1)
        key_dirs = torch.einsum("hd,hdc->hc", q, w_k)
        scores = torch.matmul(tokens, key_dirs.T).transpose(1, 2) + (q * self.k_proj.bias.view_as(q)).sum(-1)[:, None]
        probs = torch.softmax(scores.float(), dim=-1).to(tokens.dtype)
        context = torch.matmul(probs, tokens)  # (B, H, D)
        w_v = self.v_proj.weight.view(self.num_heads, self.head_dim, -1)
        pooled = torch.einsum("bhc,hdc->bhd", context, w_v) + self.v_proj.bias.view(self.num_heads, self.head_dim)
        return self.o_proj(pooled.flatten(1)), None


# ----------------------------------------------------------------------------------------------------------------
# Models

# Where each model's weights sit in the checkpoints of the larger models.
CHECKPOINT_PREFIXES = ("", "video_model.", "vision_model.", "video_model.vision_model.", "text_model.")


def _fit_widths(config, state: dict[str, torch.Tensor]):

    def width(suffix: str) -> int | None:
        for prefix in CHECKPOINT_PREFIXES:
            if prefix + suffix in state:
                return state[prefix + suffix].shape[0]
        return None

    if isinstance(config, VideoPrismConfig):
        return VideoPrismConfig(_fit_widths(config.vision_config, state), _fit_widths(config.text_config, state))
    if isinstance(config, VideoPrismVisionConfig):
        pooler = width("head.q_proj.weight")
        if pooler is not None and pooler != config.pooler_size:
            config = config.copy(pooler_intermediate_size=pooler)
    if isinstance(config, VideoPrismTextConfig):
        mlp = width("layers.0.mlp.fc1.weight")
        if mlp is not None and mlp != config.intermediate_size:
            config = config.copy(intermediate_size=mlp)
    return config


class VideoPrismPreTrainedModel(PreTrainedMixin, nn.Module):
    """Shared initialisation, attention switching and loading (`from_pretrained`, `save_pretrained`)."""

    config_class = VideoPrismVisionConfig
    # Whether the model holds the attention pooler (transformers derives its width from the MLP's).
    has_pooler = False

    def __init__(self, config, attention: AttentionChoice | None = None):
        super().__init__()
        self.config = config
        # One choice of attention kernel for the whole model, its sub-models included.
        self.attention_choice = attention if attention is not None else AttentionChoice()

    @property
    def attn_implementation(self) -> str:
        """The attention kernel's name ("auto" unless `set_attn_implementation` chose another)."""
        return self.attention_choice.name

    def set_attn_implementation(self, name: str | None) -> None:
        """Chooses the attention kernel of the whole model: "auto" (default) or a name in `ATTENTION_FUNCTIONS`.

        "auto": "chunked" on CPU; on CUDA "flex" for large 16-bit attention, "chunked" for fp32 and small attention
        (`_attention.kernel_for`). "chunked": exact, query blocks bound the memory. "flex": exact,
        torch flex_attention with the cap as a score_mod. "eager": the reference, all scores at once. "sdpa":
        APPROXIMATE, fused attention without the soft cap (warns once).
        """
        self.attention_choice.name = check_implementation(name)

    @classmethod
    def fit_config(cls, config, state: dict[str, torch.Tensor]):
        """Pooler and text-MLP widths are derived in the original (4 x D): take them from the checkpoint's shapes."""
        return _fit_widths(config, state)

    def before_save(self) -> None:
        if not self.has_pooler:
            return
        vision = self.config.vision_config if isinstance(self.config, VideoPrismConfig) else self.config
        if vision.pooler_size != vision.intermediate_size:
            warnings.warn(
                f"pooler width {vision.pooler_size} differs from intermediate_size {vision.intermediate_size}: "
                "this package reads the folder, but transformers 5.23 cannot (it derives the pooler width "
                "from intermediate_size)",
                stacklevel=3,
            )

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Random initialisation (truncated normal weights, zero biases, LayerNorm scale 1)."""
        for name, param in self.named_parameters():
            if param.is_meta:  # built only to receive a checkpoint's tensors
                continue
            if name.endswith("bias") or "layernorm" in name:
                param.zero_()
            elif name.endswith("per_dim_scale"):
                param.zero_()
            else:
                param.normal_(0.0, std).clamp_(-2 * std, 2 * std)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class VideoPrismVisionModel(VideoPrismPreTrainedModel):
    """The factorized video encoder: a spatial ViT per frame, then a temporal transformer per patch position."""

    config_class = VideoPrismVisionConfig
    checkpoint_prefixes = ("", "vision_model.", "video_model.vision_model.")

    def __init__(self, config: VideoPrismVisionConfig, attention: AttentionChoice | None = None):
        super().__init__(config, attention)
        self.spatial_embeddings = VideoPrismSpatialEmbeddings(config)
        self.temporal_embeddings = VideoPrismTemporalEmbeddings(config)
        self.spatial_layers = nn.ModuleList(
            VideoPrismLayer.from_config(config, self.attention_choice) for _ in range(config.num_spatial_layers)
        )
        self.temporal_layers = nn.ModuleList(
            VideoPrismLayer.from_config(config, self.attention_choice) for _ in range(config.num_temporal_layers)
        )
        self.layernorm1 = VideoPrismLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.layernorm2 = VideoPrismLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.init_weights(config.initializer_range)

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> VideoPrismVisionOutput:
        """Encodes `pixel_values_videos` (B, T, 3, H, W) in [0, 1].

        Args:
            frame_mask: (B, T), 1 = real frame, 0 = padded frame (the original's frame_paddings, inverted).
            interpolate_pos_encoding: Resize the position embeddings to another frame count or square size.
        """
        config = self.config
        check_video(pixel_values_videos, config, interpolate_pos_encoding)
        batch, frames, _, size, _ = pixel_values_videos.shape
        valid = check_frame_mask(frame_mask, batch, frames)
        grid = size // config.patch_size
        tokens = grid * grid
        dtype = self.spatial_embeddings.position_embeddings.dtype

        x = self.spatial_embeddings.patch_embeddings(pixel_values_videos.to(dtype).flatten(0, 1))
        x = x + self.spatial_embeddings.positions(grid)

        # Padded frames: every key of the frame is masked (uniform attention) and the FFN output is zeroed.
        allowed = keep = None
        if valid is not None:
            allowed = valid.reshape(batch * frames, 1, 1, 1)
            keep = valid.reshape(batch * frames, 1, 1).to(x.dtype)
        x, spatial_states, spatial_probs = _run_layers(
            self.spatial_layers, x, allowed, keep, output_hidden_states, output_attentions
        )
        spatial = self.layernorm1(x)

        x = spatial.reshape(batch, frames, tokens, -1).transpose(1, 2).reshape(batch * tokens, frames, -1)
        x = x + self.temporal_embeddings.positions(frames)
        if valid is not None:
            # Temporal stage: padded frames are masked as keys only, and FFN-zeroed.
            per_patch = valid[:, None, :].expand(batch, tokens, frames).reshape(batch * tokens, frames)
            allowed = per_patch[:, None, None, :]
            keep = per_patch[..., None].to(x.dtype)
        x, temporal_states, temporal_probs = _run_layers(
            self.temporal_layers, x, allowed, keep, output_hidden_states, output_attentions
        )
        x = self.layernorm2(x)

        def frame_major(t):  # (B*N, T, D) -> (B, T*N, D)
            return t.reshape(batch, tokens, frames, -1).transpose(1, 2).reshape(batch, frames * tokens, -1)

        hidden_states = None
        if output_hidden_states:
            hidden_states = tuple(s.reshape(batch, frames * tokens, -1) for s in spatial_states)
            hidden_states += tuple(frame_major(s) for s in temporal_states)
        return VideoPrismVisionOutput(
            last_hidden_state=frame_major(x),
            spatial_features=spatial.reshape(batch, frames * tokens, -1),
            hidden_states=hidden_states,
            attentions=(spatial_probs + temporal_probs) if output_attentions else None,
        )


class VideoPrismVideoModel(VideoPrismPreTrainedModel):
    """The LvT video tower: vision encoder, auxiliary layers over all T*N tokens, attention pooler, LayerNorm."""

    config_class = VideoPrismVisionConfig
    checkpoint_prefixes = ("", "video_model.")
    has_pooler = True

    def __init__(self, config: VideoPrismVisionConfig, attention: AttentionChoice | None = None):
        super().__init__(config, attention)
        self.vision_model = VideoPrismVisionModel(config, self.attention_choice)
        self.auxiliary_layers = nn.ModuleList(
            VideoPrismLayer.from_config(config, self.attention_choice) for _ in range(config.num_auxiliary_layers)
        )
        self.head = VideoPrismAttentionPooler(config, self.attention_choice)
        self.head_layernorm = VideoPrismLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.init_weights(config.initializer_range)

    def _pool(self, tokens: torch.Tensor, output_attentions: bool = False):
        pooled, probs = self.head(tokens, output_attentions)
        pooled = self.head_layernorm(pooled)
        return (l2_normalize(pooled) if self.config.apply_l2norm else pooled), probs

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        return_frame_embeds: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> VideoPrismVideoOutput:
        """Embeds videos (B, T, 3, H, W) to `pooler_output` (B, D); `frame_embeds` (B, T, D) on request.

        The auxiliary layers and the pooler see padded frames too, as in the original.
        """
        vision = self.vision_model(
            pixel_values_videos, frame_mask, interpolate_pos_encoding, output_hidden_states, output_attentions
        )
        x, aux_states, aux_probs = _run_layers(
            self.auxiliary_layers, vision.last_hidden_state, None, None, output_hidden_states, output_attentions
        )
        video_embeds, pool_probs = self._pool(x, output_attentions)
        frame_embeds = None
        if return_frame_embeds:
            batch, frames = pixel_values_videos.shape[:2]
            frame_embeds = self._pool(x.reshape(batch * frames, -1, x.shape[-1]))[0].reshape(batch, frames, -1)
        return VideoPrismVideoOutput(
            pooler_output=video_embeds,
            last_hidden_state=x,
            frame_embeds=frame_embeds,
            vision_model_output=vision,
            hidden_states=(vision.hidden_states + aux_states[1:]) if output_hidden_states else None,
            attentions=(vision.attentions + aux_probs + (pool_probs,)) if output_attentions else None,
        )


class VideoPrismTextEmbeddings(nn.Module):
    def __init__(self, config: VideoPrismTextConfig):
        super().__init__()
        # `_weight` skips nn.Embedding's own init (init_weights sets it; on meta it would import torch._dynamo).
        weight = torch.empty(config.vocab_size, config.hidden_size)
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size, _weight=weight)
        self.cls_emb = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        # Kept for transformers' checkpoint format only (filled by reset_position_buffers); forward recomputes
        # the original table.
        self.register_buffer("position_embedding", torch.empty(config.max_position_embeddings, config.hidden_size))
        self.register_buffer("position_ids", torch.empty(1, config.max_position_embeddings, dtype=torch.long))


class VideoPrismTextModel(VideoPrismPreTrainedModel):
    """The LvT text tower: causal transformer whose CLS token, appended after the padded text, is the embedding."""

    config_class = VideoPrismTextConfig
    checkpoint_prefixes = ("", "text_model.")

    def __init__(self, config: VideoPrismTextConfig, attention: AttentionChoice | None = None):
        super().__init__(config, attention)
        self.embeddings = VideoPrismTextEmbeddings(config)
        self.layers = nn.ModuleList(
            VideoPrismLayer.from_config(config, self.attention_choice) for _ in range(config.num_hidden_layers)
        )
        for layer in self.layers:  # a text query is a few tokens: rebuilding the fused q/k/v weight would dominate
            layer.attention.cache_fused_qkv = True
        self.layernorm = VideoPrismLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.init_weights(config.initializer_range)

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        super().init_weights(std)
        if not self.embeddings.position_ids.is_meta:
            self.reset_position_buffers()

    def after_load(self) -> None:
        self.reset_position_buffers()

    def reset_position_buffers(self) -> None:
        """Writes the original sinusoid into the checkpoint buffer (transformers reads it from there)."""
        emb = self.embeddings
        emb.position_embedding.copy_(text_sinusoid(*emb.position_embedding.shape))
        emb.position_ids.copy_(torch.arange(emb.position_ids.shape[-1])[None])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> VideoPrismTextOutput:
        """Embeds `input_ids` (B, L), right-padded; `attention_mask` (B, L) with 1 = real token.

        Always causal, with or without a mask: the CLS token at the end sees exactly the real tokens.
        """
        config = self.config
        input_ids = torch.as_tensor(input_ids)
        if input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(
                f"input_ids must be integer (batch, length), got {tuple(input_ids.shape)} {input_ids.dtype}"
            )
        batch, length = input_ids.shape
        if length > config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {length} tokens; the model takes at most {config.max_position_embeddings} "
                "(VideoPrismTokenizer truncates to that)"
            )
        checkable = input_ids.numel() and not torch.compiler.is_compiling()  # a compiled graph cannot branch on data
        # One host read (a GPU sync when the ids live there).
        if checkable and bool(((input_ids < 0) | (input_ids >= config.vocab_size)).any()):
            raise ValueError(
                f"input_ids must lie in [0, {config.vocab_size}); got {int(input_ids.min())}..{int(input_ids.max())}"
            )
        emb = self.embeddings
        device = emb.cls_emb.device
        dtype = emb.cls_emb.dtype
        scale = config.hidden_size**0.5
        x = emb.token_embedding(input_ids.to(device)) * scale
        x = x + text_sinusoid(length, config.hidden_size, device).to(dtype)
        # One CLS token appended after the padded text, with no position embedding.
        x = torch.cat([x, (emb.cls_emb * scale).expand(batch, 1, -1)], dim=1)

        steps = torch.arange(length + 1, device=device)
        allowed = (steps[None, :] <= steps[:, None])[None, None]  # causal
        keep = None
        if attention_mask is not None:
            attention_mask = torch.as_tensor(attention_mask, device=device)
            if tuple(attention_mask.shape) != (batch, length):
                raise ValueError(f"attention_mask must have shape {(batch, length)}, got {tuple(attention_mask.shape)}")
            real = torch.cat([attention_mask.bool(), torch.ones(batch, 1, dtype=torch.bool, device=device)], dim=1)
            # As the original merges paddings with the causal mask: a padded query sees no key at all.
            allowed = allowed & real[:, None, None, :] & real[:, None, :, None]
            keep = real[..., None].to(dtype)
        x, states, probs = _run_layers(self.layers, x, allowed, keep, output_hidden_states, output_attentions)
        x = self.layernorm(x)
        text_embeds = x[:, -1]
        if config.apply_l2norm:
            text_embeds = l2_normalize(text_embeds)
        return VideoPrismTextOutput(
            pooler_output=text_embeds, last_hidden_state=x, hidden_states=states, attentions=probs
        )


class VideoPrismClipModel(VideoPrismPreTrainedModel):
    """Video-text (LvT) model: `video_model` + `text_model`, scored by cosine / temperature."""

    config_class = VideoPrismConfig
    has_pooler = True

    def __init__(self, config: VideoPrismConfig):
        super().__init__(config)
        self.video_model = VideoPrismVideoModel(config.vision_config, self.attention_choice)
        self.text_model = VideoPrismTextModel(config.text_config, self.attention_choice)

    def after_load(self) -> None:
        self.text_model.after_load()

    def get_video_features(self, pixel_values_videos, frame_mask=None, interpolate_pos_encoding=False) -> torch.Tensor:
        """Video embeddings (B, D)."""
        return self.video_model(pixel_values_videos, frame_mask, interpolate_pos_encoding).pooler_output

    def get_text_features(self, input_ids, attention_mask=None) -> torch.Tensor:
        """Text embeddings (B, D)."""
        return self.text_model(input_ids, attention_mask).pooler_output

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        temperature: float = 0.01,
        return_loss: bool = False,
    ) -> VideoPrismClipOutput:
        """Scores every video against every text: `logits_per_video` (Bv, Bt) = cosine / temperature.

        `loss` (return_loss=True) is the symmetric cross-entropy of matching pairs (needs Bv == Bt).
        """
        if not temperature or temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        # Text first: its input check reads the ids on the host, which on a GPU would otherwise wait for the video.
        text = self.text_model(input_ids, attention_mask)
        video = self.video_model(pixel_values_videos, frame_mask, interpolate_pos_encoding)
        with torch.autocast(video.pooler_output.device.type, enabled=False):  # logits amplify errors 1/temperature x
            similarity = video.pooler_output.float() @ text.pooler_output.float().T
        logits_per_video = similarity / temperature
        loss = None
        if return_loss:
            if logits_per_video.shape[0] != logits_per_video.shape[1]:
                raise ValueError(
                    f"return_loss needs one text per video (matching pairs), got {logits_per_video.shape[0]} videos "
                    f"and {logits_per_video.shape[1]} texts"
                )
            target = torch.arange(logits_per_video.shape[0], device=logits_per_video.device)
            loss = (F.cross_entropy(logits_per_video, target) + F.cross_entropy(logits_per_video.T, target)) / 2
        return VideoPrismClipOutput(
            logits_per_video=logits_per_video,
            logits_per_text=logits_per_video.T,
            video_embeds=video.pooler_output,
            text_embeds=text.pooler_output,
            loss=loss,
            video_model_output=video,
            text_model_output=text,
        )


class VideoPrismForVideoClassification(VideoPrismPreTrainedModel):
    """Vision encoder, attention pooler and LayerNorm, then a linear classifier over `num_labels`."""

    config_class = VideoPrismVisionConfig
    checkpoint_prefixes = ("", "video_model.")
    has_pooler = True
    # A classifier fine-tuned from a video or LvT checkpoint starts with a fresh linear layer.
    fresh_keys = ("classifier.weight", "classifier.bias")

    def __init__(self, config: VideoPrismVisionConfig):
        if config.num_labels is None:
            config = config.copy(num_labels=2)
        super().__init__(config)
        self.vision_model = VideoPrismVisionModel(config, self.attention_choice)
        self.head = VideoPrismAttentionPooler(config, self.attention_choice)
        self.head_layernorm = VideoPrismLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.init_weights(config.initializer_range)

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        labels: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> VideoPrismClassifierOutput:
        """`logits` (B, num_labels); `loss` when `labels` are given: class ids (B,) -> cross-entropy, float
        targets (B, num_labels) -> binary cross-entropy (multi-label), num_labels == 1 -> mean squared error."""
        vision = self.vision_model(
            pixel_values_videos, frame_mask, interpolate_pos_encoding, output_hidden_states, output_attentions
        )
        pooled, _ = self.head(vision.last_hidden_state)
        logits = self.classifier(self.head_layernorm(pooled))
        loss = None
        if labels is not None:
            labels = torch.as_tensor(labels, device=logits.device)
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float().reshape(-1))
            elif labels.is_floating_point():
                if labels.shape != logits.shape:
                    raise ValueError(f"float labels must have shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
            else:
                if labels.shape != logits.shape[:1]:
                    raise ValueError(f"integer labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
                loss = F.cross_entropy(logits.float(), labels)
        return VideoPrismClassifierOutput(
            logits=logits, loss=loss, hidden_states=vision.hidden_states, attentions=vision.attentions
        )


MODEL_CLASSES = (
    VideoPrismVisionModel,
    VideoPrismVideoModel,
    VideoPrismTextModel,
    VideoPrismClipModel,
    VideoPrismForVideoClassification,
)
