"""The model side of the collection tools: `VideoEmbedder` turns pre-processed clips into embeddings.

What each checkpoint gives. A video-text (LvT) checkpoint gives its video embedding (the attention-pooled,
L2-normalised output of the video tower, ``get_video_features``); ``frames=True`` adds the per-frame embeddings (the
same pooler applied to each frame's tokens). A video-only encoder (``VideoPrismVisionModel``, the
``videoprism-base/large`` checkpoints) has no pooler: its embedding is the mean of all its spatiotemporal output
tokens (per frame: the mean of that frame's tokens). A classifier checkpoint gives its pooler's output before the
classifier layer. The embedder leaves video embeddings as the model gives them: the store normalises the rows it
writes, and search and zero-shot scoring normalise their inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from .._cpu import cpu_flags
from .._gemm import cpu_gemm
from .._sources import ModelSource, resolve_source
from ..configuration import DTYPE_NAMES
from ..errors import CheckpointError, DeviceError, EmbedSettingsError

__all__ = [
    "DEFAULT_MODEL",
    "DTYPES",
    "VideoEmbedder",
    "auto_dtype",
    "cpu_has_native_bf16",
    "load_processor",
    "load_video_embedder",
    "require_finite",
    "resolve_device",
    "resolve_dtype",
]

DEFAULT_MODEL = "google/videoprism-lvt-base-f16r288"

#: Weight dtypes by name, as the command line and the collection tools accept them (besides "auto": `auto_dtype`).
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
#: /proc/cpuinfo flags of CPUs that compute bfloat16 matrix products in hardware (AMX tiles, AVX-512 BF16 dot products).
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device for ``device``: "auto" (or None) is CUDA when available, else the CPU.

    Raises:
        DeviceError: ``device`` names no device type, a device this machine lacks (CUDA on a CPU-only torch, a GPU
            index past the last), or one that holds no data (``meta``); on the CPU, a bad ``VIDEOPRISM_CPU_GEMM``.
    """
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    hint = "use auto, cpu, cuda or cuda:N"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"--device {device!r} is not a device; {hint}") from None
    if resolved.type == "meta":
        raise DeviceError(f"--device {device!r} holds no data and cannot run a model; {hint}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device!r}: this torch has no usable CUDA (CPU build or no GPU); use cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif resolved.type == "cpu":
        cpu_gemm()  # a bad VIDEOPRISM_CPU_GEMM fails here, before any work
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {device!r}: MPS is not available here; use cpu")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        module = getattr(torch, resolved.type, None)
        if module is None or not getattr(module, "is_available", lambda: False)():
            raise DeviceError(f"--device {device!r} is not available on this machine; {hint}")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None = "auto") -> torch.dtype | None:
    """The torch dtype for a `DTYPES` name, "auto" or a torch dtype; None keeps the checkpoint's float32.

    Args:
        dtype: The dtype or its name; "auto" is `auto_dtype` of ``device``.
        device: Where the model runs, as `resolve_device` takes it.

    Raises:
        EmbedSettingsError: An unknown name.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return auto_dtype(resolve_device(device))
    if dtype not in DTYPES:
        raise EmbedSettingsError(f"dtype={dtype!r}; use auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def auto_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where ``device`` computes it natively, hence faster than float32; float32 elsewhere.

    Natively: a CUDA GPU of compute capability 8.0 or more (Ampere and later), or a CPU with AMX or AVX-512 BF16
    (`cpu_has_native_bf16`). Elsewhere bfloat16 is emulated or converted around float32 kernels: slower, and less
    exact for nothing.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float32
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and cpu_has_native_bf16():  # oneDNN: bf16 GEMMs
        return torch.bfloat16
    return torch.float32


def cpu_has_native_bf16(flags: Iterable[str] | None = None, capability: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 matrix products in hardware (AMX, AVX-512 BF16).

    Args:
        flags: CPU feature flags; default: the ``flags`` line of /proc/cpuinfo (none where it does not exist).
        capability: The instruction set torch dispatches its CPU kernels for; default:
            ``torch.backends.cpu.get_cpu_capability()``. One naming AMX or BF16 counts without flags (torch reports
            "AVX512" on AMX machines too, so the flags are what usually decides).
    """
    flags = cpu_flags() if flags is None else frozenset(flags)
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    return bool(flags & BF16_CPU_FLAGS) or "AMX" in capability.upper() or "BF16" in capability.upper()


