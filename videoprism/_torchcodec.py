"""Optional torchcodec decoding for `read_video`: used when torchcodec imports and decodes a probe clip, checked
frame by frame against the packet index of `_video_reader`, which decodes with PyAV whenever this says no."""

from __future__ import annotations

import functools
import io
import logging
from typing import TYPE_CHECKING

import av
import numpy as np

from ._video_rotation import apply_transform
from .errors import VideoDecodeError

if TYPE_CHECKING:
    from ._video_reader import Reader

logger = logging.getLogger("videoprism.video_io")


def describe_error(e: BaseException) -> str:
    """An error as ``Type: message``, for debug logs and fallback reasons."""
    return f"{type(e).__name__}: {e}"


class TorchcodecMismatch(Exception):  # noqa: N818 - control flow between the decoding modules, never escapes
    """torchcodec failed or its frames disagree with the packet index."""


@functools.cache
def _probe_clip() -> bytes:
    """A tiny MPEG-4 clip made with PyAV's built-in encoder, to check that torchcodec can decode at all."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(2):
            image = np.full((32, 32, 3), 60 * i, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


@functools.cache
def torchcodec_unavailable_reason() -> str | None:
    """None if torchcodec imports and decodes a probe clip, else why not (logged once at debug level)."""
    try:
        from torchcodec.decoders import VideoDecoder

        decoder = VideoDecoder(_probe_clip(), dimension_order="NHWC")
        batch = decoder.get_frames_at([0, 1])
        if tuple(batch.data.shape) != (2, 32, 32, 3):
            raise RuntimeError(f"probe decode returned shape {tuple(batch.data.shape)}")
    # Any failure means "not usable": PyPI wheels raise OSError/RuntimeError on import against a CPU-only torch.
    except Exception as e:  # noqa: BLE001
        reason = describe_error(e)
        logger.debug("torchcodec is unavailable, using PyAV: %s", reason)
        return reason
    return None


def decode_with_torchcodec(
    reader: Reader, count: int, pts: np.ndarray | None, wanted: np.ndarray, fps: float
) -> dict[int, np.ndarray]:
    """Decode ``wanted`` frames with torchcodec, checked against the packet index (``count`` frames at ``pts``).

    Raises:
        TorchcodecMismatch: torchcodec failed, or its frames disagree with the index (the caller decodes with PyAV).
    """
    from torchcodec.decoders import VideoDecoder

    src = reader.src
    source = src.path if src.path is not None else (src.url if src.url is not None else src.data)
    try:
        try:
            decoder = VideoDecoder(
                source,
                stream_index=reader.stream.index,
                dimension_order="NHWC",
                seek_mode="exact",
                num_ffmpeg_threads=0,
            )
        except TypeError:  # releases before seek_mode / num_ffmpeg_threads
            decoder = VideoDecoder(source, stream_index=reader.stream.index, dimension_order="NHWC")
        metadata = decoder.metadata
        num = getattr(metadata, "num_frames", None)
        if num is not None and int(num) != count:
            raise TorchcodecMismatch(f"torchcodec counts {num} frames, the packet index {count}")
        batch = decoder.get_frames_at([int(w) for w in wanted])
        data = batch.data.cpu().numpy()
        pts_seconds = batch.pts_seconds.cpu().numpy().astype(np.float64)
    except TorchcodecMismatch:
        raise
    except Exception as e:  # noqa: BLE001 - any torchcodec failure sends us back to PyAV
        raise TorchcodecMismatch(describe_error(e)) from e
    if pts is not None:
        expected = pts[wanted].astype(np.float64) * float(reader.time_base)
        tolerance = 0.5 / fps if fps > 0 else 1e-3
        if not np.allclose(pts_seconds, expected, rtol=0, atol=tolerance):
            raise TorchcodecMismatch("torchcodec frame timestamps disagree with the packet index")
    # torchcodec >= 0.11 exposes `rotation` and applies it; earlier releases do neither.
    try:
        transform = reader.first_frame_transform()
    except (av.error.FFmpegError, OSError, VideoDecodeError) as e:
        raise TorchcodecMismatch(f"cannot read the display matrix ({describe_error(e)})") from e
    if hasattr(metadata, "rotation"):
        if transform not in ("none", "clock", "cclock", "hvflip"):
            raise TorchcodecMismatch(f"display transform {transform!r} includes a flip")
        transform = "none"
    return {int(w): np.ascontiguousarray(apply_transform(data[k], transform)) for k, w in enumerate(wanted)}
