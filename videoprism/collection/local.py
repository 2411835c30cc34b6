"""Embed whole video collections into an embedding store on this machine: `embed_videos`, behind `videoprism embed`.

The main process expands the inputs (`videoprism.collection.inputs`), skips the videos the store already holds (same
path, size, mtime and model), starts the decoding worker processes (`videoprism.collection.decode_pool`), loads the
model once while they start (`videoprism.collection.embedder`) and runs batched inference on the clips they stream to
it, so the model stays busy while memory stays bounded. Where the model computes on the CPU with a thread on every
core, the decoding processes are stopped during each forward pass and decode between batches
(`decode_between_batches`): beside the model they would stall all its threads. Each batch is written to the store as
soon as it is embedded (`videoprism.collection.pipeline`), so an interrupted run (Ctrl-C, a kill, a crash) loses at
most the batch in flight, and the next run resumes where it stopped. A video that cannot be decoded is recorded in the
store with its error message and the run goes on.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import EmbedSettingsError
from ..store import MANIFEST_NAME, EmbeddingStore
from ..video_io import URL_TIMEOUT_S
from .clips import MAX_CLIP_BYTES
from .decode_pool import DecodePool, model_decode_pool
from .embedder import (
    DEFAULT_MODEL,
    VideoEmbedder,
    load_video_embedder,
    require_finite,
    resolve_device,
)
from .pipeline import (
    EmbedSummary,
    VideoKey,
    VideoState,
    add_clip,
    add_warning,
    check_settings,
    failure_row,
    plan_videos,
    start_run,
    store_record,
    write_clip_rows,
)
from .progress import Progress
from .thumbnails import save_posters

__all__ = ["embed_videos"]


def embed_videos(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    store: str | os.PathLike[str],
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    batch_size: int = 8,
    workers: int | None = None,
    num_frames: int | None = None,
    window: float | None = None,
    stride: float | None = None,
    frames: bool = False,
    retry_failed: bool = False,
    compact: bool = True,
    progress: bool | str = "auto",
    progress_interval: float = 10.0,
    queue_size: int | None = None,
    thumbnails: bool = True,
    network_timeout: float = URL_TIMEOUT_S,
    max_clip_bytes: int = MAX_CLIP_BYTES,
) -> EmbedSummary:
    """Embeds videos into a store (created if needed), skipping those it already holds.

    See the module docstring for the pipeline, `videoprism.collection.clips` for the clips and
    `videoprism.collection.embedder` for what each checkpoint type gives. Each clip becomes one
    store row (kind "clip", or "window" with its start/end seconds), with the indices of the frames fed to the model;
    a windowed video also gets a "video" row, the normalised mean of its window embeddings. Videos are keyed by
    absolute path + size + mtime + model id: a video already stored (or recorded as failed) is skipped, a modified
    one is embedded again and supersedes its old rows. At the end the store is compacted.

    Args:
        inputs: Files, folders, globs, URLs or ``@list.txt`` files (see `expand_inputs`).
        store: Store folder.
        model: A preset name, hub repo id, local folder, ``.npz`` or ``.safetensors`` file; recorded in the store as
            its `ModelSource.model_id` (hub repo, or the absolute path of a local checkpoint).
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        dtype: Weights dtype: "auto" (bfloat16 where the device computes it natively, else float32: `auto_dtype`),
            "bfloat16", "float16", "float32" or a torch dtype; None keeps float32.
        batch_size: Clips per forward pass (and per store write).
        workers: Decoding processes; 0 decodes in a thread of this process; None picks `default_workers`.
        num_frames: Frames per clip; default: the model's video processor's.
        window: Window length in seconds: one embedding per window plus a pooled video embedding; None: one clip
            per video.
        stride: Seconds between window starts (default ``window``).
        frames: Also store per-frame embeddings.
        retry_failed: Try again the videos the store records as failed.
        compact: Compact the store at the end (one shard, one metadata file).
        progress: "auto" (a bar on a terminal, periodic lines otherwise; also True), "bar", "lines" or False.
        progress_interval: Seconds between progress lines.
        queue_size: Pre-processed clips that may wait for the model (default ``2 * batch_size``).
        thumbnails: Write a poster JPEG per video and per window into ``STORE/thumbs`` (see
            `videoprism.collection.thumbnails`), made from the frames decoded for the model.
        network_timeout: Seconds a URL input may take to connect and to send each piece of data (see `read_video`).
        max_clip_bytes: Refuse settings (``num_frames`` x frame size) whose clips take more bytes than this.

    Returns:
        An `EmbedSummary`.

    Raises:
        VideoInputNotFoundError: An input does not exist.
        NoVideosFoundError: The inputs hold no video.
        EmbedSettingsError: Invalid settings, or settings that differ from those the store was made with.
        videoprism.store.StoreError: The store belongs to another model, is locked by another writer, or is corrupt.
        KeyboardInterrupt: On Ctrl-C, after the workers are stopped; every batch written so far is kept.
    """
    for name, value in (("batch_size", batch_size), ("num_frames", num_frames), ("queue_size", queue_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise EmbedSettingsError(f"{name} must be a positive integer, got {value!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise EmbedSettingsError(f"workers must be a non-negative integer, got {workers!r}")
    target = resolve_device(device)  # an unusable device fails before any work
    store = os.fspath(store)
    run = start_run(inputs, store, model, num_frames, window, stride, posters=thumbnails,
                    network_timeout=network_timeout, max_clip_bytes=max_clip_bytes)  # fmt: skip
    source, summary, processor, settings = run.source, run.summary, run.processor, run.settings
    model_id = source.model_id
    existed = (Path(store) / MANIFEST_NAME).is_file()
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(EmbeddingStore.open(store, model_id=model_id)) if existed else None
        if writer is not None:  # even when there is nothing to do: a re-run with other settings must not succeed
            check_settings(writer, processor.num_frames, window, stride)
        keys, failures = plan_videos(run.paths, writer, retry_failed, summary)  # a new store holds no video yet
        pool = None
        if keys:  # decoding starts while the model loads: the first batch is (partly) decoded when it is ready
            size = queue_size or 2 * batch_size
            pool = model_decode_pool([k[0] for k in keys], settings, workers, size, target)
            stack.enter_context(pool).start()
        embedder = None
        if keys or writer is None:  # a new store needs the model's embedding width
            embedder, _ = load_video_embedder(source, device=device, dtype=dtype, processor=processor)
            summary.dtype = embedder.dtype_name
        if writer is None:
            writer = stack.enter_context(
                EmbeddingStore.open(store, model_id=model_id, dim=embedder.dim, model_dtype=summary.dtype)
            )
        if failures:
            writer.write_failures(failures)
        if pool is not None:
            if embedder.dim != writer.dim:
                raise EmbedSettingsError(
                    f"model {model_id} gives {embedder.dim}-d embeddings; store {store} holds {writer.dim}-d ones"
                )
            _run(writer, keys, embedder, pool, summary, batch_size, frames, progress, progress_interval, model)
        if compact:
            writer.compact()
    return summary


def _run(
    writer: EmbeddingStore,
    keys: list[VideoKey],
    embedder: VideoEmbedder,
    pool: DecodePool,
    summary: EmbedSummary,
    batch_size: int,
    frames: bool,
    progress: bool | str,
    progress_interval: float,
    model: str | os.PathLike[str],
) -> None:
    """The decode -> embed -> write loop of `embed_videos`, on the clips of ``pool`` (closed at the end)."""
    windowed = pool.settings.window is not None
    states: dict[int, VideoState] = {}
    pending: list[tuple[int, dict[str, Any], np.ndarray]] = []
    failures: list[dict[str, Any]] = []
    bar = Progress(len(keys), progress, progress_interval)
    failed_before = summary.failed  # files that could not even be stat'ed: not part of `keys`

    def flush() -> None:
        if pending:
            pixels = torch.from_numpy(np.stack([p for _, _, p in pending]))
            with pool.paused():  # where the model computes on every core, decoding waits (`decode_between_batches`)
                embeds, frame_embeds = embedder(pixels, frames=frames)
            require_finite(embeds, model, "video embeddings")
            records = [store_record(keys[idx], meta) for idx, meta, _ in pending]
            pooled_records, pooled = [], []
            for (idx, meta, _), emb in zip(pending, embeds, strict=True):
                if (done := add_clip(states, idx, meta, emb, windowed, summary)) is not None:
                    pooled_records.append(store_record(keys[idx], done[0]))
                    pooled.append(done[1])
            summary.clips += len(pending)
            write_clip_rows(writer, records, embeds, frame_embeds, pooled_records, pooled)
            pending.clear()
        if failures:
            writer.write_failures(failures)
            failures.clear()
        bar.update(summary.embedded + summary.failed - failed_before, summary.clips, summary.failed)

    t0 = time.perf_counter()
    try:
        with pool:
            for event in pool.events():
                kind, idx = event[:2]
                if kind == "clip":
                    save_posters(writer.path, keys[idx][0], event[2])  # thumbnails land before their rows
                    pending.append((idx, event[2], event[3]))
                    if len(pending) >= batch_size:
                        flush()
                elif kind == "fail":
                    pending[:] = [p for p in pending if p[0] != idx]
                    states.pop(idx, None)
                    failures.append(failure_row(keys[idx], event[2], summary, bar))
                    if len(failures) >= batch_size:
                        flush()
                    else:
                        bar.update(summary.embedded + summary.failed - failed_before, summary.clips, summary.failed)
                elif kind == "warn":
                    add_warning(summary, keys[idx][0], event[2])
            flush()
    finally:
        summary.seconds = time.perf_counter() - t0
        bar.update(summary.embedded + summary.failed - failed_before, summary.clips, summary.failed, final=True)
        bar.close()
