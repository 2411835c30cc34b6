"""Embed video collections on a Ray cluster: `embed_videos_ray`, behind ``videoprism embed --engine ray``.

The same job as `videoprism.collection.embed_videos`, with Ray Data doing the decoding and the inference across a
cluster; the results go to the same store, in the same format, with the same rows, metadata and resume keys.

The pipeline::

    driver:  expand the inputs, skip what the store holds (resume), ray.data.from_items([{idx, path}, ...])
      -> map_batches(_decode_videos)           CPU tasks: decode + sample + pre-process each video into clips (in a
                                               child process); a video that fails becomes a failure row, not an error
      -> map_batches(_InferenceWorker)         an actor pool (``concurrency`` actors, ``num_gpus_per_worker`` GPUs
                                               each); every actor loads the model once and embeds batches of clips
      -> driver: iter_batches -> EmbeddingStore.write_batch / write_failures, pooled "video" rows, compaction

Only the driver writes the store, through the same `EmbeddingStore` calls as the local engine, so resume keys,
failure records, atomic writes and the single-writer lock behave exactly as in a local run; the store is a path on
the driver's file system (`EmbeddingStore` works on local paths: put it on a shared mount to read it elsewhere).
Embeddings travel back to the driver in float32 (D floats per clip, plus T x D with ``frames``): the pixels never do.

Resources. Decoding tasks take 1 CPU each. Inference actors take ``num_gpus_per_worker`` GPUs and
``num_cpus_per_worker`` CPUs (default 1). When inference runs on CPUs with 1 CPU per actor, the two steps have the
same resource needs and Ray Data fuses them: each actor decodes its videos and then embeds them, so the actors alone
use the CPUs (separate decoding tasks would wait forever for CPUs that the actors hold). With GPUs (or another CPU
count per actor) decoding runs in separate tasks on every free CPU of the cluster, streaming clips to the actors.

Where files must be. The driver lists and stats the inputs (resume keys are ``path, size, mtime``) and every worker
opens them by the same path, so on a multi-node cluster the videos must be on storage mounted at the same path on
all nodes (NFS, a FUSE mount of a bucket) or be URLs. The model is loaded by each actor from the source the driver
resolved (`videoprism.resolve_source`): a hub repo (downloaded on each node) or a path on shared storage.

Decoding happens in a child process of each Ray worker (the local engine's decoding worker), so a video that crashes
its decoder (a segfault inside FFmpeg, not just a Python error) fails alone, as in the local engine; decoding in the
Ray worker itself would let such a video kill the worker, which Ray Data restarts and retries forever.

A new store is created when the first embeddings arrive (their width is the store's ``dim``), so the driver never
loads the model. Row ids differ from a local run's: they follow commit order, and clips reach the driver in completion
order (they differ between local runs with several decoding workers too). Everything written before an error or a
Ctrl-C stays in the store and is skipped by the next run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import os
import queue
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._sources import ModelSource
from ..errors import EmbedSettingsError, RayNotInstalledError
from ..store import MANIFEST_NAME, EmbeddingStore
from ..video_io import URL_TIMEOUT_S
from .clips import MAX_CLIP_BYTES, ClipSettings
from .decode_pool import POLL_S, decoder_niceness, decoding_worker_process, one_thread_children
from .embedder import DEFAULT_MODEL, load_video_embedder, resolve_dtype
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

__all__ = ["RayNotInstalledError", "embed_videos_ray"]

INSTALL_HINT = 'pip install "videoprism[ray]"'
# Input blocks: enough for every CPU of a large cluster to get several, few enough that Ray tracks them cheaply.
_MAX_INPUT_BLOCKS = 4096
# Decoded clips that the decoding process may have ready ahead of the Ray worker that reads them.
_QUEUED_CLIPS = 4


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - ray without the [data] extra imports, but ray.data does not
    except ImportError as err:
        raise RayNotInstalledError(
            f"the Ray engine needs Ray Data ({err}); install it with: {INSTALL_HINT}, or use the local engine "
            f"(--engine local)"
        ) from err
    return ray


# ----------------------------------------------------------------------------------------------------------------
# Decoding (Ray tasks)


class _IsolatedDecoder:
    """A decoding process owned by this (Ray worker) process and reused across videos and tasks.

    It runs the local engine's decoding worker (`videoprism.collection.decode_pool.decoding_worker_process`), so a
    video whose decoding kills the process (a crash inside FFmpeg) fails alone, as in the local engine, and the next
    video gets a fresh process.
    Decoding in the Ray worker itself would let such a video kill the worker: Ray restarts an actor and retries its
    task forever, so one bad file would stall the whole run.
    """

    def __init__(self, settings: ClipSettings) -> None:
        self.settings = settings
        self.proc: Any = None
        self._request = 0

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.task_q = ctx.Queue()
        self.result_q = ctx.Queue(maxsize=_QUEUED_CLIPS)
        args = (self.task_q, self.result_q, self.settings, 0, decoder_niceness())
        self.proc = ctx.Process(target=decoding_worker_process, args=args, daemon=True, name="videoprism-decode")
        with one_thread_children():
            self.proc.start()

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(timeout=5)
        for q in (self.task_q, self.result_q):
            q.cancel_join_thread()
            q.close()
        self.proc = None

    def events(self, path: str) -> Iterator[tuple]:
        """Yields ``("clip", meta, pixels)`` and ``("warn", message)`` events of one video, then ``("fail", error)``
        if it failed."""
        if self.proc is None or not self.proc.is_alive():
            self.close()
            self._start()
        self._request += 1
        request = self._request  # tags this video's messages: an abandoned earlier request may still be answering
        self.task_q.put((request, path))
        while True:
            try:
                msg = self.result_q.get(timeout=POLL_S)
            except queue.Empty:
                if self.proc.is_alive():
                    continue
                code = self.proc.exitcode
                self.close()
                yield ("fail", f"the decoding process died (exit code {code}) while reading this video")
                return
            kind, _, tag = msg[:3]
            if tag != request or kind == "start":
                continue
            if kind == "clip":
                yield ("clip", msg[3], msg[4])
            elif kind == "warn":
                yield ("warn", msg[3])
            else:
                if kind in ("fail", "abort"):  # abort: out of memory (the settings ask too much); fails this video
                    yield ("fail", msg[3])
                return


_DECODERS: dict[str, _IsolatedDecoder] = {}


def _decoder_for(settings: ClipSettings) -> _IsolatedDecoder:
    """This process's decoder for ``settings`` (one at a time: a new run's settings replace the previous one)."""
    key = json.dumps(dataclasses.asdict(settings), sort_keys=True)
    if key not in _DECODERS:
        for old in _DECODERS.values():
            old.close()
        _DECODERS.clear()
        _DECODERS[key] = _IsolatedDecoder(settings)
    return _DECODERS[key]


def _row(idx: int, kind: str, meta: dict[str, Any] | None, error: str, warned: list[str], pixels: np.ndarray):
    return {
        "idx": np.array([idx], np.int64),
        "kind": np.array([kind]),
        "meta": np.array([json.dumps(meta) if meta is not None else ""]),
        "error": np.array([error]),
        "warnings": np.array([json.dumps(warned)]),
        "pixels": pixels[None],
    }


def _decode_videos(batch: dict[str, np.ndarray], settings: ClipSettings) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data UDF: ``{idx, path}`` rows in; rows ``idx, kind, meta, error, warnings, pixels`` out.

    ``kind`` is "clip" (one per clip, with its pixels), "fail" (a video that failed, with its error, after the clips
    it gave before failing) or "note" (decoder warnings of a video that succeeded; they come after its clips). Only
    "clip" rows carry pixels: the others have an empty array there.
    """
    decoder = _decoder_for(settings)
    no_pixels = np.zeros((0,), np.float32)
    for idx, path in zip(batch["idx"].tolist(), batch["path"].tolist(), strict=True):
        warned: list[str] = []
        failed = False
        for event in decoder.events(path):
            if event[0] == "warn":
                warned.append(event[1])
            elif event[0] == "clip":
                yield _row(idx, "clip", event[1], "", warned, np.asarray(event[2], np.float32))
                warned = []
            else:
                yield _row(idx, "fail", None, event[1], warned, no_pixels)
                failed = True
        if warned and not failed:
            yield _row(idx, "note", None, "", warned, no_pixels)


