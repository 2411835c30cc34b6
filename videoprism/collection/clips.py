"""The clips of one video, as the model sees them: the whole video, or one clip per window.

Without a window a video gives one clip of ``num_frames`` frames sampled uniformly over the whole video, as the
original demos sample it (``floor(linspace(0, n, T, endpoint=False))``). With ``window`` seconds (and ``stride``,
default ``window``) a video gives one clip per window, its frames sampled the same way inside the window (over the
frames whose timestamps fall in ``[start, end)``). `read_video` samples the frames (`read_windows` those of all the
windows, in one pass over the video); the processor only resizes and rescales them (it does not sample again).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import VideoDecodeError
from ..video_io import DecodedVideo, read_video, read_windows

__all__ = ["ClipSettings", "clip_pixels", "error_text", "video_clips"]


@dataclass
class ClipSettings:
    """What a worker needs to turn a video into pre-processed clips (picklable)."""

    processor: dict[str, Any]
    num_frames: int
    window: float | None
    stride: float | None


def error_text(err: BaseException) -> str:
    """The message recorded for a video that failed: a decoding error's own text, else the exception's type too."""
    return str(err) if isinstance(err, VideoDecodeError) else f"{type(err).__name__}: {err}"


def clip_pixels(processor: Any, video: DecodedVideo) -> np.ndarray:
    """``(T, 3, H, W)`` float32 pixels of a decoded clip: its frames resized and rescaled, without resampling."""
    return processor(video, return_tensors="np", do_sample_frames=False)["pixel_values_videos"][0]


def _meta(video: DecodedVideo, kind: str, start: float | None, end: float | None, rows: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "start": start,
        "end": end,
        "frame_indices": [int(i) for i in video.indices],
        "duration": float(video.duration),
        "num_frames_total": int(video.num_frames_total),
        "video_rows": rows,
    }


def video_clips(path: str, processor: Any, settings: ClipSettings) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Yields ``(row metadata, pixels (T, 3, H, W) float32)`` per clip of a video, decoding one clip at a time."""
    if settings.window is None:
        video = read_video(path, num_frames=settings.num_frames)
        yield _meta(video, "clip", None, None, 1), clip_pixels(processor, video)
        return
    for win in read_windows(path, settings.num_frames, settings.window, settings.stride):
        yield _meta(win.video, "window", win.start, win.end, win.count + 1), clip_pixels(processor, win.video)
