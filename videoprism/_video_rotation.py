"""Rotation metadata: which flips and rotations make a decoded frame upright, as FFmpeg's autorotate decides."""

from __future__ import annotations

import math
import warnings

import av
import numpy as np


def display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    for side_data in frame.side_data:
        if side_data.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            matrix = np.frombuffer(bytes(side_data), dtype=np.int32)
            return matrix[:9].copy() if matrix.size >= 9 else None
    return None


def rotation_matrix(clockwise_degrees: float) -> np.ndarray:
    """FFmpeg's av_display_rotation_set: a display matrix for a clockwise rotation."""
    radians = -math.radians(clockwise_degrees)
    c, s = math.cos(radians), math.sin(radians)
    return np.array([round(c * 65536), round(-s * 65536), 0, round(s * 65536), round(c * 65536), 0, 0, 0, 1 << 30])


def display_transform(matrix: np.ndarray | None, rotate_tag: str | None = None) -> str:
    """Which flips/rotations make a frame upright, following FFmpeg's autorotate (fftools).

    Args:
        matrix: The 3x3 display matrix (9 int32, 16.16 fixed point), or None.
        rotate_tag: The legacy ``rotate`` stream tag (clockwise degrees), used when there is no matrix.

    Returns:
        One of ``"none"``, ``"clock"``, ``"cclock"``, ``"clock_flip"``, ``"cclock_flip"``, ``"hflip"``, ``"vflip"``,
        ``"hvflip"``, named as FFmpeg's transpose/flip filters.
    """
    if matrix is None and rotate_tag:
        try:
            matrix = rotation_matrix(float(rotate_tag))
        except ValueError:
            return "none"
    if matrix is None:
        return "none"
    m = [float(v) for v in matrix[:9]]
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0.0 or scale1 == 0.0:
        return "none"
    # av_display_rotation_get() is the counter-clockwise angle; FFmpeg rotates by its negation, in [0, 360).
    theta = float(round(math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return "cclock_flip" if m[3] > 0 else "clock"
    if abs(theta - 180) < 1:
        flips = {(True, True): "hvflip", (True, False): "hflip", (False, True): "vflip"}
        return flips.get((m[0] < 0, m[4] < 0), "none")
    if abs(theta - 270) < 1:
        return "clock_flip" if m[3] < 0 else "cclock"
    if abs(theta) < 1 or abs(theta - 360) < 1:
        return "vflip" if m[4] < 0 else "none"
    warnings.warn(f"ignoring a display rotation of {theta:.1f} degrees (not a multiple of 90)", stacklevel=2)
    return "none"


def apply_transform(image: np.ndarray, transform: str) -> np.ndarray:
    """Apply a `display_transform` result to an ``(H, W, C)`` image (a view where possible)."""
    if transform == "none":
        return image
    if transform == "clock":
        return np.rot90(image, k=-1)
    if transform == "cclock":
        return np.rot90(image, k=1)
    if transform == "cclock_flip":
        return image.transpose(1, 0, 2)
    if transform == "clock_flip":
        return image[::-1, ::-1].transpose(1, 0, 2)
    if transform == "hflip":
        return image[:, ::-1]
    if transform == "vflip":
        return image[::-1]
    if transform == "hvflip":
        return image[::-1, ::-1]
    raise ValueError(f"unknown display transform {transform!r}")