class VideoEmbedder:
    """Turns pre-processed clips (B, T, 3, H, W) into embeddings with whatever VideoPrism model it holds.

    See the module docstring for what each checkpoint type gives.

    Args:
        model: A loaded VideoPrism video model (`VideoPrismClipModel`, `VideoPrismVideoModel`,
            `VideoPrismVisionModel` or `VideoPrismForVideoClassification`).
        num_frames: Frames per clip; a count other than the model's resizes its temporal position embedding.
        size: ``(height, width)`` of the frames; another size than the model's resizes its position embeddings.
    """

    def __init__(self, model: torch.nn.Module, num_frames: int, size: tuple[int, int]) -> None:
        from ..modeling import (
            VideoPrismClipModel,
            VideoPrismForVideoClassification,
            VideoPrismVideoModel,
            VideoPrismVisionModel,
        )

        self.model = model
        if isinstance(model, VideoPrismClipModel):
            self.video_model, self.kind = model.video_model, "pooler"
        elif isinstance(model, VideoPrismVideoModel):
            self.video_model, self.kind = model, "pooler"
        elif isinstance(model, VideoPrismForVideoClassification):
            self.video_model, self.kind = model, "classifier"
        elif isinstance(model, VideoPrismVisionModel):
            self.video_model, self.kind = model, "mean"
        else:
            raise EmbedSettingsError(
                f"{type(model).__name__} cannot embed videos; use a video or video-text checkpoint such as "
                f"{DEFAULT_MODEL}"
            )
        config = self.video_model.config
        self.dim = int(config.hidden_size)
        self.num_frames = int(num_frames)
        self.interpolate = num_frames != config.num_frames or tuple(size) != (config.image_size, config.image_size)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights."""
        return next(self.video_model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """The device the model computes on."""
        return next(self.video_model.parameters()).device

    @property
    def dtype_name(self) -> str:
        """The `DTYPES` name of the weights' dtype ("float32", "bfloat16", ...)."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def has_text(self) -> bool:
        """Whether the model also embeds text (an LvT checkpoint)."""
        return hasattr(self.model, "get_text_features")

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor | np.ndarray, frames: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeds a batch of clips.

        Args:
            pixels: (B, T, 3, H, W) float pixel values in [0, 1] (``pixel_values_videos``).
            frames: Also return per-frame embeddings.

        Returns:
            ``(embeddings (B, D), frame embeddings (B, T, D) or None)``, float32. Clip embeddings are the model's
            (unit norm for a pooled LvT or video model); the store normalises the rows it writes. Frame embeddings
            are unit norm: the store keeps them as given, so a token mean or a classifier's pooled output is
            normalised here (a pooled LvT or video model's are already).
        """
        from ..modeling import l2_normalize

        model = self.video_model
        param = next(model.parameters())
        pixels = torch.as_tensor(pixels).to(device=param.device, dtype=param.dtype)
        batch, num_frames = pixels.shape[:2]
        frame_embeds = None
        if self.kind == "pooler":
            out = model(pixels, interpolate_pos_encoding=self.interpolate, return_frame_embeds=frames)
            embeds, frame_embeds = out.pooler_output, out.frame_embeds
        else:
            vision = model.vision_model if self.kind == "classifier" else model
            tokens = vision(pixels, interpolate_pos_encoding=self.interpolate).last_hidden_state  # (B, T*N, D)
            per_frame = tokens.reshape(batch, num_frames, -1, tokens.shape[-1])
            if self.kind == "mean":
                embeds = tokens.float().mean(dim=1)
                frame_embeds = per_frame.float().mean(dim=2) if frames else None
            else:

                def pool(x: torch.Tensor) -> torch.Tensor:
                    return model.head_layernorm(model.head(x)[0])

                embeds = pool(tokens)
                if frames:
                    frame_embeds = pool(per_frame.flatten(0, 1)).reshape(batch, num_frames, -1)
        if frame_embeds is not None:
            frame_embeds = frame_embeds.float() if self.kind == "pooler" else l2_normalize(frame_embeds.float())
            frame_embeds = frame_embeds.cpu().numpy()
        return embeds.float().cpu().numpy(), frame_embeds


def load_processor(model: str | os.PathLike[str] | ModelSource, num_frames: int | None) -> Any:
    """The checkpoint's video processor, with ``num_frames`` frames per clip when given."""
    from ..video_processing import VideoPrismVideoProcessor

    processor = VideoPrismVideoProcessor.from_pretrained(model)
    if num_frames is not None:
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise EmbedSettingsError(f"num_frames must be a positive integer, got {num_frames!r}")
        processor.num_frames = num_frames
    return processor


def load_video_embedder(
    model: str | os.PathLike[str] | ModelSource,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    num_frames: int | None = None,
    processor: Any = None,
) -> tuple[VideoEmbedder, Any]:
    """Loads a checkpoint and its video processor for embedding.

    Args:
        model: A preset name, hub repo id, local folder, ``.npz`` or ``.safetensors`` file, or the `ModelSource`
            `resolve_source` made of one (resolved once per run).
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        dtype: Weights dtype (``torch.bfloat16`` or "bfloat16", ...); "auto": bfloat16 where ``device`` computes it
            natively (`auto_dtype`); None keeps the checkpoint's float32.
        num_frames: Frames per clip; default: the model's video processor's (``video_preprocessor_config.json``, else
            the preset's).
        processor: The checkpoint's video processor when the caller has loaded it already (`load_processor`);
            ``num_frames`` is then ignored.

    Returns:
        ``(embedder, video processor)``.
    """
    from ..auto import load_model

    model = resolve_source(model)
    if processor is None:
        processor = load_processor(model, num_frames)
    loaded = load_model(model, device=resolve_device(device), dtype=resolve_dtype(dtype, device))
    size = (processor.size["height"], processor.size["width"])
    return VideoEmbedder(loaded, processor.num_frames, size), processor


def require_finite(values: np.ndarray | torch.Tensor, model: str | os.PathLike[str] | ModelSource, what: str) -> None:
    """Raises `CheckpointError` naming ``model`` when ``values`` (its ``what``) hold NaN or infinite numbers: a model
    whose weights are damaged would otherwise store or print NaN for every video."""
    finite = torch.isfinite(values).all() if isinstance(values, torch.Tensor) else np.isfinite(values).all()
    if not bool(finite):
        raise CheckpointError(
            f"model {model} gives NaN or infinite {what}: its weights are damaged (NaN or infinite "
            "values); download or convert the checkpoint again"
        )
