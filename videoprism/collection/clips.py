"""The clips of one video, as the model sees them: the whole video, or one clip per window.

Without a window a video gives one clip of ``num_frames`` frames sampled uniformly over the whole video, as the
original demos sample it (``floor(linspace(0, n, T, endpoint=False))``). With ``window`` seconds (and ``stride``,
default ``window``) a video gives one clip per window, its frames sampled the same way inside the window (over the
frames whose timestamps fall in ``[start, end)``). `read_video` samples the frames (`read_windows` those of all the
windows, in one pass over the video); the processor only resizes and rescales them (it does not sample again).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..errors import EmbedSettingsError, VideoDecodeError
from ..video_io import URL_TIMEOUT_S, DecodedVideo, VideoWindow, read_video, read_windows
from .thumbnails import POSTERS_KEY, clip_posters

__all__ = [
    "MAX_CLIP_BYTES",
    "ClipSettings",
    "WindowPixels",
    "clip_pixels",
    "error_text",
    "put_unless_stopped",
    "read_ahead",
    "video_clips",
]

#: Default bound on one clip's float32 pixels (the models' 16 x 288 x 288 clips take 16 MiB).
MAX_CLIP_BYTES = 1 << 30


@dataclass
class ClipSettings:
    """What a worker needs to turn a video into pre-processed clips (picklable)."""

    processor: dict[str, Any]
    num_frames: int
    window: float | None
    stride: float | None
    posters: bool = False  # attach poster JPEGs (`thumbnails.clip_posters`) to each clip's metadata
    network_timeout: float = URL_TIMEOUT_S  # seconds a URL may stall (see `read_video`)
    max_clip_bytes: int = MAX_CLIP_BYTES  # refuse settings whose clips' pixels would take more memory
    # Decode a video's next window in a thread while this one is pre-processed (`read_ahead`): for a decoding process
    # with cores of its own, where one long video would otherwise decode and resize by turns.
    read_ahead: bool = False

    @classmethod
    def of(
        cls, processor: Any, window: float | None = None, stride: float | None = None, **options: Any
    ) -> ClipSettings:
        """The settings of clips made by ``processor`` (a `VideoPrismVideoProcessor`, its frame count included);
        ``options``: the other fields."""
        return cls(processor.to_dict(), processor.num_frames, window, stride, **options)

    def __post_init__(self) -> None:
        t = self.network_timeout
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < float("inf"):
            raise EmbedSettingsError(f"network_timeout must be a positive number of seconds, got {t!r}")
        size = self.processor.get("size") or {}
        height, width = int(size.get("height", 0)), int(size.get("width", 0))
        nbytes = self.num_frames * 3 * height * width * 4  # float32 pixels of one clip
        if nbytes > self.max_clip_bytes:
            raise EmbedSettingsError(
                f"clips of {self.num_frames} frames of {height}x{width} pixels take {nbytes / 2**20:,.0f} MiB each, "
                f"over the limit of {self.max_clip_bytes / 2**20:,.0f} MiB (max_clip_bytes, --max-clip-mb): lower "
                "--num-frames or the video processor's size, or raise the limit"
            )


def error_text(err: BaseException) -> str:
    """The message recorded for a video that failed: a decoding error's own text, else the exception's type too."""
    return str(err) if isinstance(err, VideoDecodeError) else f"{type(err).__name__}: {err}"


def clip_pixels(processor: Any, video: DecodedVideo | np.ndarray) -> np.ndarray:
    """``(T, 3, H, W)`` float32 pixels of a decoded clip (or of ``(T, H, W, 3)`` frames): its frames resized and
    rescaled, without resampling."""
    out = processor(video, return_tensors="np", num_frames=len(video), do_sample_frames=False)
    return out["pixel_values_videos"][0]


class WindowPixels:
    """Pixels of a video's windows, taken in order, with each decoded frame resized once.

    Overlapping windows (``stride < window``) sample many of the same frames: a frame that the previous window of
    the same decoding pass also sampled (`VideoWindow.one_pass`: same index, same picture) reuses its pre-processed
    copy. Exact: a frame's resize and rescale depend on that frame alone. Holds the previous window's pixels only.
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self._previous: dict[int, np.ndarray] = {}  # stream index -> pre-processed frame, of the previous window

    def __call__(self, window: VideoWindow) -> np.ndarray:
        indices = [int(i) for i in window.video.indices]
        previous = self._previous if window.one_pass else {}
        todo = [t for t, index in enumerate(indices) if index not in previous]
        fresh = iter(clip_pixels(self.processor, window.video.frames[todo]) if todo else ())
        pixels = np.stack([previous[index] if index in previous else next(fresh) for index in indices])
        self._previous = dict(zip(indices, pixels, strict=True)) if window.one_pass else {}
        return pixels