# ----------------------------------------------------------------------------------------------------------------
# Inference (Ray actors)


class _InferenceWorker:
    """Ray Data callable class: loads the model once per actor, then embeds batches of clip rows.

    Rows other than clips pass through with zero embeddings; the model sees only the clips.
    """

    def __init__(
        self, model: ModelSource, device: str | None, dtype: Any, num_frames: int | None, frames: bool, cpu_threads: int
    ) -> None:
        import torch

        torch.set_num_threads(max(1, cpu_threads))
        self.embedder, _ = load_video_embedder(model, device=device, dtype=dtype, num_frames=num_frames)
        self.frames = frames

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        n = len(batch["idx"])
        dim = self.embedder.dim
        ok = np.flatnonzero(batch["kind"] == "clip")
        embeds = np.zeros((n, dim), np.float32)
        frame_embeds = np.zeros((n, self.embedder.num_frames, dim), np.float32) if self.frames else None
        if len(ok):
            # A batch holding a pixel-less row comes as an object array of per-row arrays: stack the clips only.
            pixels = np.stack([np.asarray(batch["pixels"][i], np.float32) for i in ok])
            emb, frame_emb = self.embedder(torch.from_numpy(pixels), frames=self.frames)
            embeds[ok] = emb
            if frame_embeds is not None:
                frame_embeds[ok] = frame_emb
        out = {key: batch[key] for key in ("idx", "kind", "meta", "error", "warnings")}
        out["embedding"] = embeds
        if frame_embeds is not None:
            out["frame_embeddings"] = frame_embeds
        return out


