"""The PyAV machinery behind `videoprism.video_io.read_video`: sources, the packet index, seeking and checks.

A demux-only pass (`_scan`) gives every frame's pts and the keyframes; `Reader` decodes the wanted frames by seeking
to the keyframe before each, checks every decoded frame's pts against the index, and falls back to a sequential
decode on any disagreement. torchcodec, when it works, decodes the same frames, checked the same way.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import av.error
import numpy as np

from ._torchcodec import TorchcodecMismatch, decode_with_torchcodec, describe_error
from ._video_rotation import apply_transform, display_matrix, display_transform
from .errors import VideoDecodeError
from .video_io import URL_RE, URL_TIMEOUT_S, DecodedVideo, VideoSource, not_a_file_reason, sample_frame_indices

# Debug messages (torchcodec falling back to PyAV) go to the public module's logger, which users configure.
logger = logging.getLogger("videoprism.video_io")

# FFmpeg "decodes" plain text as ANSI art (tty demuxer); these are never videos for our purposes.
_NON_VIDEO_FORMATS = frozenset({"tty"})
_NON_VIDEO_CODECS = frozenset({"ansi", "bintext", "idf", "xbin"})
# Tolerance when comparing frame timestamps with user times, so that 1.0 s matches a frame at pts*time_base == 1.0.
_TIME_EPS_S = 1e-6
# How many earlier keyframes to try when a seek lands after the keyframe asked for.
_MAX_SEEK_RETRIES = 2


# ----------------------------------------------------------------------------------------------------------------
# Sources


@dataclasses.dataclass(frozen=True)
class Source:
    description: str
    path: str | None = None
    url: str | None = None
    data: bytes | None = None
    timeout: float = URL_TIMEOUT_S  # seconds a URL may take to connect, and to give each read


def resolve_source(source: VideoSource, timeout: float = URL_TIMEOUT_S) -> Source:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        desc = f"<bytes: {len(data)} bytes>"
        if not data:
            raise VideoDecodeError(f"{desc}: empty input")
        return Source(desc, data=data)
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        desc = f"<file object {name!r}>" if isinstance(name, str) else f"<file object {type(source).__name__}>"
        try:
            data = source.read()
        except OSError as e:
            raise VideoDecodeError(f"{desc}: cannot read ({e})") from e
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"{desc}: open the file in binary mode (read() returned {type(data).__name__})")
        if not data:
            raise VideoDecodeError(f"{desc}: empty input")
        return Source(desc, data=bytes(data))
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"unsupported video source type {type(source).__name__}: expected a path, URL, bytes or file")
    path = os.fsdecode(os.fspath(source))
    match = URL_RE.match(path)
    if match:
        if match.group(1).lower() not in ("http", "https"):
            raise VideoDecodeError(f"{path}: unsupported URL scheme {match.group(1)!r} (only http and https)")
        return Source(path, url=path, timeout=timeout)
    if (reason := not_a_file_reason(path)) is not None:
        raise VideoDecodeError(f"{path}: {reason}")
    if os.path.isdir(path):
        raise VideoDecodeError(f"{path}: is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes)")
    return Source(path, path=path)


def open_source(src: Source) -> av.container.InputContainer:
    started = time.monotonic()
    try:
        if src.url is not None:
            return av.open(src.url, mode="r", timeout=(src.timeout, src.timeout))
        if src.data is not None:
            return av.open(io.BytesIO(src.data), mode="r")
        return av.open(src.path, mode="r")
    except (av.error.FFmpegError, OSError) as e:
        # Interrupted while probing, FFmpeg may call the truncated data invalid: the time spent tells a timeout.
        if timed_out(src, e) or (src.url is not None and time.monotonic() - started >= src.timeout):
            raise VideoDecodeError(network_timeout_text(src)) from e
        raise VideoDecodeError(f"{src.description}: cannot open as a video ({describe_error(e)})") from e


def timed_out(src: Source, e: BaseException) -> bool:
    """Whether ``e`` is PyAV giving up on a URL that sent nothing for ``src.timeout`` seconds (it interrupts FFmpeg,
    which reports an "immediate exit")."""
    return src.url is not None and isinstance(e, av.error.ExitError)


def network_timeout_text(src: Source) -> str:
    return (
        f"{src.description}: the server sent nothing for {src.timeout:g} s (network timeout); retry later, or pass a "
        "longer timeout (read_video(timeout=...), --network-timeout)"
    )


# ----------------------------------------------------------------------------------------------------------------
# Packet index: frame k <-> pts, keyframes


@dataclasses.dataclass
class _Index:
    """What a demux-only pass learns about the stream: one entry per frame, in presentation order."""

    count: int  # frames (non-empty, non-discarded packets)
    seen: int  # non-empty packets, discarded ones included (what a container header counts)
    pts: np.ndarray | None  # int64 sorted pts of each frame; None when timestamps cannot index frames
    keyframes: np.ndarray  # int64 sorted indices of the frames that start a keyframe packet
    end_pts: int | None  # pts just past the last frame
    error: BaseException | None  # what stopped the scan early, if anything

    def lookup(self, pts: int | None) -> int:
        """Frame index of ``pts``, or -1 if no frame has it."""
        if pts is None or self.pts is None:
            return -1
        i = int(np.searchsorted(self.pts, pts))
        return i if i < self.count and self.pts[i] == pts else -1

    def keyframe_at_or_before(self, index: int) -> int:
        i = int(np.searchsorted(self.keyframes, index, side="right")) - 1
        return int(self.keyframes[max(i, 0)])


def _scan(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _Index:
    pts: list[int] = []
    key_pts: list[int] = []
    ends: list[int] = []
    seen = 0
    missing = False
    first_is_key = False
    error = None
    try:
        for packet in container.demux(stream):
            # Empty packets flush the demuxer; discarded ones (edit lists) are dropped by the decoder too.
            if packet.size == 0:
                continue
            seen += 1
            if packet.is_discard:
                continue
            if not pts and not missing:
                first_is_key = packet.is_keyframe
            if packet.pts is None:
                missing = True
                pts.append(0)
                continue
            pts.append(packet.pts)
            if packet.is_keyframe:
                key_pts.append(packet.pts)
            if packet.duration:
                ends.append(packet.pts + packet.duration)
    except (av.error.FFmpegError, OSError) as e:
        error = e
    count = len(pts)
    if missing or not count:
        return _Index(count, seen, None, np.zeros(0, np.int64), None, error)
    arr = np.asarray(pts, dtype=np.int64)
    order = np.sort(arr)
    # The table indexes decoded frames only if every frame has its own pts and decoding starts at the earliest one.
    usable = first_is_key and arr[0] == order[0] and bool(np.all(np.diff(order) > 0))
    if not usable:
        return _Index(count, seen, None, np.zeros(0, np.int64), None, error)
    keyframes = np.unique(np.searchsorted(order, np.asarray(key_pts, dtype=np.int64)))
    return _Index(count, seen, order, keyframes, max(ends) if ends else None, error)


# ----------------------------------------------------------------------------------------------------------------
# Decoding (PyAV)


# `_decode_packet` and `_seek` are module-level so that tests can count decoded frames and seeks.
def _decode_packet(stream: av.video.stream.VideoStream, packet: av.Packet | None) -> list[av.VideoFrame]:
    return stream.decode(packet)


def _seek(container: av.container.InputContainer, stream: av.video.stream.VideoStream, pts: int) -> None:
    container.seek(pts, stream=stream, backward=True, any_frame=False)


def _iter_frames(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    skippable: Callable[[int], bool] | None = None,
) -> Iterator:
    """Decoded frames from the container's position on; an error is raised after the frames buffered before it.

    ``skippable(pts)`` (optional) tells whether the frame of the packet with that pts is not needed: the decoder then
    drops it if no other frame refers to it (FFmpeg's ``skip_frame = NONREF``), which leaves every other frame's
    pixels as they are, since no frame is predicted from it.
    """
    codec = stream.codec_context
    try:
        # demux() ends with an empty packet that flushes the decoder's delayed frames.
        for packet in container.demux(stream):
            if skippable is not None and packet.pts is not None:
                codec.skip_frame = "NONREF" if skippable(packet.pts) else "DEFAULT"
            yield from _decode_packet(stream, packet)
    except (av.error.FFmpegError, OSError) as error:
        # Frames the decoder still holds (reordering, frame threads) come before the bad data: drain them.
        try:
            drained = _decode_packet(stream, None)
        except (av.error.FFmpegError, OSError):
            drained = []
        yield from drained
        raise error
    finally:
        if skippable is not None:
            codec.skip_frame = "DEFAULT"


class DecodeTrouble(Exception):  # noqa: N818 - control flow between the decoding modules, never escapes
    """Decoding disagreed with the packet index or stopped early: the caller falls back to a safer way."""


class _Shortfall(DecodeTrouble):
    """The stream ended (or broke) before a wanted frame: only the first ``decodable`` frames can be had."""

    def __init__(self, decodable: int, cause: BaseException | None = None):
        super().__init__(decodable)
        self.decodable = decodable
        self.cause = cause


class _IndexMismatch(DecodeTrouble):
    """Decoded frames disagree with the packet index; decode sequentially instead."""


class Reader:
    """One `read_video` call on an open container."""

    # Seeking decodes drop the unneeded frames that no other frame refers to (see `_iter_frames`), until a retry.
    skip_unneeded = True

    def __init__(
        self,
        src: Source,
        container: av.container.InputContainer,
        num_frames: int | None,
        start_time: float | None,
        end_time: float | None,
    ):
        self.src = src
        self.desc = src.description
        self.container = container
        self.num_frames = num_frames
        self.start_time = start_time
        self.end_time = end_time
        self.stream = self._pick_stream()
        self.time_base: Fraction = self.stream.time_base or Fraction(1, 1)
        # Where seeking decodes happen: the scan's container, or a single-threaded one after a decoding error.
        self.decoding = (container, self.stream)
        self.single_threaded = False
        self.owned: list[av.container.InputContainer] = []
        self.transform: str | None = None  # from the first decoded frame
        self.size: tuple[int, int] | None = None  # (width, height) of the first decoded frame
        self.resized = False  # a decoded frame had another size than the first, and was resized to it
        self.problems: list[str] = []
        # Set by `prepare`: the packet index, the time of each frame, the stream's fps and duration.
        self.index: _Index | None = None
        self.times = np.zeros(0, np.float64)
        self.fps = math.nan
        self.duration = 0.0

    # -- setup --------------------------------------------------------------------------------------------------

    def _pick_stream(self) -> av.video.stream.VideoStream:
        container = self.container
        fmt = container.format.name if container.format is not None else ""
        if fmt in _NON_VIDEO_FORMATS:
            raise VideoDecodeError(f"{self.desc}: not a video (detected {fmt!r} text data)")
        attached = av.stream.Disposition.attached_pic
        videos = [s for s in container.streams.video if not s.disposition & attached]
        if not videos:
            kinds = sorted({s.type for s in container.streams})
            what = "an audio-only file" if kinds == ["audio"] else f"streams: {', '.join(kinds) or 'none'}"
            raise VideoDecodeError(f"{self.desc}: no video stream ({what})")
        stream = videos[0]
        if stream.codec_context is None:
            raise VideoDecodeError(f"{self.desc}: no decoder for the video codec of stream {stream.index}")
        if stream.codec_context.name in _NON_VIDEO_CODECS:
            raise VideoDecodeError(f"{self.desc}: not a video (codec {stream.codec_context.name!r})")
        stream.thread_type = "AUTO"
        return stream

    def _fps(self, index: _Index) -> float:
        for rate in (self.stream.average_rate, self.stream.guessed_rate, self.stream.base_rate):
            if rate:
                return float(rate)
        if index.pts is not None and index.count > 1 and index.pts[-1] > index.pts[0]:
            return (index.count - 1) / float((int(index.pts[-1]) - int(index.pts[0])) * self.time_base)
        return math.nan

    def _duration(self, index: _Index, fps: float) -> float:
        frame_s = 1.0 / fps if fps > 0 else 0.0
        if index.pts is not None:
            last = int(index.pts[-1])
            if index.end_pts is not None and index.end_pts > last:  # the last packet knows its own duration
                return float((index.end_pts - int(index.pts[0])) * self.time_base)
            return float((last - int(index.pts[0])) * self.time_base) + frame_s
        # Frames are timed count / fps apart here. A container's declared duration can fall short of the last
        # frame's end (MPEG-PS estimates it from the bitrate), which would refuse valid start times and cut windows
        # short: the frames' own span wins when it is longer.
        frames_s = index.count * frame_s
        declared = self._container_seconds()
        return frames_s if declared is None else max(declared, frames_s)

    def _container_seconds(self) -> float | None:
        """The duration the container declares for the stream (else for the file), in seconds; None if neither."""
        if self.stream.duration:
            return float(self.stream.duration * self.time_base)
        if self.container.duration:
            return self.container.duration / av.time_base
        return None

    def _check_complete(self, index: _Index, duration: float, fps: float) -> None:
        """Note a stream cut short: demuxers stop quietly at a truncation, but the container header knows better."""
        declared = self.stream.frames
        if declared and index.seen < declared:
            # An AVI counts its zero-size chunks (dropped or repeated frames) as frames, and some headers count
            # something else; frames that reach as far as the container's own duration are complete.
            container_s = self._container_seconds()
            frame_s = 1.0 / fps if fps > 0 else 0.0
            if container_s is None or duration + 2 * frame_s < container_s:
                self.problems.append(f"the header lists {declared} frames but only {index.seen} could be read")
            return
        tag = self.stream.metadata.get("DURATION")  # Matroska/WebM per-track duration, "HH:MM:SS.fffffffff"
        match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", tag.strip()) if tag else None
        if match:
            declared_s = int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3])
            if duration + 2.0 / (fps if fps > 0 else 30.0) < declared_s:
                self.problems.append(f"the header says {declared_s:.3f} s but frames only cover {duration:.3f} s")

    # -- main ---------------------------------------------------------------------------------------------------

    def read(self, torchcodec: bool, strict: bool) -> DecodedVideo:
        try:
            return self._read(torchcodec, strict)
        finally:
            for container in self.owned:
                container.close()

    def _single_threaded(self) -> None:
        """Decode from now on without frame threads, whose errors surface at a timing-dependent frame, and without
        dropping unneeded frames, which would hide where the stream breaks."""
        container = open_source(self.src)
        self.owned.append(container)
        stream = container.streams[self.stream.index]
        stream.thread_type = "SLICE"
        self.decoding = (container, stream)
        self.single_threaded = True
        self.skip_unneeded = False

    def prepare(self) -> None:
        """Scan the packets (no decoding): sets `index`, `times`, `fps` and `duration`; damage goes to `problems`.

        Raises:
            VideoDecodeError: No video packet can be read, or the stream has no frames.
        """
        index = _scan(self.container, self.stream)
        if index.error is not None:
            if timed_out(self.src, index.error):  # a stalled server, not a truncated video: never a partial answer
                raise VideoDecodeError(network_timeout_text(self.src)) from index.error
            if index.count == 0:
                raise VideoDecodeError(
                    f"{self.desc}: cannot read any video packet ({describe_error(index.error)})"
                ) from (index.error)
            self.problems.append(f"reading stopped after {index.count} frames ({describe_error(index.error)})")
        if index.count == 0:
            raise VideoDecodeError(f"{self.desc}: the video stream has no frames")
        fps = self._fps(index)
        duration = self._duration(index, fps)
        self._check_complete(index, duration, fps)
        if index.pts is not None:
            times = (index.pts - index.pts[0]).astype(np.float64) * float(self.time_base)
        else:
            times = np.arange(index.count, dtype=np.float64) / fps
        self.index, self.times, self.fps, self.duration = index, times, fps, duration

    def _read(self, torchcodec: bool, strict: bool) -> DecodedVideo:
        self.prepare()
        index, times, fps, duration = self.index, self.times, self.fps, self.duration
        first, stop = self.frame_range(self.start_time, self.end_time)

        total = index.count
        frames: dict[int, np.ndarray] = {}
        for _ in range(4):  # one retry single-threaded, then each retry shrinks `total`
            stop = min(stop, total)
            if first >= stop:
                raise VideoDecodeError(
                    f"{self.desc}: only {total} frames are decodable, none in the requested window "
                    f"(from frame {first}); " + "; ".join(self.problems)
                )
            indices = sample_frame_indices(total, self.num_frames, first, stop)
            wanted = np.unique(indices)
            try:
                frames = self._decode(index, wanted, frames, torchcodec, strict)
                break
            except _Shortfall as e:
                if e.cause is not None and timed_out(self.src, e.cause):
                    raise VideoDecodeError(network_timeout_text(self.src)) from e.cause
                if (e.cause is not None or self.skip_unneeded) and not self.single_threaded:
                    # Frames decoded so far are right; only where the stream breaks varies with frame threads, and
                    # frames dropped unseen may be the ones that still decode.
                    self._single_threaded()
                    continue
                if e.decodable <= 0:
                    cause = f" ({describe_error(e.cause)})" if e.cause is not None else ""
                    raise VideoDecodeError(f"{self.desc}: no decodable video frame{cause}") from e.cause
                if e.decodable >= total:
                    raise VideoDecodeError(f"{self.desc}: decoding did not converge") from e.cause
                cause = f": {describe_error(e.cause)}" if e.cause is not None else ""
                self.problems.append(f"only the first {e.decodable} of {total} frames decode{cause}")
                total = e.decodable
                frames = {k: v for k, v in frames.items() if k < total}
        else:
            raise VideoDecodeError(f"{self.desc}: gave up after repeated decoding failures: {'; '.join(self.problems)}")

        if self.problems:
            warnings.warn(
                f"{self.desc}: the stream looks truncated or corrupt: {'; '.join(self.problems)}; "
                f"using the {total} frames before it",
                stacklevel=3,
            )
        if total < index.count:
            duration = min(duration, float(times[total - 1]) + (1.0 / fps if fps > 0 else 0.0))
        out = np.stack([frames[int(i)] for i in indices])
        return DecodedVideo(
            frames=np.ascontiguousarray(out),
            indices=indices,
            timestamps=times[indices],
            fps=fps,
            duration=duration,
            num_frames_total=total,
            source=self.desc,
        )

    def frame_range(self, start_time: float | None, end_time: float | None) -> tuple[int, int]:
        """``[first, stop)`` frames whose times fall in ``[start_time, end_time)`` seconds (after `prepare`).

        Raises:
            ValueError: The window starts at or after the end of the video, or holds no frame.
        """
        times, duration = self.times, self.duration
        first, stop = 0, int(times.size)
        if start_time is not None:
            if start_time >= duration:
                raise ValueError(
                    f"{self.desc}: start_time={start_time} is not before the end of the video ({duration:.3f} s)"
                )
            first = int(np.searchsorted(times, start_time - _TIME_EPS_S, side="left"))
        if end_time is not None:
            stop = int(np.searchsorted(times, end_time - _TIME_EPS_S, side="left"))
        if first >= stop:
            raise ValueError(
                f"{self.desc}: no frame in the window [{start_time}, {end_time}) s "
                f"(video of {duration:.3f} s, {times.size} frames)"
            )
        return first, stop

    def decoded_frames(self, wanted: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, RGB frame)`` of the ``wanted`` (sorted, unique) frames in order, each decoded once (PyAV).

        Seeks to a keyframe only where that skips decoding, or decodes sequentially when timestamps cannot index the
        frames. Call `prepare` first.

        Raises:
            DecodeTrouble: The frames disagree with the packet index, or the stream ends or breaks before a wanted
                frame (the frames yielded before are right).
        """
        if self.index.pts is not None:
            yield from self._seeking_frames(self.index, wanted)
        else:
            yield from self._sequential_frames(wanted)

    def _decode(
        self, index: _Index, wanted: np.ndarray, have: dict[int, np.ndarray], torchcodec: bool, strict: bool
    ) -> dict[int, np.ndarray]:
        todo = wanted[[int(w) not in have for w in wanted]] if have else wanted
        if not todo.size:
            return have
        if torchcodec:
            try:
                have.update(decode_with_torchcodec(self, index.count, index.pts, todo, self._fps(index)))
                return have
            except TorchcodecMismatch as e:
                if strict:
                    raise VideoDecodeError(f"{self.desc}: torchcodec decoding failed ({e})") from e
                logger.debug("%s: torchcodec failed (%s); decoding with PyAV", self.desc, e)
        if index.pts is not None:
            try:
                have.update(self._seeking_frames(index, todo))  # keeps the frames decoded before an error
                return have
            except _IndexMismatch as e:
                logger.debug("%s: %s; decoding sequentially", self.desc, e)
        have.update(self._sequential_frames(todo))
        return have

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        if self.transform is None:
            self.transform = display_transform(display_matrix(frame), self.stream.metadata.get("rotate"))
            self.size = (frame.width, frame.height)
        if (frame.width, frame.height) != self.size:  # resolution changes mid-stream: keep the first size
            self.resized = True
            image = frame.to_ndarray(format="rgb24", width=self.size[0], height=self.size[1])
        else:
            image = frame.to_ndarray(format="rgb24")
        return np.ascontiguousarray(apply_transform(image, self.transform))

    def _seeking_frames(self, index: _Index, wanted: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Decode ``wanted`` (sorted, unique) frames, seeking to a keyframe whenever that skips decoding."""
        frames: Iterator[tuple[int, av.VideoFrame]] | None = None
        next_index = -1  # what `frames` yields next
        needed = {int(w) for w in wanted}
        try:
            for w in (int(x) for x in wanted):
                keyframe = index.keyframe_at_or_before(w)
                # Decoding forward from `next_index` passes no keyframe before `w` iff keyframe <= next_index: a seek
                # would then decode at least as much.
                if frames is None or w < next_index or keyframe > next_index:
                    if frames is not None:
                        frames.close()
                    frames = self._frames_from_keyframe(index, keyframe, needed)
                    next_index = keyframe  # frames before it are taken as decodable if this seek yields nothing
                while next_index <= w:
                    try:
                        i, frame = next(frames)
                    except StopIteration:
                        raise _Shortfall(next_index) from None
                    if i > w:
                        raise _IndexMismatch(f"frame {w} was not decoded (the decoder went on to frame {i})")
                    next_index = i + 1
                    if i == w:
                        yield w, self._to_rgb(frame)
        finally:
            if frames is not None:
                frames.close()

    def _frames_from_keyframe(
        self, index: _Index, keyframe: int, needed: set[int]
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        """Seek to ``keyframe`` and yield ``(index, frame)`` for the frames from it in order, checked against the index.

        Every frame is yielded, except (`skip_unneeded`) frames outside ``needed`` that the decoder dropped because no
        other frame refers to them. May start at an earlier keyframe when the container's seek lands after the one
        asked for.
        """
        position = int(np.searchsorted(index.keyframes, keyframe, side="right"))
        keys = [int(k) for k in index.keyframes[max(0, position - _MAX_SEEK_RETRIES - 1) : position][::-1]]
        for target in keys:
            try:
                _seek(*self.decoding, int(index.pts[target]))
            except (av.error.FFmpegError, OSError) as e:
                raise _IndexMismatch(f"seek failed ({describe_error(e)})") from e
            kept = needed | {target}  # never dropped: the frames asked for, and the keyframe the seek must land on

            def unneeded(pts: int, kept: set[int] = kept) -> bool:
                i = index.lookup(pts)
                return i >= 0 and i not in kept

            skippable = unneeded if self.skip_unneeded else None
            expected = target
            try:
                for frame in _iter_frames(*self.decoding, skippable):
                    i = index.lookup(frame.pts)
                    if i < 0:
                        raise _IndexMismatch(f"decoded a frame with pts {frame.pts} that the packet index lacks")
                    if i < target and expected == target:
                        continue  # before the keyframe: an earlier seek point or leading pictures, never used
                    if i != expected:
                        if expected == target:
                            break  # the seek landed after `target`: retry from an earlier keyframe
                        dropped = skippable is not None and i > expected and kept.isdisjoint(range(expected, i))
                        if not dropped:
                            raise _IndexMismatch(f"expected frame {expected} after a seek, decoded frame {i}")
                    yield i, frame
                    expected = i + 1
                else:
                    return  # end of stream
            except (av.error.FFmpegError, OSError) as e:
                raise _Shortfall(expected, e) from e
        raise _IndexMismatch(f"seeking never landed at or before keyframe {keyframe}")

    def _sequential_frames(self, wanted: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Decode from the first frame, counting frames, keeping ``wanted`` ones. The ground truth for indexing."""
        last = int(wanted[-1])
        wanted_set = {int(w) for w in wanted}
        i = 0
        # A fresh container starts exactly where a full decode does, whatever the stream's start time or seekability.
        with open_source(self.src) as container:
            stream = container.streams[self.stream.index]
            stream.thread_type = "SLICE" if self.single_threaded else "AUTO"
            try:
                for frame in _iter_frames(container, stream):
                    if i in wanted_set:
                        yield i, self._to_rgb(frame)
                    i += 1
                    if i > last:
                        return
            except (av.error.FFmpegError, OSError) as e:
                raise _Shortfall(i, e) from e
        raise _Shortfall(i)

    def first_frame_transform(self) -> str:
        """The display transform, read from the first frame PyAV decodes (every frame carries the same matrix)."""
        if self.transform is None:
            with open_source(self.src) as container:
                stream = container.streams[self.stream.index]
                for frame in _iter_frames(container, stream):
                    self._to_rgb(frame)
                    break
        return self.transform or "none"
