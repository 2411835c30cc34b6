"""Video decoding and frame sampling for VideoPrism: `read_video`, `read_window`, `read_windows`, `window_bounds`.

`read_video` decodes a video into RGB uint8 frames. With ``num_frames`` it samples frames uniformly, exactly like the
original VideoPrism demos (``np.linspace(0, n, num_frames, endpoint=False)`` cast to int), and decodes only what it
needs: a demux-only pass over the packets (no decoding, so cheap even for long videos) gives the
presentation timestamp (pts) of every frame and where the keyframes are, so a sparse request seeks to the keyframe at
or before each wanted frame instead of decoding the whole stream. Every decoded frame's pts is checked against that
table; on any disagreement the reader falls back to a plain sequential decode, so the frames returned are always
those a full sequential decode gives at the same indices.

PyAV is the decoding backend. torchcodec is an optional fast path, used only when it imports and decodes a probe clip;
frame selection and checks are the same for both. The container, index and seek machinery lives in
`videoprism._video_reader`, the rotation metadata in `videoprism._video_rotation`.

Windows. `window_bounds` cuts a video into windows of ``window`` seconds every ``stride`` seconds, and `read_window`
samples a window's frames as `read_video` samples a whole video, so a window is a clip of its own. `read_windows`
gives every window of a video the frames `read_window` gives it, from one pass over the stream that decodes each
frame at most once (overlapping windows share frames), holding only the frames that windows still to come need.

Notes:
    * Frame ``k`` is the ``k``-th frame PyAV yields when decoding the whole stream from the start. Streams without
      usable timestamps (e.g. raw ``.h264``) are decoded sequentially up to the last wanted frame.
    * Rotation metadata (display matrix, or the legacy ``rotate`` tag) is applied as FFmpeg's command line does.
    * The packet scan reads the whole file, so an http(s) source is downloaded once (FFmpeg needs range requests to
      seek, e.g. to an mp4's trailing ``moov`` atom). A never-ending live stream is not supported.
    * A truncated or corrupt stream yields the frames before the damage, with a warning; ``num_frames_total`` is then
      what could be read or decoded, and sampling spreads over those frames.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import re
import stat
import sys
from collections.abc import Iterator
from contextlib import closing
from typing import IO, TYPE_CHECKING, Literal

import numpy as np

from .errors import EmbedSettingsError, VideoDecodeError

if TYPE_CHECKING:
    from ._video_reader import Reader

__all__ = [
    "DecodedVideo",
    "VideoDecodeError",
    "VideoWindow",
    "is_url",
    "not_a_file_reason",
    "read_video",
    "read_window",
    "read_windows",
    "sample_frame_indices",
    "window_bounds",
]

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]
Backend = Literal["auto", "pyav", "torchcodec"]

#: Seconds to wait for an http(s) source to connect, and for each read from it.
URL_TIMEOUT_S = 30.0
#: A URL: ``scheme://...``; group 1 is the scheme.
URL_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(text: str) -> bool:
    """Whether ``text`` is a URL (``scheme://...``) rather than a file path."""
    return bool(URL_RE.match(text))


def not_a_file_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is neither a regular file nor a folder, in words ("no such file", "a FIFO (named pipe)", "a
    symbolic link loop", ...); None when it is one of them."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symbolic link loop (the link points, through other links, back to itself)"
        if os.path.islink(path):
            return f"a broken symbolic link (to {os.readlink(path)!r}, which does not exist)"
        if err.errno == errno.ENOENT:
            return "no such file"
        return f"unreadable ({err.strerror})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a video file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a video file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a video file"
    return "not a regular file"


@dataclasses.dataclass(eq=False)
class DecodedVideo:
    """Frames decoded from a video, with where they came from.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB, C-contiguous, upright (rotation metadata applied).
        indices: ``(T,)`` int64, the index of each frame in the full decoded stream (presentation order).
        timestamps: ``(T,)`` float64 seconds of each frame, relative to the first frame of the stream.
        fps: Average frame rate of the stream.
        duration: Duration of the stream in seconds.
        num_frames_total: Number of frames in the stream.
        source: Description of the source (path, URL or ``<bytes ...>``).
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    fps: float
    duration: float
    num_frames_total: int
    source: str

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __repr__(self) -> str:
        return (
            f"DecodedVideo(frames={self.frames.shape}, fps={self.fps:.3f}, duration={self.duration:.3f}, "
            f"num_frames_total={self.num_frames_total}, source={self.source!r})"
        )


def sample_frame_indices(num_total: int, num_frames: int | None, start: int = 0, end: int | None = None) -> np.ndarray:
    """Indices of ``num_frames`` frames spread uniformly over frames ``[start, end)``, as in the VideoPrism demos.

    The demos sample ``np.linspace(0, n, T, endpoint=False).astype(np.int32)``; this is the same arithmetic (floored),
    restricted to a window. When the window holds fewer than ``num_frames`` frames, indices repeat.

    Args:
        num_total: Number of frames in the stream.
        num_frames: How many indices to return; ``None`` for every frame in the window.
        start: First frame of the window.
        end: One past the last frame of the window; defaults to ``num_total``.

    Returns:
        int64 array of non-decreasing frame indices, all in ``[start, end)``.

    Raises:
        ValueError: If the window is empty or out of range, or ``num_frames`` is not a positive integer.
    """
    end = num_total if end is None else end
    if not 0 <= start < end <= num_total:
        raise ValueError(f"invalid frame window [{start}, {end}) for a stream of {num_total} frames")
    if num_frames is None:
        return np.arange(start, end, dtype=np.int64)
    if isinstance(num_frames, bool) or not isinstance(num_frames, int | np.integer) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer or None, got {num_frames!r}")
    return np.floor(np.linspace(start, end, int(num_frames), endpoint=False)).astype(np.int64)


def read_video(
    source: VideoSource,
    num_frames: int | None = None,
    start_time: float | None = None,
    end_time: float | None = None,
    backend: Backend = "auto",
    timeout: float = URL_TIMEOUT_S,
) -> DecodedVideo:
    """Decode a video into RGB frames, optionally sampling ``num_frames`` of them uniformly.

    Args:
        source: A local path, an ``http(s)://`` URL, the encoded bytes, or a binary file object (read to the end).
        num_frames: Number of frames to sample uniformly (see `sample_frame_indices`); ``None`` returns every frame.
        start_time: Start of the window in seconds from the first frame; the first frame at or after it is included.
        end_time: End of the window in seconds; frames before it are included. Times past the end are clipped.
        backend: ``"pyav"``, ``"torchcodec"`` (raises ImportError when it cannot decode) or ``"auto"`` (torchcodec
            when it works, otherwise PyAV).
        timeout: Seconds an ``http(s)://`` source may take to connect, and to send each piece of data; a server
            that stalls longer fails with a `VideoDecodeError` naming the URL and the timeout.

    Returns:
        The decoded frames and their indices, timestamps and stream metadata.

    Raises:
        VideoDecodeError: If the source is missing, unreadable, has no video stream or no decodable frame.
        ValueError: If the arguments are invalid or the time window holds no frame.
        ImportError: If ``backend="torchcodec"`` and torchcodec is unusable.
    """
    from ._torchcodec import torchcodec_unavailable_reason
    from ._video_reader import Reader, open_source, resolve_source

    _check_args(num_frames, start_time, end_time, backend)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    src = resolve_source(source, timeout)
    use_torchcodec = False
    if backend == "torchcodec":
        reason = torchcodec_unavailable_reason()
        if reason is not None:
            raise ImportError(f"backend='torchcodec' was requested but torchcodec cannot decode: {reason}")
        use_torchcodec = True
    elif backend == "auto":
        # PyAV handles URLs with a timeout; torchcodec releases differ in URL support.
        use_torchcodec = src.url is None and torchcodec_unavailable_reason() is None
    with open_source(src) as container:
        return Reader(src, container, num_frames, start_time, end_time).read(
            torchcodec=use_torchcodec, strict=backend == "torchcodec"
        )


# ----------------------------------------------------------------------------------------------------------------
# Windows


def window_bounds(duration: float, window: float, stride: float | None = None, fps: float = 0.0) -> list[tuple]:
    """``(start, end)`` seconds of the windows of a video: starting every ``stride`` s, ``window`` s long.

    Windows start at ``0, stride, 2 * stride, ...``; the last one is the first that reaches the end of the video
    (its end is clipped to ``duration``). A window that would start within half a frame of the end is not made. A
    video shorter than ``window`` has one window ``(0, duration)``.

    Args:
        duration: Video duration in seconds.
        window: Window length in seconds.
        stride: Seconds between window starts (default ``window``: back to back).
        fps: Frame rate, to leave out windows holding no frame; 0 when unknown.

    Raises:
        EmbedSettingsError: ``window`` or ``stride`` is not positive.
    """
    stride = window if stride is None else stride
    if not window > 0 or not stride > 0:
        raise EmbedSettingsError(f"window and stride must be positive seconds, got window={window} stride={stride}")
    eps = 0.5 / fps if fps and fps > 0 else 1e-6
    bounds = []
    for k in range(sys.maxsize):
        start = round(k * stride, 6)
        if k and start >= duration - eps:
            break
        bounds.append((start, round(min(start + window, duration), 6) if duration > 0 else start + window))
        if start + window >= duration - eps:
            break
    return bounds


def read_window(
    source: VideoSource, num_frames: int, start: float, end: float, duration: float, timeout: float = URL_TIMEOUT_S
) -> DecodedVideo:
    """``num_frames`` frames sampled uniformly over the window ``[start, end)`` seconds of a video.

    A window holding no frame (a gap in a variable frame rate stream) is widened until it holds some: the nearest
    frames around it stand for it.

    Args:
        source: As for `read_video`.
        num_frames: Frames to sample.
        start: Window start in seconds.
        end: Window end in seconds.
        duration: The video's duration in seconds (the widening stops there).
        timeout: As for `read_video`.

    Raises:
        VideoDecodeError: The video cannot be decoded.
    """
    lo, hi = start, end
    for _ in range(_WIDENINGS):
        try:
            return read_video(source, num_frames=num_frames, start_time=lo, end_time=hi, timeout=timeout)
        except VideoDecodeError:
            raise
        except ValueError:  # no frame in [lo, hi): take the nearest frames around it instead
            lo, hi = _widen(lo, hi, duration)
    return read_video(source, num_frames=num_frames, timeout=timeout)


#: How many times `read_window` widens a window that holds no frame before it takes the whole video.
_WIDENINGS = 8


def _widen(lo: float, hi: float, duration: float) -> tuple[float, float]:
    """The window ``[lo, hi)`` grown by its own length on each side, within the video."""
    pad = max(hi - lo, 1e-3)
    return max(0.0, lo - pad), min(duration, hi + pad) if duration > 0 else hi + pad


@dataclasses.dataclass(eq=False)
class VideoWindow:
    """One window of a video, as `read_windows` yields it.

    Attributes:
        start: Window start in seconds, from `window_bounds`.
        end: Window end in seconds, from `window_bounds`.
        position: Where the window comes among the video's windows (0 for the first).
        count: How many windows the video has.
        video: The frames sampled in the window.
        one_pass: Whether the window came from the one decoding pass, where a frame index that two windows share
            holds the same picture in both; False for a window read alone (after a damaged stream: decoding again
            from another point may give another picture).
    """

    start: float
    end: float
    position: int
    count: int
    video: DecodedVideo
    one_pass: bool = False


def read_windows(
    source: VideoSource,
    num_frames: int | None,
    window: float,
    stride: float | None = None,
    timeout: float = URL_TIMEOUT_S,
) -> Iterator[VideoWindow]:
    """Every window of a video (`window_bounds`), each with the frames `read_window` samples for it, in one pass.

    The first window's frames are those `read_video` samples over ``[0, window)`` (the video's duration is unknown
    before the stream is read); every later window's are those of `read_window`. Decoding goes forward once over the
    frames the windows sample, seeking only past frames no window needs, so each frame is decoded at most once; a
    window is yielded as soon as its frames are decoded, and a frame is dropped once no later window needs it. The
    stream is decoded with PyAV. A damaged stream, a resolution change mid-stream, or frames that disagree with the
    packet index send the windows not yet yielded through `read_window` one by one (with its warnings), so the result
    never depends on the path taken.

    Args:
        source: As for `read_video`.
        num_frames: Frames to sample per window; ``None`` for every frame in the window.
        window: Window length in seconds.
        stride: Seconds between window starts (default ``window``).
        timeout: As for `read_video`.

    Yields:
        The windows in order.

    Raises:
        VideoDecodeError: The video cannot be decoded (after the windows decoded before the failure).
        EmbedSettingsError: ``window`` or ``stride`` is not positive.
        ValueError: ``num_frames`` is invalid, or the first window holds no frame.
    """
    from ._video_reader import DecodeTrouble, Reader, open_source, resolve_source

    window_bounds(1.0, window, stride)  # checks window and stride before any decoding
    _check_args(num_frames, None, None, "pyav")
    src = resolve_source(source, timeout)
    raw: VideoSource = src.data if src.data is not None else (src.url if src.url is not None else src.path)
    done = 0  # windows yielded
    with open_source(src) as container:
        reader = Reader(src, container, num_frames, None, None)
        reader.prepare()
        # A damaged stream goes window by window: each read decides which frames it can use, and warns.
        if not reader.problems:
            bounds = window_bounds(reader.duration, window, stride, reader.fps)
            plans = [_window_indices(reader, num_frames, k, bounds[k], window) for k in range(len(bounds))]
            try:
                for video in _one_pass(reader, plans):
                    yield VideoWindow(*bounds[done], done, len(bounds), video, one_pass=True)
                    done += 1
            except DecodeTrouble:
                pass  # the windows not yet yielded are read one by one below
    if done == 0:
        yield from _windows_one_by_one(raw, num_frames, window, stride, timeout)
        return
    for k in range(done, len(bounds)):
        yield VideoWindow(
            *bounds[k], k, len(bounds), read_window(raw, num_frames, *bounds[k], reader.duration, timeout)
        )


def _one_pass(reader: Reader, plans: list[np.ndarray]) -> Iterator[DecodedVideo]:
    """The windows whose frames are ``plans`` (frame indices per window), decoded in one pass of a prepared reader.

    Stops early (the caller reads the other windows alone) when a frame has another size than the first decoded one:
    a window read alone keeps the size of its own first frame.

    Raises:
        DecodeTrouble: Decoding disagreed with the packet index or stopped early.
    """
    last_use: dict[int, int] = {}  # frame -> last window that needs it
    for k, indices in enumerate(plans):
        last_use.update(dict.fromkeys(indices.tolist(), k))
    held: dict[int, np.ndarray] = {}
    done = 0
    with closing(reader.decoded_frames(np.unique(np.concatenate(plans)))) as decoded:
        for i, frame in decoded:
            if reader.resized:
                return
            held[i] = frame
            while done < len(plans) and int(plans[done][-1]) <= i:
                indices = plans[done]
                yield DecodedVideo(
                    frames=np.ascontiguousarray(np.stack([held[int(j)] for j in indices])),
                    indices=indices,
                    timestamps=reader.times[indices],
                    fps=reader.fps,
                    duration=reader.duration,
                    num_frames_total=int(reader.times.size),
                    source=reader.desc,
                )
                held = {j: f for j, f in held.items() if last_use[j] > done}
                done += 1


def _window_indices(
    reader: Reader, num_frames: int | None, k: int, bounds: tuple[float, float], window: float
) -> np.ndarray:
    """The frames `read_windows` samples for window ``k`` (``bounds``) of a prepared reader, as a lone read would."""
    if k == 0:
        first, stop = reader.frame_range(0.0, window)
    else:
        lo, hi = bounds
        for _ in range(_WIDENINGS):
            try:
                first, stop = reader.frame_range(lo, hi)
                break
            except ValueError:
                lo, hi = _widen(lo, hi, reader.duration)
        else:
            first, stop = 0, int(reader.times.size)
    return sample_frame_indices(int(reader.times.size), num_frames, first, stop)


def _windows_one_by_one(
    source: VideoSource, num_frames: int | None, window: float, stride: float | None, timeout: float = URL_TIMEOUT_S
) -> Iterator[VideoWindow]:
    """`read_windows` by one `read_window` per window: the reference the one-pass decode reproduces."""
    first = read_video(source, num_frames=num_frames, start_time=0.0, end_time=window, timeout=timeout)
    bounds = window_bounds(first.duration, window, stride, first.fps)
    yield VideoWindow(*bounds[0], 0, len(bounds), first)
    for k in range(1, len(bounds)):
        video = read_window(source, num_frames, *bounds[k], first.duration, timeout)
        yield VideoWindow(*bounds[k], k, len(bounds), video)


# ----------------------------------------------------------------------------------------------------------------
# Argument checks


def _check_args(num_frames: int | None, start_time: float | None, end_time: float | None, backend: str) -> None:
    if backend not in ("auto", "pyav", "torchcodec"):
        raise ValueError(f"backend must be 'auto', 'pyav' or 'torchcodec', got {backend!r}")
    if num_frames is not None and (
        isinstance(num_frames, bool) or not isinstance(num_frames, int | np.integer) or num_frames < 1
    ):
        raise ValueError(f"num_frames must be a positive integer or None, got {num_frames!r}")
    for name, value in (("start_time", start_time), ("end_time", end_time)):
        if value is not None and (not isinstance(value, int | float | np.number) or not math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number of seconds or None, got {value!r}")
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if start_time is not None and end_time is not None and end_time <= start_time:
        raise ValueError(f"end_time ({end_time}) must be greater than start_time ({start_time})")
