"""Checks of the model inputs (shapes, layouts, frame masks), with errors that say what to pass instead."""

from __future__ import annotations

import torch

from .configuration import VideoPrismVisionConfig


def check_video(pixel_values_videos: torch.Tensor, config: VideoPrismVisionConfig, interpolate: bool):
    if not isinstance(pixel_values_videos, torch.Tensor):
        raise TypeError(f"pixel_values_videos must be a torch.Tensor, got {type(pixel_values_videos).__name__}")
    if pixel_values_videos.dim() != 5:
        raise ValueError(
            "pixel_values_videos must have shape (batch, frames, 3, height, width), got "
            f"{tuple(pixel_values_videos.shape)}; use VideoPrismVideoProcessor to turn videos into this layout"
        )
    _, frames, channels, height, width = pixel_values_videos.shape
    if channels != config.num_channels:
        raise ValueError(
            f"pixel_values_videos has {channels} channels in dim 2; expected {config.num_channels} "
            "(layout B, T, C, H, W)"
        )
    if not pixel_values_videos.is_floating_point():
        raise TypeError("pixel_values_videos must be float in [0, 1]; divide uint8 frames by 255")
    if height != width:
        raise ValueError(f"frames must be square, got {height}x{width}; resize them (VideoPrismVideoProcessor does)")
    p = config.patch_size
    if not interpolate:
        if height != config.image_size:
            raise ValueError(
                f"frame size {height}x{width} differs from the model's {config.image_size}x{config.image_size}; "
                "pass interpolate_pos_encoding=True to resize the position embeddings"
            )
        if frames != config.num_frames:
            raise ValueError(
                f"got {frames} frames but the model was trained with {config.num_frames}; "
                "pass interpolate_pos_encoding=True to resize the temporal position embedding"
            )
    elif height % p:
        raise ValueError(f"frame size {height} must be a multiple of the patch size {p}")


def check_frame_mask(frame_mask: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor | None:
    if frame_mask is None:
        return None
    frame_mask = torch.as_tensor(frame_mask)
    if tuple(frame_mask.shape) != (batch, frames):
        raise ValueError(
            f"frame_mask must have shape (batch, frames) = {(batch, frames)}, got {tuple(frame_mask.shape)}"
        )
    valid = frame_mask.bool()
    # Value checks read tensor data, which a compiled graph cannot branch on; eager calls still get them.
    if not torch.compiler.is_compiling() and not valid.any(dim=1).all():
        empty = (~valid.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"frame_mask marks every frame of video(s) {empty} as padding; each video needs a real frame")
    return valid