# ----------------------------------------------------------------------------------------------------------------
# Driver


def _check_positive(name: str, value: Any, kind: type = int, allow_zero: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
    if not ok or not (value >= 0 if allow_zero else value > 0) or not math.isfinite(value):
        what = "non-negative" if allow_zero else "positive"
        raise EmbedSettingsError(f"{name} must be a {what} {'number' if kind is float else 'integer'}, got {value!r}")


def _check_concurrency(concurrency: Any) -> None:
    if concurrency is None:
        return
    if isinstance(concurrency, tuple):
        if len(concurrency) != 2:
            raise EmbedSettingsError(f"concurrency must be N or (min, max), got {concurrency!r}")
        for value in concurrency:
            _check_positive("concurrency", value)
        if concurrency[0] > concurrency[1]:
            raise EmbedSettingsError(f"concurrency (min, max) needs min <= max, got {concurrency!r}")
    else:
        _check_positive("concurrency", concurrency)


def _actor_pool_size(
    ray: Any, concurrency: int | tuple[int, int] | None, num_gpus: float, num_cpus: float, fused: bool
) -> tuple[int, int]:
    """``(min, max)`` actors: as asked, else one per ``num_gpus`` GPUs or per ``num_cpus`` CPUs of the cluster."""
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if concurrency is None:
        if num_gpus > 0:
            if gpus < num_gpus:
                raise EmbedSettingsError(
                    f"num_gpus_per_worker={num_gpus:g} but the Ray cluster has {gpus:g} GPUs; pass --concurrency N "
                    f"explicitly on an autoscaling cluster, or --num-gpus-per-worker 0 to run on CPUs"
                )
            size = int(gpus // num_gpus)
        else:  # with separate decoding tasks, leave them at least one CPU
            size = int((cpus if fused else cpus - 1) // num_cpus)
        lo = hi = max(1, size)
    elif isinstance(concurrency, tuple):
        lo, hi = concurrency
    else:
        lo = hi = concurrency
    if not fused and cpus and hi * num_cpus > cpus - 1:
        warnings.warn(
            f"{hi} inference actors x {num_cpus:g} CPUs leave {max(cpus - hi * num_cpus, 0):g} of the cluster's "
            f"{cpus:g} CPUs for decoding; the run stalls unless the cluster grows: lower --concurrency",
            RuntimeWarning,
            stacklevel=4,
        )
    return lo, hi


def embed_videos_ray(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    store: str | os.PathLike[str],
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    address: str | None = None,
    num_gpus_per_worker: float = 0,
    num_cpus_per_worker: float | None = None,
    concurrency: int | tuple[int, int] | None = None,
    batch_size: int = 8,
    num_frames: int | None = None,
    window: float | None = None,
    stride: float | None = None,
    frames: bool = False,
    device: str | None = "auto",
    dtype: str | Any | None = "auto",
    retry_failed: bool = False,
    compact: bool = True,
    progress: bool | str = "auto",
    progress_interval: float = 10.0,
    network_timeout: float = URL_TIMEOUT_S,
    max_clip_bytes: int = MAX_CLIP_BYTES,
) -> EmbedSummary:
    """Embeds videos into a store on a Ray cluster, skipping those it already holds; like `embed_videos`.

    Same inputs, clips, store rows, resume keys, failure records and summary as `videoprism.collection.embed_videos`;
    see the module docstring for the pipeline and where files must be. Connects to Ray when it is not yet
    initialised (and disconnects at the end; a local instance it started is stopped), or uses the caller's
    connection.

    Args:
        inputs: Files, folders, globs, URLs or ``@list.txt`` files (see `videoprism.collection.expand_inputs`).
        store: Store folder on the driver's file system.
        model: A preset name, hub repo id, local folder, ``.npz`` or ``.safetensors`` file, loadable on every node.
        address: Ray cluster: "auto" (the cluster this machine belongs to, e.g. run on the head node),
            ``"ray://HOST:10001"`` (Ray Client), or None (``RAY_ADDRESS`` if set, else a new local instance).
        num_gpus_per_worker: GPUs per inference actor (fractions share a GPU); 0 runs inference on CPUs.
        num_cpus_per_worker: CPUs per inference actor, also its torch thread count (default 1).
        concurrency: Inference actors: N, or ``(min, max)`` for an autoscaling pool; default one per
            ``num_gpus_per_worker`` GPUs of the cluster, or one per ``num_cpus_per_worker`` CPUs without GPUs.
        batch_size: Clips per forward pass, and videos per decoding call.
        num_frames: Frames per clip; default: the model's video processor's.
        window: Window length in seconds: one embedding per window plus a pooled video embedding; None: one clip
            per video.
        stride: Seconds between window starts (default ``window``).
        frames: Also store per-frame embeddings.
        device: Inference device inside the actors: "auto" (CUDA when the actor has a GPU), "cpu", "cuda".
        dtype: Weights dtype: "auto" (bfloat16 where the device computes it natively, else float32: `auto_dtype`),
            "bfloat16", "float16", "float32" or a torch dtype; None keeps float32.
        retry_failed: Try again the videos the store records as failed.
        compact: Compact the store at the end (one shard, one metadata file).
        progress: "auto" (a bar on a terminal, periodic lines otherwise; also True), "bar", "lines" or False.
        progress_interval: Seconds between progress lines.
        network_timeout: Seconds a URL input may take to connect and to send each piece of data (see `read_video`).
        max_clip_bytes: Refuse settings (``num_frames`` x frame size) whose clips take more bytes than this.

    Returns:
        An `EmbedSummary`; ``seconds`` covers the Ray pipeline (actor start-up and model loading included).

    Raises:
        RayNotInstalledError: Ray Data is not installed.
        VideoInputNotFoundError: An input does not exist.
        NoVideosFoundError: The inputs hold no video.
        EmbedSettingsError: Invalid settings, or settings that differ from those the store was made with.
        videoprism.store.StoreError: The store belongs to another model, is locked by another writer, or is corrupt.
        KeyboardInterrupt: On Ctrl-C; every batch written so far is kept.
    """
    ray = _import_ray()
    _check_positive("batch_size", batch_size)
    if num_frames is not None:
        _check_positive("num_frames", num_frames)
    _check_positive("num_gpus_per_worker", num_gpus_per_worker, float, allow_zero=True)
    num_cpus = 1.0 if num_cpus_per_worker is None else num_cpus_per_worker
    _check_positive("num_cpus_per_worker", num_cpus, float)
    _check_concurrency(concurrency)
    if num_gpus_per_worker == 0 and device is not None and str(device).startswith("cuda"):
        raise EmbedSettingsError(
            f"device={device!r} needs GPUs in the inference actors: pass num_gpus_per_worker=1 (--num-gpus-per-worker)"
        )
    resolve_dtype(dtype)  # fail here rather than in every actor
    store = os.fspath(store)
    run = start_run(inputs, store, model, num_frames, window, stride, posters=False,
                    network_timeout=network_timeout, max_clip_bytes=max_clip_bytes)  # fmt: skip
    source, summary, processor, settings = run.source, run.summary, run.processor, run.settings
    model_id = source.model_id
    with _LazyWriter(store, model_id) as lazy:
        if lazy.writer is not None:
            check_settings(lazy.writer, processor.num_frames, window, stride)
        keys, failures = plan_videos(run.paths, lazy.writer, retry_failed, summary)
        if failures:
            lazy.write_failures(failures)
        if keys:
            # "auto" resolves in each actor, on the device it got
            summary.dtype = "auto" if dtype == "auto" else str(resolve_dtype(dtype) or "float32").removeprefix("torch.")
            actor_args = {"model": source, "device": device, "dtype": dtype, "num_frames": num_frames,
                          "frames": frames, "cpu_threads": max(1, round(num_cpus))}  # fmt: skip
            _run(ray, address, lazy, keys, settings, actor_args, summary, batch_size, num_gpus_per_worker, num_cpus,
                 concurrency, progress, progress_interval)  # fmt: skip
        if lazy.writer is None:  # nothing reached the model (every input failed to stat): ask the model its dimension
            embedder, _ = load_video_embedder(source, device="cpu", dtype=dtype, processor=processor)
            lazy.open(embedder.dim)
            del embedder
        if compact:
            lazy.open().compact()
    return summary


class _LazyWriter:
    """The store's writer: opened now when the store exists, else when the first embeddings give the dimension.

    Failure records that come before the store exists wait here until it is created.
    """

    def __init__(self, store: str, model_id: str) -> None:
        self.store, self.model_id = store, model_id
        exists = (Path(store) / MANIFEST_NAME).is_file()
        self.writer = EmbeddingStore.open(store, model_id=model_id) if exists else None
        self._waiting: list[dict[str, Any]] = []

    def open(self, dim: int | None = None) -> EmbeddingStore:
        """The writer, creating the store with ``dim`` if needed; checks ``dim`` against an existing store's."""
        if self.writer is None:
            if dim is None:
                raise RuntimeError("the store is not created yet and no embedding dimension is known")
            self.writer = EmbeddingStore.open(self.store, model_id=self.model_id, dim=dim)
            if self._waiting:
                self.writer.write_failures(self._waiting)
                self._waiting = []
        elif dim is not None and dim != self.writer.dim:
            raise EmbedSettingsError(
                f"model {self.model_id} gives {dim}-d embeddings; store {self.store} holds {self.writer.dim}-d ones"
            )
        return self.writer

    def write_failures(self, records: list[dict[str, Any]]) -> None:
        if self.writer is None:
            self._waiting += records
        else:
            self.writer.write_failures(records)

    def __enter__(self) -> _LazyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()


def _run(
    ray: Any,
    address: str | None,
    lazy: _LazyWriter,
    keys: list[VideoKey],
    settings: ClipSettings,
    actor_args: dict[str, Any],
    summary: EmbedSummary,
    batch_size: int,
    num_gpus: float,
    num_cpus: float,
    concurrency: int | tuple[int, int] | None,
    progress: bool | str,
    progress_interval: float,
) -> None:
    """Connects to Ray (unless connected), runs the pipeline and writes what comes out."""
    started = not ray.is_initialized()
    if started:
        ray.init(address=address)
    elif address is not None:
        warnings.warn(
            f"Ray is already initialised in this process; using that connection, not address={address!r}",
            RuntimeWarning,
            stacklevel=3,
        )
    context = ray.data.DataContext.get_current()
    saved_bars = context.enable_progress_bars
    context.enable_progress_bars = False  # our own progress reports videos and clips/s
    try:
        # Same resource needs -> Ray Data fuses decoding into the actors (see the module docstring).
        fused = num_gpus == 0 and num_cpus == 1
        lo, hi = _actor_pool_size(ray, concurrency, num_gpus, num_cpus, fused)
        items = [{"idx": i, "path": key[0]} for i, key in enumerate(keys)]
        # One decoding call per input block. A block holds a batch of videos (a fused actor then embeds them in one
        # forward pass) or one video when windowed (a long video has many windows), but there are enough blocks to
        # keep every decoding CPU and every actor busy on a small collection too.
        per_block = 1 if settings.window is not None else batch_size
        cpus = int(ray.cluster_resources().get("CPU", 1))
        blocks = min(len(items), _MAX_INPUT_BLOCKS, max(math.ceil(len(items) / per_block), 4 * hi, 2 * cpus))
        dataset = (
            ray.data.from_items(items, override_num_blocks=blocks)
            .map_batches(
                _decode_videos,
                batch_size=None,  # a whole block per call
                batch_format="numpy",
                num_cpus=1,
                fn_kwargs={"settings": settings},
            )
            .map_batches(
                _InferenceWorker,
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                fn_constructor_kwargs=actor_args,
            )
        )
        _write_results(dataset, lazy, keys, settings, summary, progress, progress_interval)
    finally:
        context.enable_progress_bars = saved_bars
        if started:
            ray.shutdown()


def _write_results(
    dataset: Any,
    lazy: _LazyWriter,
    keys: list[VideoKey],
    settings: ClipSettings,
    summary: EmbedSummary,
    progress: bool | str,
    progress_interval: float,
) -> None:
    """The driver's loop: each output batch becomes store rows, as the local engine writes them."""
    windowed = settings.window is not None
    states: dict[int, VideoState] = {}
    failed: set[int] = set()
    bar = Progress(len(keys), progress, progress_interval)
    failed_before = summary.failed

    def update(final: bool = False) -> None:
        bar.update(summary.embedded + summary.failed - failed_before, summary.clips, summary.failed, final=final)

    t0 = time.perf_counter()
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            writer = lazy.open(int(batch["embedding"].shape[1]))
            records: list[dict[str, Any]] = []
            rows: list[int] = []
            failures: list[dict[str, Any]] = []
            pooled_records: list[dict[str, Any]] = []
            pooled: list[np.ndarray] = []
            for i, (idx, kind, meta_json, error, warned) in enumerate(
                zip(batch["idx"].tolist(), batch["kind"], batch["meta"], batch["error"], batch["warnings"], strict=True)
            ):
                for message in json.loads(str(warned)):
                    add_warning(summary, keys[idx][0], message)
                if kind == "note" or idx in failed:
                    continue  # warnings only, or a clip of a video that failed later, arriving after its failure row
                if kind == "fail":
                    failed.add(idx)
                    states.pop(idx, None)
                    failures.append(failure_row(keys[idx], str(error), summary, bar))
                    continue
                meta = json.loads(str(meta_json))
                records.append(store_record(keys[idx], meta))
                rows.append(i)
                if (done := add_clip(states, idx, meta, batch["embedding"][i], windowed, summary)) is not None:
                    pooled_records.append(store_record(keys[idx], done[0]))
                    pooled.append(done[1])
            if records:
                embeds = batch["embedding"][rows]
                frame_embeds = batch["frame_embeddings"][rows] if "frame_embeddings" in batch else None
                summary.clips += len(records)
                write_clip_rows(writer, records, embeds, frame_embeds, pooled_records, pooled)
            if failures:
                writer.write_failures(failures)
            update()
    finally:
        summary.seconds = time.perf_counter() - t0
        update(final=True)
        bar.close()
