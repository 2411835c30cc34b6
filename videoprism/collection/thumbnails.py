"""Poster thumbnails of a store's rows: one small JPEG per video and per window, shown by `videoprism serve`.

A poster is the middle sampled frame of the row's clip (the frames the model saw), scaled to ``POSTER_SIZE`` pixels
on its long side. `videoprism embed` makes them in its decoding workers from the frames it decodes anyway and writes
them before the rows they belong to; `videoprism thumbnails STORE` back-fills a store embedded without them.

Layout (inside the store folder, beside ``store.json``)::

    STORE/thumbs/<kk>/<key>.jpg     key = thumbnail_key(path, kind, start, end), a 40-hex SHA-1; kk = its first two
                                    characters (so that no folder holds more than a few thousand files)
    STORE/thumbs/<kk>/.tmp-*        temporaries of an interrupted write; ignored, removed by `videoprism thumbnails`

The key depends only on the row's video path, kind ("clip", "window" or "video") and window bounds, so it is the same
before and after a compaction and for a re-embedded (modified) file, whose new poster replaces the old one. A
windowed video's "video" row shows the poster of its middle window. Files are written under a temporary name,
fsynced and renamed into place, so a reader sees a complete JPEG or none. Thumbnails are derived data: readers treat
a missing one as "no picture", and deleting ``thumbs/`` loses nothing that `videoprism thumbnails` cannot rebuild.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "POSTER_SIZE",
    "THUMBS_DIR",
    "BackfillSummary",
    "backfill_thumbnails",
    "clip_posters",
    "poster_jpeg",
    "save_posters",
    "thumbnail_key",
    "thumbnail_path",
    "write_thumbnail",
]

THUMBS_DIR = "thumbs"
POSTER_SIZE = 160  # pixels on the long side
POSTER_QUALITY = 80  # JPEG quality
POSTERS_KEY = "posters"  # the clip-metadata entry that carries a worker's posters to the writer
_TMP_PREFIX = ".tmp-"


def _bound(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def thumbnail_key(path: str, kind: str, start: float | None, end: float | None) -> str:
    """The stable file key of a row's thumbnail: SHA-1 of ``[path, kind, start, end]`` (NaN bounds as null).

    Args:
        path: The row's video path, as the store records it.
        kind: "clip", "window" or "video".
        start: Window start in seconds (None or NaN for a whole-video row).
        end: Window end in seconds (None or NaN for a whole-video row).
    """
    text = json.dumps([str(path), str(kind), _bound(start), _bound(end)], ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def thumbnail_path(store: str | os.PathLike[str], key: str) -> Path:
    """Where the thumbnail with ``key`` (from `thumbnail_key`) lives in ``store``."""
    if len(key) != 40 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"thumbnail key must be 40 lowercase hex characters, got {key!r}")
    return Path(store) / THUMBS_DIR / key[:2] / f"{key}.jpg"


def poster_jpeg(frame: np.ndarray, size: int = POSTER_SIZE, quality: int = POSTER_QUALITY) -> bytes:
    """One RGB frame as a JPEG scaled to ``size`` pixels on its long side (never enlarged).

    Args:
        frame: (H, W, 3) uint8 RGB image.
        size: Long side of the poster in pixels.
        quality: JPEG quality (1-95).
    """
    from PIL import Image

    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or not frame.shape[0] or not frame.shape[1]:
        raise ValueError(f"a poster frame must be a non-empty (H, W, 3) uint8 array, got {frame.dtype} {frame.shape}")
    image = Image.fromarray(np.ascontiguousarray(frame), "RGB")
    scale = size / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def clip_posters(frames: np.ndarray, kinds: Sequence[str]) -> dict[str, bytes]:
    """Posters of a decoded clip for the given row kinds: all the JPEG of its middle frame.

    Args:
        frames: (T, H, W, 3) uint8 frames of the clip, as decoded for the model.
        kinds: The row kinds this clip's poster stands for, e.g. ("window",) or ("window", "video").
    """
    jpeg = poster_jpeg(frames[len(frames) // 2])
    return {kind: jpeg for kind in kinds}


def write_thumbnail(store: str | os.PathLike[str], key: str, data: bytes) -> Path:
    """Writes a thumbnail atomically (temporary name, fsync, rename); returns its path."""
    final = thumbnail_path(store, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return final


def save_posters(store: str | os.PathLike[str], path: str, meta: dict[str, Any]) -> int:
    """Writes the posters a decoding worker attached to a clip's metadata (and removes them from it).

    Args:
        store: Store folder.
        path: The video path the rows record.
        meta: The clip's row metadata; its ``"posters"`` entry (``{kind: jpeg}``) is popped. The row's own kind uses
            the row's bounds; a "video" poster has none.

    Returns:
        Number of thumbnails written.
    """
    posters: Mapping[str, bytes] = meta.pop(POSTERS_KEY, None) or {}
    for kind, data in posters.items():
        own = kind == meta.get("kind")
        key = thumbnail_key(path, kind, meta.get("start") if own else None, meta.get("end") if own else None)
        write_thumbnail(store, key, data)
    return len(posters)


# --------------------------------------------------------------------------------------------------------------------
# Back-filling an existing store


@dataclass
class BackfillSummary:
    """What `backfill_thumbnails` did: thumbnails written, rows that had one, and videos that failed to decode."""

    written: int = 0
    existing: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Row:
    kind: str
    start: float | None
    end: float | None
    frames: int
    key: str


def _rows_by_video(metadata: Any) -> dict[str, list[_Row]]:
    videos: dict[str, list[_Row]] = {}
    columns = metadata.select(["path", "kind", "start", "end", "frame_indices"]).to_pydict()
    for path, kind, start, end, indices in zip(*columns.values(), strict=True):
        start, end = _bound(start), _bound(end)
        row = _Row(kind, start, end, len(indices or ()), thumbnail_key(path, kind, start, end))
        videos.setdefault(path, []).append(row)
    return videos


def _fill_video(store: Path, path: str, rows: list[_Row]) -> int:
    """Decodes the clips of one video whose thumbnails are missing (as `videoprism embed` decoded them) and writes
    their posters; returns how many it wrote."""
    from ..video_io import read_video

    missing = {row.key for row in rows if not thumbnail_path(store, row.key).is_file()}
    windows = sorted((r for r in rows if r.kind == "window"), key=lambda r: r.start or 0.0)
    frames = max((r.frames for r in rows if r.kind != "video"), default=0) or None
    written = 0
    for i, row in enumerate(windows):
        video_row = next((r for r in rows if r.kind == "video"), None) if i == len(windows) // 2 else None
        keys = [k for k in (row.key, video_row.key if video_row else None) if k in missing]
        if not keys:
            continue
        try:
            clip = read_video(path, num_frames=row.frames or frames, start_time=row.start, end_time=row.end)
        except ValueError:  # a window holding no frame (variable frame rate gap): the whole video's middle instead
            clip = read_video(path, num_frames=row.frames or frames)
        jpeg = poster_jpeg(clip.frames[len(clip) // 2])
        for key in keys:
            write_thumbnail(store, key, jpeg)
            written += 1
    whole = [r for r in rows if r.kind == "clip" and r.key in missing]
    if whole:
        clip = read_video(path, num_frames=whole[0].frames or frames)
        jpeg = poster_jpeg(clip.frames[len(clip) // 2])
        for row in whole:
            write_thumbnail(store, row.key, jpeg)
            written += 1
    return written


def _remove_temporaries(store: Path) -> None:
    for tmp in (store / THUMBS_DIR).glob(f"*/{_TMP_PREFIX}*"):
        tmp.unlink(missing_ok=True)


def backfill_thumbnails(
    store: str | os.PathLike[str],
    *,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    paths: Iterable[str] | None = None,
) -> BackfillSummary:
    """Writes the missing thumbnails of a store's live rows; resumable (rows that have one are skipped).

    Takes no store lock: thumbnails are separate files written atomically, so this may run beside `videoprism embed`
    and `videoprism serve`.

    Args:
        store: Store folder.
        workers: Videos decoded at a time (threads; decoding releases the GIL).
        progress: Called as ``progress(videos done, videos to do)`` after each video.
        paths: Only these videos (as the store records their paths); default: all.

    Returns:
        A `BackfillSummary`; a video that fails to decode is listed in ``failures`` and the others go on.

    Raises:
        videoprism.store.StoreError: No store there, or it is unreadable.
        ValueError: ``workers`` is not a positive integer.
    """
    from ..store import open_store
    from ..video_io import VideoDecodeError

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    root = Path(store)
    reader = open_store(root)
    videos = _rows_by_video(reader.metadata)
    if paths is not None:
        wanted = set(paths)
        videos = {p: rows for p, rows in videos.items() if p in wanted}
    summary = BackfillSummary()
    todo: list[tuple[str, list[_Row]]] = []
    for path, rows in videos.items():
        have = sum(thumbnail_path(root, row.key).is_file() for row in rows)
        summary.existing += have
        if have < len(rows):
            todo.append((path, rows))
    if (root / THUMBS_DIR).is_dir():
        _remove_temporaries(root)

    def fill(item: tuple[str, list[_Row]]) -> tuple[str, int, str | None]:
        path, rows = item
        try:
            return path, _fill_video(root, path, rows), None
        except (VideoDecodeError, ValueError, OSError) as err:
            return path, 0, str(err) if isinstance(err, VideoDecodeError) else f"{type(err).__name__}: {err}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (path, written, error) in enumerate(pool.map(fill, todo), 1):
            summary.written += written
            if error is not None:
                summary.failures.append((path, error))
            if progress is not None:
                progress(done, len(todo))
    return summary
