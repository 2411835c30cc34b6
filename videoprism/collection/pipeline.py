"""What both embedding engines share: the plan of videos to do, the rows they become, and the run's summary.

The local engine (`videoprism.collection.local`) and the Ray engine (`videoprism.collection.ray_engine`) differ in
where clips are decoded and embedded; both check their settings against the store, skip what it holds, and turn
embedded clips and failures into store rows here, so both write the same rows, metadata and resume keys. A
windowed video also gets a "video" row: the normalised mean of its window embeddings.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._sources import ModelSource, resolve_source
from .._text import printable
from ..errors import EmbedSettingsError, NoVideosFoundError
from ..store import EmbeddingStore
from ..video_io import window_bounds
from .clips import ClipSettings
from .decode_pool import decoder_niceness
from .embedder import load_processor
from .inputs import VIDEO_EXTENSIONS, expand_inputs, resume_key
from .progress import Progress

__all__ = [
    "EmbedSummary",
    "RunStart",
    "VideoKey",
    "VideoState",
    "add_clip",
    "add_warning",
    "check_settings",
    "failure_message",
    "failure_row",
    "plan_videos",
    "start_run",
    "store_record",
    "write_clip_rows",
]

#: A video's resume key: absolute path (or URL), size in bytes, mtime in nanoseconds.
VideoKey = tuple[str, int, int]


@dataclass
class EmbedSummary:
    """What an `embed_videos` run did.

    Attributes:
        store: Store folder.
        model_id: Model id recorded in the store.
        videos: Videos the inputs named.
        embedded: Videos embedded by this run.
        skipped: Videos skipped because the store already held them (or their recorded failure).
        skipped_failed: How many of the skipped videos the store records as failed (``retry_failed`` retries them).
        failed: Videos that failed in this run (recorded in the store).
        clips: Clips (windows) run through the model.
        seconds: Wall time of the decoding + inference pipeline.
        dtype: Weights dtype the model computed in ("float32", "bfloat16", ...; "auto" when each Ray actor chose its
            own); None when no model was needed.
        failures: ``(path, error)`` of each failed video.
        warnings: ``(path, message)`` of decoder warnings (e.g. a truncated stream whose readable part was used), the
            first one of each video.
        skipped_media: Files in the scanned folders that FFmpeg may read but whose extension is not a video's (audio,
            images, subtitles); they were not embedded (name one explicitly to try it).
    """

    store: str
    model_id: str
    videos: int = 0
    embedded: int = 0
    skipped: int = 0
    skipped_failed: int = 0
    failed: int = 0
    clips: int = 0
    seconds: float = 0.0
    dtype: str | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    skipped_media: list[str] = field(default_factory=list)

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0


@dataclass
class VideoState:
    """A video whose clips are being embedded: enough to write its pooled "video" row at the end.

    The pooled row is the mean of the window rows as the store holds them (unit norm), so each window embedding is
    summed after normalising it.
    """

    expected: int = 0
    embedded: int = 0
    total: np.ndarray | None = None
    indices: set[int] = field(default_factory=set)
    duration: float | None = None
    num_frames_total: int | None = None

    def add_clip(self, meta: dict[str, Any], embedding: np.ndarray, windowed: bool) -> bool:
        """Counts one embedded clip (summing window embeddings); True once the video's last clip is in."""
        self.embedded += 1
        if windowed:
            unit = embedding.astype(np.float64) / np.linalg.norm(embedding.astype(np.float64))
            self.total = unit if self.total is None else self.total + unit
            self.indices.update(meta["frame_indices"])
        return self.embedded == self.expected

    def pooled_row(self) -> tuple[dict[str, Any], np.ndarray]:
        """The video-level row of a windowed video: metadata and the mean of its window embeddings."""
        meta = {
            "kind": "video",
            "frame_indices": sorted(self.indices),
            "duration": self.duration,
            "num_frames_total": self.num_frames_total,
            "video_rows": self.expected + 1,
        }
        return meta, self.total / self.expected


def add_clip(
    states: dict[int, VideoState],
    idx: int,
    meta: dict[str, Any],
    embedding: np.ndarray,
    windowed: bool,
    summary: EmbedSummary,
) -> tuple[dict[str, Any], np.ndarray] | None:
    """Counts an embedded clip of video ``idx``; returns the pooled row (meta, mean) that completes a windowed video."""
    state = states.setdefault(idx, VideoState())
    state.expected = meta["video_rows"] - 1 if windowed else 1
    state.duration, state.num_frames_total = meta["duration"], meta["num_frames_total"]
    if not state.add_clip(meta, embedding, windowed):
        return None
    summary.embedded += 1
    del states[idx]
    return state.pooled_row() if windowed else None


def store_record(key: VideoKey, meta: dict[str, Any]) -> dict[str, Any]:
    """The store record of one row of a video: its resume key and the row's metadata."""
    path, size, mtime = key
    return {"path": path, "size": size, "mtime_ns": mtime, **meta}


def failure_message(path: str, error: str) -> str:
    """The line that reports a failed video: ``failed: PATH: ERROR`` (the path once, if the error names it), with
    control characters and undecodable bytes escaped (`printable`)."""
    return printable(f"failed: {error if error.startswith(path) else f'{path}: {error}'}")


def add_warning(summary: EmbedSummary, path: str, message: str) -> None:
    """Records a decoder warning of a video, once per video: its first warning (each window of a video reads the
    same file and would repeat it), without the path the message may start with (the report prints it)."""
    if any(seen == path for seen, _ in summary.warnings):
        return
    for prefix in (f"{path}: ", f"{path!r}: "):
        message = message.removeprefix(prefix)
    summary.warnings.append((path, message))