_T = TypeVar("_T")
_READ_AHEAD_POLL_S = 0.1  # how often a thread waiting to hand over an item checks that it is still wanted


def put_unless_stopped(into: queue.Queue, item: Any, stop: threading.Event, poll_s: float) -> bool:
    """Puts ``item`` into the bounded queue ``into``, checking every ``poll_s`` seconds while it is full that ``stop``
    is not set; False when it was (the item is dropped)."""
    while not stop.is_set():
        try:
            into.put(item, timeout=poll_s)
            return True
        except queue.Full:
            pass
    return False


def read_ahead(items: Iterator[_T]) -> Iterator[_T]:
    """``items``, produced by a thread one item ahead of the caller, so that decoding (which releases the GIL) runs
    while the caller pre-processes the previous item.

    Items and an error of ``items`` arrive in order, the error raised here as it was raised there. Closing this
    generator (the caller stops early) stops the thread at its next item and closes ``items`` in it. The thread runs
    in a copy of the caller's context, so warnings it emits reach the caller's `warnings.catch_warnings` where that
    is context-local.
    """
    handover: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(entry: tuple[bool, Any]) -> bool:
        return put_unless_stopped(handover, entry, stop, _READ_AHEAD_POLL_S)

    def produce() -> None:
        outcome: BaseException | None = None
        try:
            for item in items:
                if not hand_over((True, item)):
                    break
        except BaseException as err:  # noqa: BLE001 - handed to the caller, which raises it
            outcome = err
        try:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator left early releases what it holds (an open video) in this thread
        except BaseException as err:  # noqa: BLE001
            outcome = outcome or err
        hand_over((False, outcome))

    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(produce,), name="videoprism-read-ahead", daemon=True
    )
    thread.start()
    try:
        while True:
            more, value = handover.get()
            if more:
                yield value
            elif value is None:
                return
            else:
                raise value
    finally:
        stop.set()
        thread.join()


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


def video_clips(
    path: str | tuple[str, float | None, float | None], processor: Any, settings: ClipSettings
) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Yields ``(row metadata, pixels (T, 3, H, W) float32)`` per clip of a video, decoding one clip at a time.

    A ``(path, start, end)`` span (seconds, None for either end) gives one clip of the frames in ``[start, end)``.
    """
    if isinstance(path, tuple):
        path, start, end = path
        video = read_video(
            path, num_frames=settings.num_frames, start_time=start, end_time=end, timeout=settings.network_timeout
        )
        yield _meta(video, "span", start, end, 1), clip_pixels(processor, video)
        return
    if settings.window is None:
        video = read_video(path, num_frames=settings.num_frames, timeout=settings.network_timeout)
        row = _meta(video, "clip", None, None, 1)
        if settings.posters:
            row[POSTERS_KEY] = clip_posters(video.frames, ("clip",))
        yield row, clip_pixels(processor, video)
        return
    windows = read_windows(path, settings.num_frames, settings.window, settings.stride, settings.network_timeout)
    if settings.read_ahead:
        windows = read_ahead(windows)
    window_pixels = WindowPixels(processor)
    for win in windows:
        row = _meta(win.video, "window", win.start, win.end, win.count + 1)
        if settings.posters:  # the middle window's poster also stands for the whole video
            kinds = ("window", "video") if win.position == win.count // 2 else ("window",)
            row[POSTERS_KEY] = clip_posters(win.video.frames, kinds)
        yield row, window_pixels(win)
