"""Tests for videoprism.video_io, on small videos generated with PyAV (see tests/_videos.py)."""

from __future__ import annotations

import functools
import http.server
import io
import logging
import os
import re
import sys
import threading
import time
import types
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from _videos import decode_all, frame_index_of, make_audio, make_video

from videoprism import _torchcodec, _video_reader, _video_rotation, video_io
from videoprism.video_io import DecodedVideo, VideoDecodeError, read_video, sample_frame_indices

FPS = 30
# name -> (file name, make_video arguments, pixel format the decoder should report or None)
CASES = {
    "h264_mp4": ("h264.mp4", dict(num_frames=40, gop=12), "yuv420p"),
    "h264_bframes_mkv": ("h264_b.mkv", dict(num_frames=40, gop=10, bframes=3), "yuv420p"),
    "mpeg4_avi": ("mpeg4.avi", dict(codec="mpeg4", num_frames=40, gop=10, bframes=2), "yuv420p"),
    "vp9_webm_odd_size": ("vp9.webm", dict(codec="vp9", size=(97, 61), num_frames=40, gop=10), "yuv420p"),
    "hevc_10bit_mp4": ("hevc10.mp4", dict(codec="hevc", pix_fmt="yuv420p10le", num_frames=40, gop=10), "yuv420p10le"),
    "h264_10bit_mp4": ("h264_10.mp4", dict(pix_fmt="yuv420p10le", num_frames=40, gop=10), "yuv420p10le"),
    "hevc_gray_mkv": ("gray.mkv", dict(codec="hevc", pix_fmt="gray", num_frames=40, gop=10), "gray"),
    "h264_yuv444_odd_size": ("yuv444.mp4", dict(pix_fmt="yuv444p", size=(97, 61), num_frames=40), "yuv444p"),
    "mjpeg_yuvj_avi": ("mjpeg.avi", dict(codec="mjpeg", pix_fmt="yuvj420p", num_frames=40), "yuvj420p"),
    "png_rgba_mov": ("rgba.mov", dict(codec="png", pix_fmt="rgba", num_frames=40), "rgba"),
    "h264_mpegts": ("h264.ts", dict(num_frames=40, gop=10), "yuv420p"),
    "raw_h264_no_timestamps": ("raw.h264", dict(num_frames=40, gop=10), "yuv420p"),
    "vfr_mkv": ("vfr.mkv", dict(num_frames=40, gop=10, frame_times=[i / 50 + (i // 3) / 20 for i in range(40)]), None),
    "long_gop_mp4": ("long_gop.mp4", dict(num_frames=300, gop=250), "yuv420p"),
}


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def make(video_dir: Path):
    """``make(name, **kwargs)``: a generated video, made once per module."""
    cache: dict[str, Path] = {}

    def _make(name: str, **kwargs) -> Path:
        if name not in cache:
            cache[name] = make_video(video_dir / name, **kwargs)
        return cache[name]

    return _make


@pytest.fixture(scope="module")
def case_video(make):
    def _case(case: str) -> Path:
        name, kwargs, _ = CASES[case]
        return make(name, **kwargs)

    return _case


@pytest.fixture
def counters(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the frames PyAV decodes and the seeks `read_video` makes."""
    counts = {"decoded": 0, "seeks": 0}
    decode_packet, seek = _video_reader._decode_packet, _video_reader._seek

    def counting_decode(stream, packet):
        frames = decode_packet(stream, packet)
        counts["decoded"] += len(frames)
        return frames

    def counting_seek(container, stream, pts):
        counts["seeks"] += 1
        return seek(container, stream, pts)

    monkeypatch.setattr(_video_reader, "_decode_packet", counting_decode)
    monkeypatch.setattr(_video_reader, "_seek", counting_seek)
    return counts


def demo_indices(num_total: int, num_frames: int) -> np.ndarray:
    """Frame sampling of the original VideoPrism demos."""
    return np.linspace(0, num_total, num_frames, endpoint=False).astype(np.int32)


# ----------------------------------------------------------------------------------------------------------------
# sample_frame_indices


@pytest.mark.parametrize("num_total", [1, 2, 7, 16, 30, 99, 100, 301, 5400])
@pytest.mark.parametrize("num_frames", [1, 3, 8, 16, 32])
def test_sample_frame_indices_matches_demo(num_total: int, num_frames: int) -> None:
    indices = sample_frame_indices(num_total, num_frames)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, demo_indices(num_total, num_frames))
    assert indices.min() >= 0 and indices.max() < num_total


def test_sample_frame_indices_window_all_and_repeats() -> None:
    np.testing.assert_array_equal(sample_frame_indices(100, 4, 10, 30), [10, 15, 20, 25])
    np.testing.assert_array_equal(sample_frame_indices(100, None, 10, 14), [10, 11, 12, 13])
    np.testing.assert_array_equal(sample_frame_indices(5, None), np.arange(5))
    np.testing.assert_array_equal(sample_frame_indices(3, 6), [0, 0, 1, 1, 2, 2])  # repeats, never a blank frame
    np.testing.assert_array_equal(sample_frame_indices(100, 3, 50), np.floor(np.linspace(50, 100, 3, endpoint=False)))


@pytest.mark.parametrize(
    "args", [(0, 4), (10, 0), (10, -1), (10, 2.5), (10, True), (10, 4, 5, 5), (10, 4, -1, 5), (10, 4, 0, 11)]
)
def test_sample_frame_indices_rejects_bad_arguments(args: tuple) -> None:
    with pytest.raises(ValueError):
        sample_frame_indices(*args)


# ----------------------------------------------------------------------------------------------------------------
# Sampled frames == full sequential decode


@pytest.mark.parametrize("case", list(CASES))
def test_sampled_frames_match_full_decode(case: str, case_video) -> None:
    path = case_video(case)
    expected_pix_fmt = CASES[case][2]
    if expected_pix_fmt is not None:
        with av.open(str(path)) as container:
            assert container.streams.video[0].codec_context.pix_fmt == expected_pix_fmt
    reference, _ = decode_all(path)  # plain PyAV, independent of video_io
    n = len(reference)
    assert [frame_index_of(f) for f in reference] == list(range(n))

    full = read_video(path)
    assert full.frames.dtype == np.uint8 and full.frames.flags.c_contiguous
    assert full.frames.shape == reference.shape and full.frames.shape[-1] == 3
    np.testing.assert_array_equal(full.frames, reference)
    np.testing.assert_array_equal(full.indices, np.arange(n))
    assert full.num_frames_total == n == len(full)

    for num_frames in (1, 7, 16, n + 3):
        video = read_video(path, num_frames=num_frames)
        np.testing.assert_array_equal(video.indices, demo_indices(n, num_frames))
        assert video.frames.dtype == np.uint8 and video.frames.flags.c_contiguous
        assert np.array_equal(video.frames, reference[video.indices]), f"{case}: num_frames={num_frames}"
        np.testing.assert_array_equal(video.timestamps, full.timestamps[video.indices])
        assert video.num_frames_total == n
        assert video.fps == full.fps and video.duration == full.duration


@pytest.mark.parametrize("case", ["h264_mp4", "vp9_webm_odd_size", "mpeg4_avi", "h264_mpegts", "long_gop_mp4"])
def test_timestamps_follow_fps(case: str, case_video) -> None:
    video = read_video(case_video(case))
    n = video.num_frames_total
    assert video.fps == pytest.approx(FPS)
    assert video.duration == pytest.approx(n / FPS, abs=1e-3)
    assert video.timestamps.dtype == np.float64
    np.testing.assert_allclose(video.timestamps, np.arange(n) / FPS, atol=1e-3)  # webm stores milliseconds


def test_variable_frame_rate_timestamps(case_video) -> None:
    frame_times = CASES["vfr_mkv"][1]["frame_times"]
    video = read_video(case_video("vfr_mkv"), num_frames=10)
    np.testing.assert_allclose(video.timestamps, np.asarray(frame_times)[video.indices], atol=1e-3)


def test_stream_without_timestamps_decodes_sequentially(case_video, counters) -> None:
    path = case_video("raw_h264_no_timestamps")  # raw Annex B: no pts at all
    reference, _ = decode_all(path)
    video = read_video(path, num_frames=5)
    np.testing.assert_array_equal(video.frames, reference[video.indices])
    assert counters["seeks"] == 0
    np.testing.assert_allclose(video.timestamps, video.indices / video.fps)


# ----------------------------------------------------------------------------------------------------------------
# Time windows


@pytest.mark.parametrize(
    ("start_time", "end_time"), [(0.5, 1.0), (1.0, None), (None, 0.25), (8.5, 9.9), (4.0, 4.04), (9.95, 100.0)]
)
@pytest.mark.parametrize("num_frames", [None, 4])
def test_time_window(case_video, start_time, end_time, num_frames) -> None:
    path = case_video("long_gop_mp4")
    reference, _ = decode_all(path)
    times = np.arange(len(reference)) / FPS
    first = 0 if start_time is None else int(np.searchsorted(times, start_time - 1e-9))
    stop = len(reference) if end_time is None else int(np.searchsorted(times, end_time - 1e-9))
    video = read_video(path, num_frames=num_frames, start_time=start_time, end_time=end_time)
    np.testing.assert_array_equal(video.indices, sample_frame_indices(len(reference), num_frames, first, stop))
    np.testing.assert_array_equal(video.frames, reference[video.indices])
    assert video.num_frames_total == len(reference)
    if start_time is not None:
        assert video.timestamps[0] >= start_time - 1e-6
    if end_time is not None:
        assert video.timestamps[-1] < end_time


@pytest.mark.parametrize(
    ("start_time", "end_time", "match"),
    [
        (10.0, None, "start_time"),  # the video lasts 10 s
        (50.0, 60.0, "start_time"),
        (2.0, 2.0, "end_time"),
        (3.0, 1.0, "end_time"),
        (-1.0, None, "start_time"),
        (None, -0.5, "end_time"),
        (0.01, 0.02, "no frame"),  # between frames 0 and 1
        (float("nan"), None, "start_time"),
    ],
)
def test_time_window_errors(case_video, start_time, end_time, match) -> None:
    with pytest.raises(ValueError, match=match):
        read_video(case_video("long_gop_mp4"), num_frames=4, start_time=start_time, end_time=end_time)


# ----------------------------------------------------------------------------------------------------------------
# Decode only what is needed


def test_sparse_request_on_long_gop_seeks(case_video, counters) -> None:
    path = case_video("long_gop_mp4")  # keyframes at frames 0 and 250 only
    reference, _ = decode_all(path)
    video = read_video(path, num_frames=4, start_time=262 / FPS)
    np.testing.assert_array_equal(video.frames, reference[video.indices])
    assert video.indices[0] == 262
    assert counters["seeks"] >= 1
    # From keyframe 250 to the last wanted frame (~291), plus a few frames of decoder delay; not 262 from the start.
    assert counters["decoded"] < 60, counters


def test_dense_request_does_not_seek_needlessly(case_video, counters) -> None:
    path = case_video("h264_mp4")  # 40 frames, keyframe every 12
    read_video(path, num_frames=40)
    assert counters["seeks"] == 1  # to the start; every later frame is reached by decoding forward
    counters.update(decoded=0, seeks=0)
    read_video(case_video("long_gop_mp4"), num_frames=16)
    assert counters["seeks"] == 2  # the start, then keyframe 250 (which skips frames 244..249)


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_unneeded_frames_no_frame_refers_to_are_not_decoded(make, counters, monkeypatch, codec: str) -> None:
    """B-frames that no other frame is predicted from are dropped unless sampled; every sampled frame is the same."""
    path = make(f"bframes_{codec}.mp4", codec=codec, num_frames=120, gop=250, bframes=3)  # one keyframe
    reference, _ = decode_all(path)
    read = {}
    for skip in (False, True):
        monkeypatch.setattr(_video_reader.Reader, "skip_unneeded", skip)
        counters.update(decoded=0, seeks=0)
        read[skip] = read_video(path, num_frames=8), counters["decoded"]
    (plain, all_decoded), (skipping, fewer) = read[False], read[True]
    assert all_decoded >= int(plain.indices[-1]) + 1  # every frame up to the last sampled one
    assert fewer < 0.8 * all_decoded, (fewer, all_decoded)
    np.testing.assert_array_equal(skipping.indices, demo_indices(120, 8))
    np.testing.assert_array_equal(skipping.frames, reference[skipping.indices])
    np.testing.assert_array_equal(skipping.frames, plain.frames)


@pytest.mark.parametrize("cut", [0.35, 0.5, 0.62, 0.8])
def test_damaged_stream_reads_the_same_with_unneeded_frames_skipped(make, tmp_path, monkeypatch, cut: float) -> None:
    """Where a cut or garbled stream ends does not depend on which unneeded frames were dropped: the read that meets
    the damage is redone decoding every frame."""
    data = bytearray(make("bframes_cut.mkv", num_frames=120, gop=60, bframes=3).read_bytes())
    paths = {"cut": _write(tmp_path / f"cut{cut}.mkv", bytes(data[: int(len(data) * cut)]))}
    at = int(len(data) * cut)
    data[at : at + 300] = np.random.default_rng(2).integers(0, 256, 300, np.uint8).tobytes()
    paths["garbled"] = _write(tmp_path / f"garbled{cut}.mkv", bytes(data))
    for path in paths.values():
        read = {}
        for skip in (False, True):
            monkeypatch.setattr(_video_reader.Reader, "skip_unneeded", skip)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                video = read_video(path, num_frames=16)
            read[skip] = video, [str(w.message) for w in caught]
        (plain, plain_warnings), (skipping, skip_warnings) = read[False], read[True]
        assert skip_warnings == plain_warnings
        assert skipping.num_frames_total == plain.num_frames_total
        np.testing.assert_array_equal(skipping.indices, plain.indices)
        np.testing.assert_array_equal(skipping.frames, plain.frames)


def test_stream_ending_early_while_skipping_is_read_again_decoding_every_frame(make, monkeypatch) -> None:
    """A seeking decode that ends before a wanted frame, with no error, may have dropped frames that would decode:
    the read is redone without dropping any (and single-threaded), so the count of decodable frames never depends
    on what was dropped."""
    path = make("bframes_h264.mp4", num_frames=120, gop=250, bframes=3)
    plain_read = _video_reader.Reader._seeking_frames
    calls = []

    def ends_early_once(self, index, wanted):
        calls.append(self.skip_unneeded)
        if len(calls) == 1:
            raise _video_reader._Shortfall(5)  # as if frames 5.. never came out of the decoder
        yield from plain_read(self, index, wanted)

    monkeypatch.setattr(_video_reader.Reader, "_seeking_frames", ends_early_once)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "truncated" warning: the second read decodes every frame
        video = read_video(path, num_frames=8)
    assert calls == [True, False]
    assert video.num_frames_total == 120
    reference, _ = decode_all(path)
    np.testing.assert_array_equal(video.frames, reference[demo_indices(120, 8)])


def test_16_frame_sample_of_long_video_decodes_few_frames(make, counters) -> None:
    path = make("long_many_gops.mp4", num_frames=900, gop=30)
    video = read_video(path, num_frames=16)
    decoded = counters["decoded"]
    assert decoded < 900 // 2, counters
    assert counters["seeks"] >= 8
    reference, _ = decode_all(path)
    np.testing.assert_array_equal(video.indices, demo_indices(900, 16))
    np.testing.assert_array_equal(video.frames, reference[video.indices])
    assert [frame_index_of(f) for f in video.frames] == video.indices.tolist()


def test_falls_back_to_sequential_when_index_disagrees(case_video, counters, monkeypatch) -> None:
    path = case_video("h264_mp4")
    reference, _ = decode_all(path)
    lookup = _video_reader._Index.lookup
    monkeypatch.setattr(_video_reader._Index, "lookup", lambda self, pts: -1 if pts == 5 * 512 else lookup(self, pts))
    video = read_video(path, num_frames=8)
    np.testing.assert_array_equal(video.frames, reference[video.indices])


# ----------------------------------------------------------------------------------------------------------------
# Sources


def test_bytes_and_file_objects_match_path(case_video) -> None:
    path = case_video("h264_bframes_mkv")
    expected = read_video(path, num_frames=6)
    data = path.read_bytes()
    with open(path, "rb") as file:
        from_file = read_video(file, num_frames=6)
    sources = [str(path), data, bytearray(data), memoryview(data), io.BytesIO(data)]
    for video in [read_video(source, num_frames=6) for source in sources] + [from_file]:
        np.testing.assert_array_equal(video.frames, expected.frames)
        np.testing.assert_array_equal(video.indices, expected.indices)
        np.testing.assert_array_equal(video.timestamps, expected.timestamps)
        assert video.num_frames_total == expected.num_frames_total
    assert expected.source == str(path)
    assert read_video(data, num_frames=1).source == f"<bytes: {len(data)} bytes>"
    assert str(path) in from_file.source


def test_decoded_video_fields(case_video) -> None:
    video = read_video(case_video("h264_mp4"), num_frames=3)
    assert isinstance(video, DecodedVideo)
    assert len(video) == 3 and video.frames.shape == (3, 48, 64, 3)
    assert video.indices.dtype == np.int64 and video.timestamps.dtype == np.float64
    assert isinstance(video.fps, float) and isinstance(video.duration, float)
    assert isinstance(video.num_frames_total, int)
    assert "frames=(3, 48, 64, 3)" in repr(video)


# ----------------------------------------------------------------------------------------------------------------
# Rotation


@pytest.mark.parametrize(
    ("rotation", "hflip", "vflip", "upright"),
    [
        (90, False, False, lambda f: np.rot90(f, 1, axes=(1, 2))),
        (180, False, False, lambda f: np.rot90(f, 2, axes=(1, 2))),
        (270, False, False, lambda f: np.rot90(f, 3, axes=(1, 2))),
        (-90, False, False, lambda f: np.rot90(f, -1, axes=(1, 2))),
        (0, True, False, lambda f: f[:, :, ::-1]),
        (0, False, True, lambda f: f[:, ::-1]),
        (90, True, False, lambda f: np.rot90(f, 1, axes=(1, 2))[:, :, ::-1]),  # PyAV: mirror after rotating
    ],
)
def test_rotation_metadata_is_applied(make, rotation, hflip, vflip, upright) -> None:
    name = f"rot_{rotation}_{int(hflip)}{int(vflip)}.mp4"
    path = make(name, num_frames=12, size=(64, 48), gop=6, rotation=rotation, hflip=hflip, vflip=vflip)
    with av.open(str(path)) as container:  # the file really carries the matrix
        frame = next(container.decode(video=0))
        assert _video_rotation.display_matrix(frame) is not None
        if not (hflip or vflip):
            assert frame.rotation == (rotation + 180) % 360 - 180
    stored, _ = decode_all(path)  # as stored (sideways, like a phone's sensor), display matrix ignored
    expected = np.ascontiguousarray(upright(stored))  # PyAV's documented meaning of the matrix
    for num_frames in (None, 5):
        video = read_video(path, num_frames=num_frames)
        assert video.frames.shape[1:] == (48, 64, 3)
        np.testing.assert_array_equal(video.frames, expected[video.indices])
        assert video.frames.flags.c_contiguous
        # Upright for real: the index bits written into the upright pattern read back.
        assert [frame_index_of(f) for f in video.frames] == video.indices.tolist()


@pytest.mark.parametrize(
    ("tag", "transform"), [("90", "clock"), ("180", "hvflip"), ("270", "cclock"), ("-90", "cclock"), ("0", "none")]
)
def test_legacy_rotate_tag(tag: str, transform: str) -> None:
    # FFmpeg 8's muxers no longer write the old clockwise `rotate` tag, so this path is tested on its own.
    assert _video_rotation.display_transform(None, tag) == transform
    assert _video_rotation.display_transform(None, None) == "none"


def test_display_transform_math() -> None:
    image = np.arange(2 * 3).reshape(2, 3, 1)
    assert np.array_equal(_video_rotation.apply_transform(image, "clock")[..., 0], [[3, 0], [4, 1], [5, 2]])
    assert np.array_equal(_video_rotation.apply_transform(image, "cclock")[..., 0], [[2, 5], [1, 4], [0, 3]])
    assert np.array_equal(_video_rotation.apply_transform(image, "cclock_flip")[..., 0], [[0, 3], [1, 4], [2, 5]])
    assert np.array_equal(_video_rotation.apply_transform(image, "clock_flip")[..., 0], [[5, 2], [4, 1], [3, 0]])
    assert np.array_equal(_video_rotation.apply_transform(image, "hvflip")[..., 0], [[5, 4, 3], [2, 1, 0]])
    # A portrait phone clip: display matrix [0 1; -1 0] ("rotate 90" clockwise), rotated clockwise for display.
    matrix = np.array([0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30], dtype=np.int32)
    assert _video_rotation.display_transform(matrix) == "clock"
    with pytest.warns(UserWarning, match="multiple of 90"):
        assert _video_rotation.display_transform(_video_rotation.rotation_matrix(45)) == "none"


# ----------------------------------------------------------------------------------------------------------------
# Errors


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("missing", "no such file"),
        ("text_txt", "not a video"),
        ("text_mp4", "cannot open"),
        ("audio_only", "no video stream"),
        ("zero_length", "empty file"),
        ("truncated_mp4", "cannot open"),
        ("random_bytes", "cannot open"),
        ("directory", "directory"),
    ],
)
def test_errors_name_the_source(tmp_path: Path, case_video, kind: str, match: str) -> None:
    text = b"just some notes, not a video\n" * 40
    if kind == "missing":
        path = tmp_path / "nope.mp4"
    elif kind == "text_txt":
        path = _write(tmp_path / "notes.txt", text)  # FFmpeg would decode this as ANSI art
    elif kind == "text_mp4":
        path = _write(tmp_path / "notes.mp4", text)
    elif kind == "audio_only":
        path = make_audio(tmp_path / "sound.m4a")
    elif kind == "zero_length":
        path = _write(tmp_path / "empty.mp4", b"")
    elif kind == "truncated_mp4":  # the moov atom is at the end and cut off
        data = case_video("h264_mp4").read_bytes()
        path = _write(tmp_path / "truncated.mp4", data[: len(data) // 2])
    elif kind == "random_bytes":
        path = _write(tmp_path / "noise.mp4", np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    else:
        path = tmp_path / "a_dir.mp4"
        path.mkdir()
    with pytest.raises(VideoDecodeError, match=match) as info:
        read_video(path, num_frames=4)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_bytes_sources() -> None:
    with pytest.raises(VideoDecodeError, match="<bytes: 0 bytes>: empty"):
        read_video(b"")
    with pytest.raises(VideoDecodeError, match="<bytes: 3000 bytes>: cannot open"):
        read_video(b"not a video!" * 250)
    with pytest.raises(TypeError):
        read_video(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["tail.webm", "tail.mkv", "tail.avi", "tail.ts"])
def test_truncated_tail_keeps_frames_before_it(make, tmp_path: Path, name: str) -> None:
    codec = {"tail.webm": "vp9", "tail.avi": "mpeg4"}.get(name, "h264")
    data = make(name, num_frames=90, gop=15, codec=codec).read_bytes()
    path = _write(tmp_path / f"cut_{name}", data[: int(len(data) * 0.6)])
    reference, _ = decode_all(path)
    context = pytest.warns(UserWarning, match="truncated") if name != "tail.ts" else warnings.catch_warnings()
    with context:  # MPEG-TS has no header length to compare with
        video = read_video(path, num_frames=8)
    assert 30 < video.num_frames_total < 90
    np.testing.assert_array_equal(video.indices, demo_indices(video.num_frames_total, 8))
    np.testing.assert_array_equal(video.frames, reference[video.indices])


def test_corrupt_middle_keeps_frames_before_it(case_video, tmp_path: Path) -> None:
    data = bytearray(case_video("long_gop_mp4").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 400] = np.random.default_rng(1).integers(0, 256, 400, np.uint8).tobytes()
    path = _write(tmp_path / "garbled.mp4", bytes(data))
    # Plain PyAV stops at the first decoding error; video_io also drains the frames the decoder held back.
    reference, _ = decode_all(path)
    videos = []
    for _ in range(2):  # where the error hits must not depend on decoder thread timing
        with pytest.warns(UserWarning, match="corrupt"):
            videos.append(read_video(path, num_frames=8))
    for video in videos:
        n = video.num_frames_total
        assert len(reference) <= n < 300
        np.testing.assert_array_equal(video.indices, demo_indices(n, 8))
        np.testing.assert_array_equal(video.frames, videos[0].frames)
        before = video.indices < len(reference)
        np.testing.assert_array_equal(video.frames[before], reference[video.indices[before]])


# ----------------------------------------------------------------------------------------------------------------
# URLs


def test_unreachable_url_fails_fast() -> None:
    url = "http://127.0.0.1:9/x.mp4"  # the discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(VideoDecodeError, match=re.escape(url)):
        read_video(url, num_frames=4)
    assert time.monotonic() - start < 10


def test_unsupported_url_scheme() -> None:
    with pytest.raises(VideoDecodeError, match="unsupported URL scheme"):
        read_video("rtsp://127.0.0.1:9/stream")


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (FFmpeg seeks with ranges, e.g. to an mp4's trailing moov atom)."""

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        data = Path(path).read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = int(match[2]) if match[2] else len(data) - 1
            if start >= len(data):
                self.send_error(416)
                return None
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            data = data[start : end + 1]
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return io.BytesIO(data)


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # FFmpeg drops connections when it seeks
        pass


def test_http_url(case_video) -> None:
    path = case_video("long_gop_mp4")
    server = _QuietServer(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(path.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        video = read_video(f"{base}/{path.name}", num_frames=8)
        expected = read_video(path, num_frames=8)
        np.testing.assert_array_equal(video.frames, expected.frames)
        np.testing.assert_array_equal(video.indices, expected.indices)
        assert video.source == f"{base}/{path.name}"
        with pytest.raises(VideoDecodeError, match="404"):
            read_video(f"{base}/missing.mp4")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ----------------------------------------------------------------------------------------------------------------
# Backends


@pytest.fixture
def fresh_torchcodec_probe():
    _torchcodec.torchcodec_unavailable_reason.cache_clear()
    yield
    _torchcodec.torchcodec_unavailable_reason.cache_clear()


def test_auto_backend_falls_back_to_pyav_silently(case_video, monkeypatch, caplog, fresh_torchcodec_probe) -> None:
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # `import torchcodec` raises ImportError
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    path = case_video("h264_mp4")
    caplog.set_level(logging.DEBUG, logger=video_io.__name__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auto = read_video(path, num_frames=5)
        again = read_video(path, num_frames=5, backend="auto")
    pyav = read_video(path, num_frames=5, backend="pyav")
    np.testing.assert_array_equal(auto.frames, pyav.frames)
    np.testing.assert_array_equal(again.frames, pyav.frames)
    messages = [r for r in caplog.records if "torchcodec" in r.getMessage()]
    assert len(messages) == 1 and messages[0].levelno == logging.DEBUG  # logged once, at debug level
    with pytest.raises(ImportError, match="torchcodec"):
        read_video(path, num_frames=5, backend="torchcodec")


class _FakeVideoDecoder:
    """Stands in for torchcodec.decoders.VideoDecoder, decoding with PyAV; ignores rotation, like torchcodec < 0.11."""

    calls = 0
    fail = False
    pts_shift = 0.0

    def __init__(self, source, *, stream_index=None, dimension_order="NCHW", seek_mode="exact", num_ffmpeg_threads=1):
        if self.fail:
            raise RuntimeError("libtorchcodec_core.so: undefined symbol")  # what a CPU-torch mismatch looks like
        assert dimension_order == "NHWC"
        self._frames, pts = decode_all(source if isinstance(source, bytes) else Path(source))
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as container:
            time_base = float(container.streams.video[0].time_base)
        self._pts_seconds = np.asarray(pts, dtype=np.float64) * time_base
        self.metadata = types.SimpleNamespace(num_frames=len(self._frames), average_fps=30.0)

    def get_frames_at(self, indices):
        type(self).calls += 1
        indices = list(indices)
        return types.SimpleNamespace(
            data=torch.from_numpy(self._frames[indices]),
            pts_seconds=torch.from_numpy(self._pts_seconds[indices] + self.pts_shift),
        )


@pytest.fixture
def fake_torchcodec(monkeypatch, fresh_torchcodec_probe):
    package = types.ModuleType("torchcodec")
    decoders = types.ModuleType("torchcodec.decoders")
    decoder = type("VideoDecoder", (_FakeVideoDecoder,), {"calls": 0, "fail": False, "pts_shift": 0.0})
    decoders.VideoDecoder = decoder
    package.decoders = decoders
    monkeypatch.setitem(sys.modules, "torchcodec", package)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", decoders)
    return decoder


def test_torchcodec_path_when_available(make, fake_torchcodec) -> None:
    path = make("tc_rot.mp4", num_frames=20, gop=5, rotation=90)
    expected = read_video(path, num_frames=6, backend="pyav")
    for backend in ("auto", "torchcodec"):
        calls = fake_torchcodec.calls
        video = read_video(path, num_frames=6, backend=backend)
        assert fake_torchcodec.calls > calls
        np.testing.assert_array_equal(video.frames, expected.frames)  # rotation applied on top of torchcodec
        np.testing.assert_array_equal(video.indices, expected.indices)
        np.testing.assert_array_equal(video.timestamps, expected.timestamps)


def test_torchcodec_probe_failure_falls_back(case_video, fake_torchcodec) -> None:
    fake_torchcodec.fail = True
    path = case_video("h264_mp4")
    np.testing.assert_array_equal(read_video(path, 4).frames, read_video(path, 4, backend="pyav").frames)
    assert fake_torchcodec.calls == 0
    with pytest.raises(ImportError, match="undefined symbol"):
        read_video(path, 4, backend="torchcodec")


def test_torchcodec_disagreeing_frames_fall_back(case_video, fake_torchcodec) -> None:
    path = case_video("h264_mp4")
    read_video(path, 2)  # probe while honest
    fake_torchcodec.pts_shift = 0.5  # frames no longer at the pts of the packet index
    np.testing.assert_array_equal(read_video(path, 4).frames, read_video(path, 4, backend="pyav").frames)
    with pytest.raises(VideoDecodeError, match="torchcodec"):
        read_video(path, 4, backend="torchcodec")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_frames=0),
        dict(num_frames=-3),
        dict(num_frames=2.0),
        dict(num_frames=True),
        dict(backend="opencv"),
        dict(start_time="1"),
        dict(end_time=float("inf")),
    ],
)
def test_argument_errors(case_video, kwargs) -> None:
    with pytest.raises(ValueError):
        read_video(case_video("h264_mp4"), **kwargs)