def failure_row(key: VideoKey, error: str, summary: EmbedSummary, bar: Progress | None = None) -> dict[str, Any]:
    """Counts a failed video (and reports it on `bar`); returns its failure row."""
    path, size, mtime = key
    summary.failures.append((path, error))
    summary.failed += 1
    if bar is not None:
        bar.write(failure_message(path, error))
    return {"path": path, "size": size, "mtime_ns": mtime, "error": error}


def plan_videos(
    paths: list[str], writer: EmbeddingStore | None, retry_failed: bool, summary: EmbedSummary
) -> tuple[list[VideoKey], list[dict[str, Any]]]:
    """The resume keys still to embed, and failure rows for files that cannot be stat'ed; counts skips and failures."""
    keys: list[VideoKey] = []
    failures: list[dict[str, Any]] = []
    for path in paths:
        try:
            key = resume_key(path)
        except OSError as err:  # vanished or unreadable since the inputs were listed
            failures.append(failure_row((path, 0, 0), f"cannot stat the file ({err})", summary))
            continue
        if writer is not None and writer.is_done(*key):
            recorded_failure = bool((writer.status(key[0]) or {}).get("failed"))
            if not (retry_failed and recorded_failure):
                summary.skipped += 1
                summary.skipped_failed += recorded_failure
                continue
        keys.append(key)
    return keys, failures


def write_clip_rows(
    writer: EmbeddingStore,
    records: list[dict[str, Any]],
    embeds: np.ndarray,
    frame_embeds: np.ndarray | None,
    pooled_records: list[dict[str, Any]],
    pooled: list[np.ndarray],
) -> None:
    """Clip rows and the pooled rows they complete, in one write unless the clip rows carry frame embeddings."""
    if pooled and frame_embeds is None:
        writer.write_batch(records + pooled_records, np.concatenate([embeds, np.stack(pooled)]))
    else:
        writer.write_batch(records, embeds, frame_embeds)
        if pooled:  # a pooled row has no frames of its own; rows of one write share the frames layout
            writer.write_batch(pooled_records, np.stack(pooled))


@dataclass
class RunStart:
    """What a run knows before it touches the store: its videos, model, summary, video processor and clip settings."""

    paths: list[str]
    source: ModelSource
    summary: EmbedSummary
    processor: Any
    settings: ClipSettings


def start_run(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    store: str,
    model: str | os.PathLike[str],
    num_frames: int | None,
    window: float | None,
    stride: float | None,
    *,
    posters: bool,
    network_timeout: float,
    max_clip_bytes: int,
) -> RunStart:
    """Validates a run's window settings, expands its inputs, resolves its model once (the processor, the model and
    the store's model id all use it) and makes its clip settings: settings that cannot work abort the run here,
    before the store is touched, and never fail each video.

    Files of scanned folders with other media extensions go to the summary's ``skipped_media`` (see `expand_inputs`).
    """
    if stride is not None and window is None:
        raise EmbedSettingsError("stride needs window: pass window=SECONDS too")
    if window is not None:
        window_bounds(1.0, window, stride)  # validates both
    decoder_niceness()  # validates VIDEOPRISM_DECODER_NICE
    skipped: list[str] = []
    paths = expand_inputs(inputs, skipped)
    if not paths:
        raise NoVideosFoundError(
            f"no video files found in {inputs!r}; extensions looked for: {sorted(VIDEO_EXTENSIONS)}"
        )
    source = resolve_source(model)
    summary = EmbedSummary(store=store, model_id=source.model_id, videos=len(paths), skipped_media=skipped)
    processor = load_processor(source, num_frames)
    settings = ClipSettings.of(
        processor, window, stride, posters=posters, network_timeout=network_timeout, max_clip_bytes=max_clip_bytes
    )
    return RunStart(paths, source, summary, processor, settings)


def check_settings(writer: EmbeddingStore, num_frames: int, window: float | None, stride: float | None) -> None:
    """Refuses to add clips made with other settings to a store: resuming would silently mix them.

    Reads the rows the writer listed when it opened the store (no second listing of its metadata).
    """
    import pyarrow.compute as pc

    meta = writer.rows_at_open
    store = writer.path
    if meta is None or not meta.num_rows:
        return
    kinds = set(meta["kind"].unique().to_pylist())
    hint = "pass the settings the store was made with, or write to another --out"
    if window is None and kinds & {"window", "video"}:
        raise EmbedSettingsError(f"store {store} holds per-window embeddings (made with --window); {hint}")
    if window is not None and "clip" in kinds:
        raise EmbedSettingsError(f"store {store} holds one clip per video (made without --window); {hint}")
    clips = meta.filter(pc.not_equal(meta["kind"], "video"))
    counts = set(pc.list_value_length(clips["frame_indices"]).unique().to_pylist())
    if counts and counts != {num_frames}:
        raise EmbedSettingsError(
            f"store {store} holds clips of {sorted(counts)} frames, not {num_frames}; {hint} (--num-frames)"
        )
    if window is not None:
        starts = np.asarray(clips["start"].to_numpy(zero_copy_only=False), np.float64)
        ends = np.asarray(clips["end"].to_numpy(zero_copy_only=False), np.float64)
        durations = np.asarray(clips["duration"].to_numpy(zero_copy_only=False), np.float64)
        lengths = (ends - starts)[ends < durations - 1e-6]  # windows not clipped by the end of their video
        positive = starts[starts > 0]
        stride = window if stride is None else stride
        if (lengths.size and not np.allclose(lengths, window, atol=1e-4)) or (
            positive.size and not math.isclose(positive.min(), stride, abs_tol=1e-4)
        ):
            raise EmbedSettingsError(f"store {store} holds windows of another --window/--stride; {hint}")
