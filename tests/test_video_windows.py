"""Tests for videoprism.video_io.read_windows: every window equals a lone read of it, each frame decoded once."""

from __future__ import annotations

import threading
import time
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from _videos import decode_all, frame_index_of, make_video

from videoprism import _video_reader
from videoprism.collection.clips import ClipSettings, WindowPixels, clip_pixels, read_ahead, video_clips
from videoprism.errors import EmbedSettingsError
from videoprism.video_io import (
    DecodedVideo,
    VideoDecodeError,
    VideoWindow,
    read_video,
    read_window,
    read_windows,
    window_bounds,
)
from videoprism.video_processing import VideoPrismVideoProcessor

# name -> make_video arguments
VIDEOS = {
    "h264.mp4": dict(num_frames=40, gop=12),
    "bframes.mkv": dict(num_frames=40, gop=10, bframes=3),
    "vfr.mkv": dict(num_frames=40, gop=10, frame_times=[i / 50 + (i // 3) / 20 for i in range(40)]),
    "ntsc.mp4": dict(num_frames=100, fps=Fraction(30000, 1001), gop=24),
    "slow_odd.webm": dict(codec="vp9", size=(97, 61), num_frames=30, fps=7.5, gop=8),
    "raw.h264": dict(num_frames=40, gop=10),
    "long_gop.mp4": dict(num_frames=300, gop=250),
}
# (window, stride) in seconds: overlapping, back to back, with gaps, one window longer than the video, and windows
# shorter than the gaps of the variable frame rate video (widened to the frames around them).
WINDOWS = [(0.5, 0.25), (0.4, None), (0.2, 0.5), (60.0, None), (0.03, 0.03)]


@pytest.fixture(scope="module")
def make(tmp_path_factory: pytest.TempPathFactory):
    """``make(name)``: the generated video ``name`` of `VIDEOS`, made once per module."""
    folder = tmp_path_factory.mktemp("windows")
    cache: dict[str, Path] = {}

    def _make(name: str, **kwargs) -> Path:
        if name not in cache:
            cache[name] = make_video(folder / name, **(kwargs or VIDEOS[name]))
        return cache[name]

    return _make


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list:
    """The pts (or None) of every frame PyAV decodes, in order."""
    seen: list = []
    decode_packet = _video_reader._decode_packet

    def counting_decode(stream, packet):
        frames = decode_packet(stream, packet)
        seen.extend(frame.pts for frame in frames)
        return frames

    monkeypatch.setattr(_video_reader, "_decode_packet", counting_decode)
    return seen


def lone_reads(source, num_frames: int | None, window: float, stride: float | None) -> list:
    """The windows read one at a time (`read_video` for the first, `read_window` for the others), and the error that
    ended them, if any: what `read_windows` must reproduce."""
    out: list = []
    try:
        first = read_video(source, num_frames=num_frames, start_time=0.0, end_time=window)
        bounds = window_bounds(first.duration, window, stride, first.fps)
        out.append((bounds[0], first))
        for start, end in bounds[1:]:
            out.append(((start, end), read_window(source, num_frames, start, end, first.duration)))
    except (VideoDecodeError, ValueError) as e:
        out.append(e)
    return out


def one_pass(source, num_frames: int | None, window: float, stride: float | None) -> list:
    out: list = []
    try:
        for win in read_windows(source, num_frames, window, stride):
            assert win.position == len(out)
            out.append(((win.start, win.end), win.video))
    except (VideoDecodeError, ValueError) as e:
        out.append(e)
    return out


def assert_same(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        if isinstance(e, Exception):
            assert type(g) is type(e) and str(g) == str(e)
            continue
        (g_bounds, g), (e_bounds, e) = g, e
        assert g_bounds == e_bounds
        assert isinstance(g, DecodedVideo) and g.frames.flags.c_contiguous
        np.testing.assert_array_equal(g.indices, e.indices)
        np.testing.assert_array_equal(g.frames, e.frames)
        np.testing.assert_array_equal(g.timestamps, e.timestamps)
        assert (g.fps, g.duration, g.num_frames_total, g.source) == (e.fps, e.duration, e.num_frames_total, e.source)


@pytest.mark.parametrize("name", list(VIDEOS))
@pytest.mark.parametrize(("window", "stride"), WINDOWS)
def test_windows_equal_lone_reads(make, name: str, window: float, stride: float | None) -> None:
    path = str(make(name))
    for num_frames in (4, 16):
        expected = lone_reads(path, num_frames, window, stride)
        assert all(isinstance(e, tuple) for e in expected)
        assert_same(one_pass(path, num_frames, window, stride), expected)


def test_every_frame_and_window_count_when_windows_are_whole(make) -> None:
    path = make("h264.mp4")
    reference, _ = decode_all(path)
    windows = list(read_windows(path, None, 0.5, 0.25))
    assert [(w.start, w.end) for w in windows] == [(0.0, 0.5), (0.25, 0.75), (0.5, 1.0), (0.75, 1.25), (1.0, 1.333333)]
    assert {w.count for w in windows} == {5}
    assert windows[1].video.indices.tolist() == list(range(8, 23))  # frames at 0.2667 .. 0.7333 s
    for w in windows:
        np.testing.assert_array_equal(w.video.frames, reference[w.video.indices])
        assert [frame_index_of(f) for f in w.video.frames] == w.video.indices.tolist()


@pytest.mark.parametrize(("name", "window", "stride"), [("long_gop.mp4", 1.0, 0.5), ("ntsc.mp4", 0.5, 0.25)])
def test_each_frame_is_decoded_once(make, decoded: list, name: str, window: float, stride: float) -> None:
    path = make(name)
    total = VIDEOS[name]["num_frames"]
    windows = list(read_windows(path, 16, window, stride))
    assert len(windows) > 4
    assert len(decoded) == len(set(decoded)) and len(decoded) <= total
    one_pass_count = len(decoded)
    decoded.clear()
    lone_reads(path, 16, window, stride)
    assert len(decoded) > 2 * one_pass_count  # what each window's own read decodes again


def test_stream_without_timestamps_is_decoded_once(make, decoded: list) -> None:
    path = make("raw.h264")
    windows = list(read_windows(path, 4, 0.4, 0.2))
    assert len(windows) == 7  # FFmpeg takes raw H.264 as 25 fps: 1.6 s
    assert len(decoded) == 40  # one sequential pass, no frame twice (raw H.264 frames carry no pts to compare)


def test_windows_with_gaps_skip_frames_no_window_needs(make, decoded: list) -> None:
    path = make("gaps.mp4", num_frames=300, gop=10)
    windows = list(read_windows(path, 4, 0.2, 2.0))  # frames 0-5, 60-65, 120-125, ...
    assert [w.video.indices.tolist() for w in windows][:2] == [[0, 1, 3, 4], [60, 61, 63, 64]]
    assert len(decoded) == len(set(decoded)) and len(decoded) <= 5 * 10  # one GOP per window


def test_windows_come_before_the_rest_of_the_video_is_decoded(make, decoded: list) -> None:
    windows = read_windows(make("long_gop.mp4"), 16, 1.0, 0.5)
    first = next(windows)
    assert first.video.indices[-1] == 28 and len(decoded) < 60
    second = next(windows)
    assert second.video.indices[-1] == 43 and len(decoded) < 75
    windows.close()


def test_index_mismatch_falls_back_to_lone_reads(make, monkeypatch) -> None:
    path = str(make("h264.mp4"))
    expected = lone_reads(path, 4, 0.4, 0.2)
    lookup = _video_reader._Index.lookup
    # Frame 20's pts (512 ticks per frame) is unknown to the index: decoding disagrees with it there.
    monkeypatch.setattr(_video_reader._Index, "lookup", lambda self, pts: -1 if pts == 20 * 512 else lookup(self, pts))
    assert_same(one_pass(path, 4, 0.4, 0.2), expected)


def test_resolution_change_falls_back_to_lone_reads(make, tmp_path: Path) -> None:
    small = make("small.h264", num_frames=20, gop=10).read_bytes()
    large = make("large.h264", num_frames=20, gop=10, size=(96, 64)).read_bytes()
    path = tmp_path / "two_sizes.h264"
    path.write_bytes(small + large)
    expected = lone_reads(str(path), 4, 0.3, 0.3)
    assert {e[1].frames.shape[1:] for e in expected} == {(48, 64, 3), (64, 96, 3)}
    assert_same(one_pass(str(path), 4, 0.3, 0.3), expected)


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_damaged_streams_match_lone_reads(make, tmp_path: Path, damage: str) -> None:
    if damage == "truncated":
        data = make("tail.mkv", num_frames=300, gop=15).read_bytes()
        data = bytearray(data[: int(len(data) * 0.6)])
    else:
        data = bytearray(make("long_gop.mp4").read_bytes())
        middle = len(data) // 2
        data[middle : middle + 400] = np.random.default_rng(1).integers(0, 256, 400, np.uint8).tobytes()
    path = tmp_path / f"{damage}.mp4"
    path.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as lone_warnings:
        warnings.simplefilter("always")
        expected = lone_reads(str(path), 4, 2.0, 1.0)
    with warnings.catch_warnings(record=True) as pass_warnings:
        warnings.simplefilter("always")
        got = one_pass(str(path), 4, 2.0, 1.0)
    assert_same(got, expected)
    assert isinstance(expected[0], tuple) and len(expected) > 3
    assert lone_warnings and [str(w.message) for w in pass_warnings] == [str(w.message) for w in lone_warnings]


def test_bytes_source_and_arguments(make) -> None:
    path = make("bframes.mkv")
    assert_same(one_pass(path.read_bytes(), 4, 0.5, 0.25), lone_reads(path.read_bytes(), 4, 0.5, 0.25))
    with pytest.raises(EmbedSettingsError, match="window and stride must be positive"):
        next(read_windows(path, 4, 0.0))
    with pytest.raises(ValueError, match="num_frames must be a positive integer"):
        next(read_windows(path, 0, 1.0))
    with pytest.raises(VideoDecodeError, match="no such file"):
        next(read_windows(path.with_name("missing.mp4"), 4, 1.0))


def test_video_clips_rows_match_lone_reads(make, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embed pipeline's windows: frame indices and pixels as when each window was read and processed alone, with
    each frame that consecutive overlapping windows share resized once."""
    path = str(make("vfr.mkv"))
    processor = VideoPrismVideoProcessor(num_frames=4, size=24)
    resized = []
    put_frame = VideoPrismVideoProcessor._put_frame

    def counting(self, out, frame, mode, where):
        resized.append(np.asarray(frame).copy())
        put_frame(self, out, frame, mode, where)

    monkeypatch.setattr(VideoPrismVideoProcessor, "_put_frame", counting)
    clips = list(video_clips(path, processor, ClipSettings(processor.to_dict(), 4, 0.3, 0.2)))
    monkeypatch.undo()
    expected = lone_reads(path, 4, 0.3, 0.2)
    assert len(clips) == len(expected)
    shared = 0
    previous: list[int] = []
    for (meta, pixels), ((start, end), video) in zip(clips, expected, strict=True):
        assert (meta["kind"], meta["start"], meta["end"], meta["video_rows"]) == ("window", start, end, len(clips) + 1)
        assert meta["frame_indices"] == video.indices.tolist()
        np.testing.assert_array_equal(pixels, clip_pixels(processor, video))
        shared += len(set(previous) & set(video.indices.tolist()))
        previous = video.indices.tolist()
    assert shared > 0  # the windows overlap: frames come again in the next window
    assert len(resized) == 4 * len(clips) - shared


def test_window_pixels_reuse_only_frames_of_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame index the previous window had is reused only when both windows come from the one decoding pass; a
    window read alone (a damaged stream) may hold another picture under the same index, and is processed afresh."""
    processor = VideoPrismVideoProcessor(num_frames=3, size=8)
    frames = np.random.default_rng(0).integers(0, 256, (6, 20, 30, 3), np.uint8)
    changed = frames.copy()
    changed[2, 0, 0, 0] ^= 1  # index 2 with another picture

    def window(indices: list[int], pictures: np.ndarray, one_pass: bool) -> VideoWindow:
        index = np.array(indices)
        video = DecodedVideo(pictures[index], index, index / 10, 10.0, 0.6, 6, "test")
        return VideoWindow(0.0, 0.3, 0, 3, video, one_pass=one_pass)

    windows = [
        (window([0, 1, 2], frames, True), 3),
        (window([1, 2, 3], frames, True), 1),  # one pass: 1 and 2 reused
        (window([2, 3, 4], changed, False), 3),  # read alone: nothing reused
        (window([3, 4, 5], frames, True), 3),  # after a lone read: nothing to reuse
    ]
    expected = [clip_pixels(processor, win.video) for win, _ in windows]
    resizes = []
    put_frame = VideoPrismVideoProcessor._put_frame
    monkeypatch.setattr(VideoPrismVideoProcessor, "_put_frame", lambda *a: resizes.append(1) or put_frame(*a))
    pixels = WindowPixels(processor)
    for (win, resized), want in zip(windows, expected, strict=True):
        resizes.clear()
        np.testing.assert_array_equal(pixels(win), want)
        assert len(resizes) == resized


# -- reading ahead: a window decodes in a thread while the previous one is pre-processed ----------------------------


def _clips(path: str, read_ahead: bool) -> tuple[list, list[str]]:
    """The clips of ``path``, then the warnings and the error (if any) that ended them, as strings."""
    processor = VideoPrismVideoProcessor(num_frames=4, size=24)
    settings = ClipSettings(processor.to_dict(), 4, 2.0, 1.0, read_ahead=read_ahead)
    clips = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for clip in video_clips(path, processor, settings):
                clips.append(clip)
            error = None
        except VideoDecodeError as err:
            error = str(err)
    return clips, [str(w.message) for w in caught] + [f"error: {error}"]


@pytest.mark.parametrize("damage", [None, "garbled"])
def test_video_clips_read_ahead_gives_the_same_clips_and_warnings(make, tmp_path: Path, damage: str | None) -> None:
    """Windows decoded one ahead in a thread: the same rows, pixels, warnings and error (a damaged stream's too)."""
    path = make("long_gop.mp4")
    if damage:
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 400] = np.random.default_rng(1).integers(0, 256, 400, np.uint8).tobytes()
        path = tmp_path / "garbled.mp4"
        path.write_bytes(bytes(data))
    (plain, plain_warnings), (ahead, ahead_warnings) = _clips(str(path), False), _clips(str(path), True)
    assert len(ahead) == len(plain) > 5
    for (meta, pixels), (want_meta, want_pixels) in zip(ahead, plain, strict=True):
        assert meta == want_meta
        np.testing.assert_array_equal(pixels, want_pixels)
    assert ahead_warnings == plain_warnings
    assert (plain_warnings != ["error: None"]) == bool(damage)


def _live_read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "videoprism-read-ahead"]


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_read_ahead_produces_one_item_ahead_in_another_thread() -> None:
    """While the caller holds item 0, item 1 waits for it and item 2 is ready to follow: no further, so memory stays
    bounded by two items beyond the caller's."""
    produced: list[tuple[int, str]] = []

    def items():
        for i in range(10):
            produced.append((i, threading.current_thread().name))
            yield i

    ahead = read_ahead(items())
    assert next(ahead) == 0
    assert _wait_for(lambda: len(produced) == 3)
    time.sleep(0.3)
    assert len(produced) == 3
    assert {name for _, name in produced} == {"videoprism-read-ahead"}
    assert list(ahead) == list(range(1, 10))
    assert not _live_read_ahead_threads()


def test_read_ahead_raises_the_error_after_the_items_before_it() -> None:
    def items():
        yield 1
        yield 2
        raise VideoDecodeError("video.mp4: cannot decode frame 40")

    got = []
    with pytest.raises(VideoDecodeError, match="cannot decode frame 40"):
        for item in read_ahead(items()):
            got.append(item)
    assert got == [1, 2]
    assert not _live_read_ahead_threads()


def test_read_ahead_closed_early_stops_and_closes_its_source() -> None:
    """A caller that stops early (the main process went away) ends the thread, which closes the source generator
    (an open video) itself."""
    closed_in = []

    def items():
        try:
            yield from range(100)
        finally:
            closed_in.append(threading.current_thread().name)

    ahead = read_ahead(items())
    assert next(ahead) == 0
    ahead.close()
    assert closed_in == ["videoprism-read-ahead"]
    assert not _live_read_ahead_threads()


def test_read_ahead_warnings_reach_the_caller() -> None:
    def items():
        warnings.warn("frame 3 is damaged", stacklevel=1)
        yield 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list(read_ahead(items())) == [1]
    assert [str(w.message) for w in caught] == ["frame 3 is damaged"]
