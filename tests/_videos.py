"""Small test videos generated with PyAV, whose frames say which index they are.

Every frame of the default ``"ramp"`` pattern carries its index as 10 black/white blocks in the top half (readable
back with `frame_index_of`, even after lossy coding) above a colour ramp that shifts with the index, so any two frames
differ everywhere. Shared by the test files; nothing here is part of the package.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

INDEX_BITS = 10  # frames 0..1023 are identifiable
_BIT_ROWS, _BIT_COLS = 2, 5

# Container format for each file suffix, when `make_video` is not told.
_FORMATS = {
    ".mp4": "mp4",
    ".mov": "mov",
    ".m4v": "mp4",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
    ".ts": "mpegts",
    ".h264": "h264",
    ".hevc": "hevc",
}
_ENCODERS = {"h264": "libx264", "hevc": "libx265", "h265": "libx265", "vp9": "libvpx-vp9"}


def frame_pattern(index: int, size: tuple[int, int], pattern: str = "ramp") -> np.ndarray:
    """The RGB uint8 image ``(H, W, 3)`` of frame ``index``.

    Args:
        index: Frame index, encoded into the image.
        size: ``(width, height)``.
        pattern: ``"ramp"`` (index bits over a moving colour ramp) or ``"solid"`` (one grey level per frame, for
            codecs too coarse for blocks).
    """
    width, height = size
    if pattern == "solid":
        return np.full((height, width, 3), (index * 37) % 256, dtype=np.uint8)
    if pattern != "ramp":
        raise ValueError(f"unknown pattern {pattern!r}")
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(4 * x + 9 * index) % 256, (4 * y + 5 * index) % 256, np.full_like(x, (13 * index) % 256)], -1)
    image = image.astype(np.uint8)
    for bit, (r0, r1, c0, c1) in enumerate(_bit_cells(width, height)):
        image[r0:r1, c0:c1] = 255 if (index >> bit) & 1 else 0
    return image


def _bit_cells(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Row/column bounds of the blocks holding the index bits, least significant first."""
    top = height // 2
    rows = np.linspace(0, top, _BIT_ROWS + 1).astype(int)
    cols = np.linspace(0, width, _BIT_COLS + 1).astype(int)
    return [(rows[r], rows[r + 1], cols[c], cols[c + 1]) for r in range(_BIT_ROWS) for c in range(_BIT_COLS)]


def frame_index_of(image: np.ndarray) -> int:
    """Read back the index that `frame_pattern` wrote into an upright decoded ``(H, W, 3)`` ramp frame."""
    height, width = image.shape[:2]
    index = 0
    for bit, (r0, r1, c0, c1) in enumerate(_bit_cells(width, height)):
        # The middle of each block, away from edges that chroma subsampling and compression blur.
        rm, cm = (r0 + r1) // 2, (c0 + c1) // 2
        patch = image[max(r0, rm - 1) : rm + 2, max(c0, cm - 1) : cm + 2].astype(np.float64)
        if patch.mean() > 127:
            index |= 1 << bit
    return index


def _encoder_options(codec: str, gop: int | None, scenecut: bool) -> dict[str, str]:
    if codec == "libx264":
        params = [] if scenecut else ["scenecut=0"]
        return {"preset": "veryfast", "crf": "18", **({"x264-params": ":".join(params)} if params else {})}
    if codec == "libx265":
        params = ["log-level=error"] + ([] if scenecut else ["scenecut=0"])
        return {"preset": "veryfast", "crf": "18", "x265-params": ":".join(params)}
    if codec == "libvpx-vp9":
        return {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}
    if codec in ("mpeg4", "mjpeg"):
        return {"qscale": "3"}
    return {}


def make_video(
    path: str | Path,
    num_frames: int = 30,
    fps: float = 30,
    size: tuple[int, int] = (64, 48),
    codec: str = "h264",
    container: str | None = None,
    gop: int | None = 12,
    pix_fmt: str = "yuv420p",
    pattern: str = "ramp",
    rotation: float | None = None,
    hflip: bool = False,
    vflip: bool = False,
    bframes: int | None = None,
    scenecut: bool = False,
    frame_times: list[float] | None = None,
) -> Path:
    """Write a test video and return its path.

    Args:
        path: Output file; its suffix picks the container unless ``container`` is given.
        num_frames: Number of frames; frame ``i`` shows ``frame_pattern(i)``.
        fps: Nominal frame rate.
        size: ``(width, height)``; yuv420p with h264/hevc needs even sizes (use vp9, mpeg4 or yuv444p for odd ones).
        codec: Encoder or codec name: ``"h264"``, ``"hevc"``, ``"vp9"``, ``"mpeg4"``, ``"mjpeg"``, ``"png"``, ...
        container: FFmpeg format name (``"mp4"``, ``"avi"``, ``"webm"``, ``"matroska"``, ``"mpegts"``, ...).
        gop: Keyframe interval (``None``: the encoder's default).
        pix_fmt: Encoded pixel format (``"yuv420p10le"``, ``"gray"``, ``"yuvj420p"``, ``"rgba"``, ...).
        pattern: See `frame_pattern`.
        rotation: Counter-clockwise display rotation in degrees (a multiple of 90), written as a display matrix (needs
            PyAV >= 18). Like a phone, the frames are stored turned the other way, so that a reader that honours the
            matrix shows the upright pattern of ``size``.
        hflip: Mirror horizontally in the display matrix (after the rotation); the stored frames are mirrored too.
        vflip: Mirror vertically in the display matrix (after the rotation); the stored frames are mirrored too.
        bframes: Maximum consecutive B-frames (``None``: the encoder's default).
        scenecut: Let x264/x265 insert extra keyframes at scene changes (off, so ``gop`` alone sets keyframes).
        frame_times: Per-frame times in seconds for variable frame rate output (millisecond time base).

    Returns:
        ``Path(path)``.
    """
    path = Path(path)
    fmt = container or _FORMATS.get(path.suffix.lower())
    encoder = _ENCODERS.get(codec, codec)
    if rotation is not None and rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    width, height = stored_size = size if not rotation or rotation % 180 == 0 else (size[1], size[0])
    with av.open(str(path), mode="w", format=fmt) as output:
        rate = Fraction(fps).limit_denominator(1001)
        stream = output.add_stream(encoder, rate=rate, options=_encoder_options(encoder, gop, scenecut))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if gop is not None:
            stream.gop_size = gop
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        if frame_times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        if rotation is not None or hflip or vflip:
            if not hasattr(stream, "set_display_rotation"):
                raise NotImplementedError("writing a display matrix needs PyAV >= 18")
            stream.set_display_rotation(rotation or 0, hflip=hflip, vflip=vflip)
        for i in range(num_frames):
            image = _stored(frame_pattern(i, size, pattern), rotation or 0, hflip, vflip)
            assert image.shape[1::-1] == stored_size
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if frame_times is not None:
                frame.pts = round(frame_times[i] * 1000)
                frame.time_base = Fraction(1, 1000)
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return path


def _stored(upright: np.ndarray, rotation: float, hflip: bool, vflip: bool) -> np.ndarray:
    """The stored image that displays as ``upright`` under a display matrix of (rotation, then flips)."""
    image = upright[:, ::-1] if hflip else upright
    image = image[::-1] if vflip else image
    return np.ascontiguousarray(np.rot90(image, -round(rotation / 90) % 4))


def make_audio(path: str | Path, seconds: float = 1.0, sample_rate: int = 16000) -> Path:
    """Write an audio-only file (AAC; use an .m4a or .mp4 suffix) and return its path."""
    path = Path(path)
    with av.open(str(path), mode="w") as output:
        stream = output.add_stream("aac", rate=sample_rate)
        samples = 1024
        for i in range(math.ceil(seconds * sample_rate / samples)):
            t = (np.arange(samples) + i * samples) / sample_rate
            wave = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, i * samples
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return path


def decode_all(path: str | Path | bytes) -> tuple[np.ndarray, list[int | None]]:
    """Reference decode with plain PyAV: every frame as RGB (no rotation applied) and its pts.

    Frames decoded before an error (a truncated file) are returned; an error before any frame propagates.
    """
    import io

    source = io.BytesIO(path) if isinstance(path, bytes) else str(path)
    frames, pts = [], []
    with av.open(source) as container:
        try:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                pts.append(frame.pts)
        except av.error.FFmpegError:
            if not frames:
                raise
    return np.stack(frames), pts
