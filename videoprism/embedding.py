"""Embed whole video collections into an embedding store: `embed_videos`, behind `videoprism embed`.

The pipeline. The main process expands the inputs (files, folders, globs, ``@list.txt``), skips the videos the store
already holds (same path, size, mtime and model), loads the model once and runs batched inference. Decoding, frame
sampling and resizing happen in worker processes (``spawn`` start method: no fork of a process that runs torch
threads), which stream pre-processed clips through a bounded queue: workers block when it is full, so memory stays
bounded (about ``queue_size + batch_size`` clips) however large the collection or long the videos, while the main
process keeps the model busy. Each batch is written to the store as soon as it is embedded, so an interrupted run
(Ctrl-C, a kill, a crash) loses at most the batch in flight, and the next run resumes where it stopped. A video that
cannot be decoded is recorded in the store with its error message and the run goes on; a worker that dies (a crash
inside a decoder) fails only the video it was reading and is replaced.

Clips. Without ``window`` a video gives one clip of ``num_frames`` frames sampled uniformly over the whole video, as
the original demos sample it (``floor(linspace(0, n, T, endpoint=False))``). With ``window`` seconds (and ``stride``,
default ``window``) a video gives one clip per window, its frames sampled the same way inside the window (over the
frames whose timestamps fall in ``[start, end)``), plus a ``"video"`` row: the normalised mean of its window
embeddings.

Embeddings. A video-text (LvT) checkpoint gives its video embedding (the attention-pooled, L2-normalised output of
the video tower, ``get_video_features``); ``frames=True`` adds the per-frame embeddings (the same pooler applied to
each frame's tokens). A video-only encoder (``VideoPrismVisionModel``, the ``videoprism-base/large`` checkpoints) has
no pooler: its embedding is the mean of all its spatiotemporal output tokens, L2-normalised (per frame: the mean of
that frame's tokens). A classifier checkpoint gives its pooler's output before the classifier layer.
"""

from __future__ import annotations

import contextlib
import glob
import math
import multiprocessing as mp
import os
import queue
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .store import MANIFEST_NAME, EmbeddingStore, file_key, open_store

__all__ = [
    "DEFAULT_MODEL",
    "VIDEO_EXTENSIONS",
    "DecodingWorkerError",
    "EmbedSettingsError",
    "EmbedSummary",
    "NoVideosFoundError",
    "VideoEmbedder",
    "VideoInputNotFoundError",
    "embed_videos",
    "expand_inputs",
    "load_video_embedder",
    "model_id_for",
    "window_bounds",
]
# Not exported, but the engines' shared parts (ray_engine.py and search.py use them too): ClipSettings, VideoState,
# plan_videos, add_clip, failure_row, write_clip_rows, Progress, POLL_S, checked_inputs, check_settings, resume_key,
# load_processor, resolve_dtype, decoding_worker_process, DecodePool.

DEFAULT_MODEL = "google/videoprism-lvt-base-f16r288"

#: File name endings picked up when scanning folders and globs (explicitly named files are always tried).
VIDEO_EXTENSIONS = frozenset(
    {
        ".3g2", ".3gp", ".asf", ".avi", ".divx", ".f4v", ".flv", ".gif", ".h264", ".h265", ".hevc", ".m2ts",
        ".m2v", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".mxf", ".ogv", ".qt", ".ts", ".vob",
        ".webm", ".wmv", ".y4m",
    }
)  # fmt: skip

_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_GLOB_CHARS = re.compile(r"[*?\[]")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Seconds between checks that the workers (in the main process) or the main process (in a worker) are alive.
POLL_S = 0.5


class VideoInputNotFoundError(FileNotFoundError):
    """An input names no existing file or folder, a glob matches nothing, or an ``@list`` file is unreadable."""


class NoVideosFoundError(ValueError):
    """The inputs hold no video files."""


class EmbedSettingsError(ValueError):
    """Invalid embedding settings, or settings that differ from those the store was written with."""


class DecodingWorkerError(RuntimeError):
    """The decoding worker processes keep exiting before they read any video."""


# ----------------------------------------------------------------------------------------------------------------
# Inputs


def _is_url(text: str) -> bool:
    return bool(_URL_RE.match(text))


def _is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS and not name.startswith(".")


def _scan_folder(folder: Path) -> list[str]:
    """Video files under ``folder``, recursively, sorted; hidden files and folders (``.name``) are skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.abspath(os.path.join(root, f)) for f in sorted(files) if _is_video_name(f)]
    return found


def _expand_item(item: str, base: Path | None, where: str) -> list[str]:
    if _is_url(item):
        return [item]
    path = Path(item).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if path.is_file():
        return [os.path.abspath(path)]
    if path.is_dir():
        return _scan_folder(path)
    if _GLOB_CHARS.search(item):
        out = []
        for match in sorted(glob.glob(str(path), recursive=True)):
            if os.path.isdir(match):
                out += _scan_folder(Path(match))
            elif _is_video_name(os.path.basename(match)):
                out.append(os.path.abspath(match))
        if not out:
            raise VideoInputNotFoundError(f"{where}: the pattern {item!r} matches no video file")
        return out
    raise VideoInputNotFoundError(f"{where}: no such file or folder: {path}")


def expand_inputs(inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """The videos named by command-line style inputs, in order, without duplicates.

    Each input is a video file (any name), a folder (scanned recursively for ``VIDEO_EXTENSIONS``; hidden files are
    skipped), a glob (``"clips/**/*.mp4"``; matching folders are scanned, matching files kept if they have a video
    extension), an ``http(s)://`` URL, or ``@list.txt``: a text file with one such input per line (blank lines and
    ``#`` comments skipped; relative paths are relative to the list file's folder).

    Args:
        inputs: One input or a sequence of them.

    Returns:
        Absolute paths (and URLs as given).

    Raises:
        VideoInputNotFoundError: An input names nothing that exists, a glob matches no video, or a list is unreadable.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[str] = []
    seen: set[str] = set()
    for raw in inputs:
        item = os.fspath(raw)
        if item.startswith("@") and not os.path.exists(item):
            list_path = Path(item[1:]).expanduser()
            try:
                lines = list_path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise VideoInputNotFoundError(
                    f"cannot read the input list {list_path} ({err}); write one video path or URL per line"
                ) from err
            found = []
            for n, line in enumerate(lines, 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    found += _expand_item(line, list_path.resolve().parent, f"{list_path}:{n}")
        else:
            found = _expand_item(item, None, item)
        for path in found:
            if path not in seen:
                seen.add(path)
                out.append(path)
    return out


def resume_key(path: str) -> tuple[str, int, int]:
    """Resume key; a URL has no size or mtime (0, 0), so it is embedded once and then always skipped."""
    if _is_url(path):
        return path, 0, 0
    return file_key(path)


# ----------------------------------------------------------------------------------------------------------------
# Windows and clips


def window_bounds(duration: float, window: float, stride: float | None = None, fps: float = 0.0) -> list[tuple]:
    """``(start, end)`` seconds of the windows of a video: starting every ``stride`` s, ``window`` s long.

    Windows start at ``0, stride, 2 * stride, ...``; the last one is the first that reaches the end of the video
    (its end is clipped to ``duration``). A window that would start within half a frame of the end is not made. A
    video shorter than ``window`` has one window ``(0, duration)``.

    Args:
        duration: Video duration in seconds.
        window: Window length in seconds.
        stride: Seconds between window starts (default ``window``: back to back).
        fps: Frame rate, to leave out windows holding no frame; 0 when unknown.
    """
    stride = window if stride is None else stride
    if not window > 0 or not stride > 0:
        raise EmbedSettingsError(f"window and stride must be positive seconds, got window={window} stride={stride}")
    eps = 0.5 / fps if fps and fps > 0 else 1e-6
    bounds = []
    for k in range(sys.maxsize):
        start = round(k * stride, 6)
        if k and start >= duration - eps:
            break
        bounds.append((start, round(min(start + window, duration), 6) if duration > 0 else start + window))
        if start + window >= duration - eps:
            break
    return bounds


@dataclass
class ClipSettings:
    """What a worker needs to turn a video into pre-processed clips (picklable)."""

    processor: dict[str, Any]
    num_frames: int
    window: float | None
    stride: float | None


def _error_text(err: BaseException) -> str:
    from .video_io import VideoDecodeError

    return str(err) if isinstance(err, VideoDecodeError) else f"{type(err).__name__}: {err}"


def _read_window(path: str, num_frames: int, start: float, end: float, duration: float):
    """Frames of one window; a window holding no frame (a gap in a variable frame rate stream) is widened."""
    from .video_io import VideoDecodeError, read_video

    lo, hi = start, end
    for _ in range(8):
        try:
            return read_video(path, num_frames=num_frames, start_time=lo, end_time=hi)
        except VideoDecodeError:
            raise
        except ValueError:  # no frame in [lo, hi): take the nearest frames around it instead
            pad = max(hi - lo, 1e-3)
            lo, hi = max(0.0, lo - pad), min(duration, hi + pad) if duration > 0 else hi + pad
    return read_video(path, num_frames=num_frames)


def _video_clips(
    path: str | tuple, processor: Any, settings: ClipSettings
) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Yields ``(row metadata, pixels (T, 3, H, W) float32)`` per clip of a video, decoding one clip at a time."""
    from .video_io import read_video

    def pixels(video: Any) -> np.ndarray:
        return processor(video, return_tensors="np", num_frames=settings.num_frames)["pixel_values_videos"][0]

    def meta(video: Any, kind: str, start: float | None, end: float | None, rows: int) -> dict[str, Any]:
        return {
            "kind": kind,
            "start": start,
            "end": end,
            "frame_indices": [int(i) for i in video.indices],
            "duration": float(video.duration),
            "num_frames_total": int(video.num_frames_total),
            "video_rows": rows,
        }

    if isinstance(path, tuple):  # a span (path, start, end): one clip of the frames in [start, end)
        path, start, end = path
        video = read_video(path, num_frames=settings.num_frames, start_time=start, end_time=end)
        yield meta(video, "span", start, end, 1), pixels(video)
        return
    if settings.window is None:
        video = read_video(path, num_frames=settings.num_frames)
        yield meta(video, "clip", None, None, 1), pixels(video)
        return
    first = read_video(path, num_frames=settings.num_frames, start_time=0.0, end_time=settings.window)
    bounds = window_bounds(first.duration, settings.window, settings.stride, first.fps)
    for i, (start, end) in enumerate(bounds):
        video = first if i == 0 else _read_window(path, settings.num_frames, start, end, first.duration)
        yield meta(video, "window", start, end, len(bounds) + 1), pixels(video)


# ----------------------------------------------------------------------------------------------------------------
# Decoding workers


class _Stopped(Exception):  # noqa: N818 - internal control flow: the consumer went away
    pass


def _decode_loop(task_q: Any, result_q: Any, settings: ClipSettings, wid: int, alive: Any, capture: bool) -> None:
    """A worker's life: take a video index, stream its clips (or its error) to ``result_q``; None ends it."""
    from .video_processing import VideoPrismVideoProcessor

    processor = VideoPrismVideoProcessor.from_dict(settings.processor)

    def put(item: tuple) -> None:
        while True:
            try:
                result_q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                if not alive():
                    raise _Stopped from None

    while True:
        try:
            task = task_q.get(timeout=POLL_S)
        except queue.Empty:
            if not alive():
                return
            continue
        if task is None:
            return
        idx, path = task
        try:
            put(("start", wid, idx))
            with warnings.catch_warnings(record=True) if capture else contextlib.nullcontext() as caught:
                if capture:
                    warnings.simplefilter("always")
                try:
                    for meta, pixels in _video_clips(path, processor, settings):
                        put(("clip", wid, idx, meta, pixels))
                    outcome: tuple = ("done", wid, idx)
                except _Stopped:
                    raise
                except Exception as err:  # noqa: BLE001 - any error of one video fails that video only
                    outcome = ("fail", wid, idx, _error_text(err))
            for w in caught or ():
                put(("warn", wid, idx, str(w.message)))
            put(outcome)
        except _Stopped:
            return


def _die_with_parent() -> None:
    """On Linux, asks the kernel to kill this process when its parent dies, even by SIGKILL (elsewhere a worker
    notices at its next queue operation)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def decoding_worker_process(task_q: Any, result_q: Any, settings: ClipSettings, wid: int) -> None:
    """Entry point of a decoding process."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it stops the workers
    torch.set_num_threads(1)
    parent = mp.parent_process()
    alive = parent.is_alive if parent is not None else (lambda: True)
    try:
        _decode_loop(task_q, result_q, settings, wid, alive, capture=True)
    finally:
        if not alive():
            result_q.cancel_join_thread()  # nobody reads any more: do not block exit flushing the pipe


class DecodePool:
    """Workers decoding ``paths`` into clips; ``events()`` yields what they produce, in arrival order.

    Events: ``("clip", idx, meta, pixels)``, ``("done", idx)``, ``("fail", idx, error)``, ``("warn", idx, message)``.
    Each video index gets exactly one "done" or "fail".

    Args:
        paths: Videos to decode; a ``(path, start, end)`` span (seconds, None for either end) gives one clip of the
            frames in ``[start, end)``.
        settings: Clip settings.
        workers: Worker processes; 0 decodes in one thread of this process.
        queue_size: Clips that may wait in the queue (the memory bound).
    """

    def __init__(self, paths: Sequence[str | tuple], settings: ClipSettings, workers: int, queue_size: int) -> None:
        self.paths = list(paths)
        self.settings = settings
        self.threaded = workers == 0
        self.num_workers = max(1, workers)
        if self.threaded:
            self._stop = threading.Event()
            self.task_q: Any = queue.Queue()
            self.result_q: Any = queue.Queue(maxsize=queue_size)
        else:
            self.ctx = mp.get_context("spawn")
            self.task_q = self.ctx.Queue()
            self.result_q = self.ctx.Queue(maxsize=queue_size)
        self.workers: dict[int, Any] = {}
        self._next_wid = 0
        self._next_task = 0
        self._queued = 0  # tasks put and not yet started
        self._sentinels = False
        self._idle_deaths = 0  # workers that died, in a row, without being on a video

    def _start_worker(self) -> None:
        wid = self._next_wid
        self._next_wid += 1
        if self.threaded:
            args = (self.task_q, self.result_q, self.settings, wid, lambda: not self._stop.is_set(), False)
            worker: Any = threading.Thread(target=_decode_loop, args=args, daemon=True, name=f"videoprism-decode-{wid}")
        else:
            args = (self.task_q, self.result_q, self.settings, wid)
            worker = self.ctx.Process(
                target=decoding_worker_process, args=args, daemon=True, name=f"videoprism-decode-{wid}"
            )
            old = os.environ.get("OMP_NUM_THREADS")
            os.environ["OMP_NUM_THREADS"] = "1"  # read by the child's torch at import; restored for this process
        try:
            worker.start()
        finally:
            if not self.threaded:
                if old is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = old
        self.workers[wid] = worker

    def _feed(self) -> None:
        """Keeps about two tasks per worker queued, so a slow video never leaves the others without work."""
        while self._queued < 2 * self.num_workers and self._next_task < len(self.paths):
            self.task_q.put((self._next_task, self.paths[self._next_task]))
            self._next_task += 1
            self._queued += 1
        if self._next_task == len(self.paths) and not self._sentinels:
            for _ in range(len(self.workers)):
                self.task_q.put(None)
            self._sentinels = True

    def events(self) -> Iterator[tuple]:
        if not self.paths:
            return
        for _ in range(min(self.num_workers, len(self.paths))):
            self._start_worker()
        self._feed()
        current: dict[int, int] = {}  # worker id -> video index it is on
        finished: set[int] = set()
        idle_polls = 0
        while len(finished) < len(self.paths):
            try:
                msg = self.result_q.get(timeout=POLL_S)
            except queue.Empty:
                idle_polls += 1
                yield from self._check_workers(current, finished, idle_polls)
                continue
            idle_polls = 0
            kind, wid, idx = msg[:3]
            if kind == "start":
                current[wid] = idx
                self._idle_deaths = 0
                self._queued -= 1
                self._feed()
            elif idx in finished:
                continue  # late output of a worker already declared dead
            elif kind == "clip":
                yield ("clip", idx, msg[3], msg[4])
            elif kind == "warn":
                yield ("warn", idx, msg[3])
            else:
                current.pop(wid, None)
                finished.add(idx)
                yield ("done", idx) if kind == "done" else ("fail", idx, msg[3])

    def _check_workers(self, current: dict[int, int], finished: set[int], idle_polls: int) -> Iterator[tuple]:
        if self.threaded:
            return
        for wid, proc in list(self.workers.items()):
            if proc.is_alive() or proc.exitcode == 0:
                continue
            del self.workers[wid]
            idx = current.pop(wid, None)
            if idx is not None and idx not in finished:
                finished.add(idx)
                yield ("fail", idx, f"the decoding process died (exit code {proc.exitcode}) while reading this video")
            elif idx is None:
                self._idle_deaths += 1
                if self._idle_deaths >= 3:
                    raise DecodingWorkerError(
                        f"decoding worker processes exit at start-up (exit code {proc.exitcode}). Called from a "
                        "script? Workers re-import the main module, so put the call under "
                        "`if __name__ == '__main__':`; or pass workers=0 (--workers 0) to decode in this process"
                    )
            self._start_worker()
        if idle_polls > 1 and self._sentinels and not any(p.is_alive() for p in self.workers.values()):
            # Every worker is gone and the queue stayed empty for a whole poll after that (a worker's last messages
            # reach the pipe before it exits), so nothing more can arrive: what is unfinished was lost.
            for idx in range(len(self.paths)):
                if idx not in finished:
                    finished.add(idx)
                    yield ("fail", idx, "lost: a decoding process exited before reading this video")

    def close(self) -> None:
        if self.threaded:
            self._stop.set()
            return
        for proc in self.workers.values():
            proc.join(timeout=0 if proc.exitcode is not None else 0.2)
            if proc.is_alive():
                proc.terminate()
        for proc in self.workers.values():
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.task_q.cancel_join_thread()
        self.task_q.close()
        self.result_q.close()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_workers(num_videos: int) -> int:
    """Decoding processes for ``num_videos`` videos: one per spare core (at most 8); none (a thread) for 1-2."""
    if num_videos <= 2:
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1, num_videos))


# ----------------------------------------------------------------------------------------------------------------
# The model


def model_id_for(model: str | os.PathLike[str]) -> str:
    """The id a store records for a model source: the hub repo of a preset, the absolute path of a local checkpoint,
    or the hub repo id as given. Loading the id gives the same model back."""
    from .configuration import PRESETS

    text = os.fspath(model)
    if text in PRESETS:
        return PRESETS[text].repo_id
    path = os.path.expanduser(text)
    if os.path.exists(path):
        return os.path.abspath(path)
    return text


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise EmbedSettingsError(f"dtype={dtype!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


class VideoEmbedder:
    """Turns pre-processed clips (B, T, 3, H, W) into unit-norm embeddings with whatever VideoPrism model it holds.

    See the module docstring for what each checkpoint type gives.

    Args:
        model: A loaded VideoPrism video model (`VideoPrismClipModel`, `VideoPrismVideoModel`,
            `VideoPrismVisionModel` or `VideoPrismForVideoClassification`).
        num_frames: Frames per clip; a count other than the model's resizes its temporal position embedding.
        size: ``(height, width)`` of the frames; another size than the model's resizes its position embeddings.
    """

    def __init__(self, model: torch.nn.Module, num_frames: int, size: tuple[int, int]) -> None:
        from .modeling import (
            VideoPrismClipModel,
            VideoPrismForVideoClassification,
            VideoPrismVideoModel,
            VideoPrismVisionModel,
        )

        self.model = model
        if isinstance(model, VideoPrismClipModel):
            self.video_model, self.kind = model.video_model, "pooler"
        elif isinstance(model, VideoPrismVideoModel):
            self.video_model, self.kind = model, "pooler"
        elif isinstance(model, VideoPrismForVideoClassification):
            self.video_model, self.kind = model, "classifier"
        elif isinstance(model, VideoPrismVisionModel):
            self.video_model, self.kind = model, "mean"
        else:
            raise EmbedSettingsError(
                f"{type(model).__name__} cannot embed videos; use a video or video-text checkpoint such as "
                f"{DEFAULT_MODEL}"
            )
        config = self.video_model.config
        self.dim = int(config.hidden_size)
        self.num_frames = int(num_frames)
        self.interpolate = num_frames != config.num_frames or tuple(size) != (config.image_size, config.image_size)

    @property
    def has_text(self) -> bool:
        """Whether the model also embeds text (an LvT checkpoint)."""
        return hasattr(self.model, "get_text_features")

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor | np.ndarray, frames: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeds a batch of clips.

        Args:
            pixels: (B, T, 3, H, W) float pixel values in [0, 1] (``pixel_values_videos``).
            frames: Also return per-frame embeddings.

        Returns:
            ``(embeddings (B, D), frame embeddings (B, T, D) or None)``, float32, L2-normalised.
        """
        from .modeling import l2_normalize

        model = self.video_model
        param = next(model.parameters())
        pixels = torch.as_tensor(pixels).to(device=param.device, dtype=param.dtype)
        batch, num_frames = pixels.shape[:2]
        frame_embeds = None
        if self.kind == "pooler":
            out = model(pixels, interpolate_pos_encoding=self.interpolate, return_frame_embeds=frames)
            embeds, frame_embeds = out.pooler_output, out.frame_embeds
        else:
            vision = model.vision_model if self.kind == "classifier" else model
            tokens = vision(pixels, interpolate_pos_encoding=self.interpolate).last_hidden_state  # (B, T*N, D)
            per_frame = tokens.reshape(batch, num_frames, -1, tokens.shape[-1])
            if self.kind == "mean":
                embeds = tokens.float().mean(dim=1)
                frame_embeds = per_frame.float().mean(dim=2) if frames else None
            else:

                def pool(x: torch.Tensor) -> torch.Tensor:
                    return model.head_layernorm(model.head(x)[0])

                embeds = pool(tokens)
                if frames:
                    frame_embeds = pool(per_frame.flatten(0, 1)).reshape(batch, num_frames, -1)
        embeds = l2_normalize(embeds.float()).cpu().numpy()
        if frame_embeds is not None:
            frame_embeds = l2_normalize(frame_embeds.float()).cpu().numpy()
        return embeds, frame_embeds


def load_processor(model: str | os.PathLike[str], num_frames: int | None) -> Any:
    from .video_processing import VideoPrismVideoProcessor

    processor = VideoPrismVideoProcessor.from_pretrained(model)
    if num_frames is not None:
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise EmbedSettingsError(f"num_frames must be a positive integer, got {num_frames!r}")
        processor.num_frames = num_frames
    return processor


def load_video_embedder(
    model: str | os.PathLike[str],
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    num_frames: int | None = None,
) -> tuple[VideoEmbedder, Any]:
    """Loads a checkpoint and its video processor for embedding.

    Args:
        model: A preset name, hub repo id, local folder, ``.npz`` or ``.safetensors`` file.
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        dtype: Weights dtype (``torch.bfloat16`` or "bfloat16", ...); None keeps the checkpoint's float32.
        num_frames: Frames per clip; default: the model's video processor's (``video_preprocessor_config.json``, else
            the preset's).

    Returns:
        ``(embedder, video processor)``.
    """
    from .auto import load_model

    processor = load_processor(model, num_frames)
    loaded = load_model(model, device=_resolve_device(device), dtype=resolve_dtype(dtype))
    size = (processor.size["height"], processor.size["width"])
    return VideoEmbedder(loaded, processor.num_frames, size), processor


# ----------------------------------------------------------------------------------------------------------------
# Progress


class Progress:
    """A tqdm bar on a terminal, plain periodic lines otherwise, or nothing."""

    def __init__(self, total: int, mode: str | bool | None, interval: float, name: str = "embed") -> None:
        if mode is True or mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        if mode not in ("bar", "lines", False, None, "none"):
            raise EmbedSettingsError(f"progress={mode!r}; use 'auto', 'bar', 'lines' or False")
        self.mode = mode if mode in ("bar", "lines") else None
        self.total, self.interval, self.name = total, interval, name
        self.t0 = self.last = time.monotonic()
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="video", file=sys.stderr, dynamic_ncols=True, desc=name)

    def update(self, videos: int, clips: int, failed: int, final: bool = False) -> None:
        now = time.monotonic()
        elapsed = max(now - self.t0, 1e-9)
        rate = clips / elapsed
        if self.bar is not None:
            self.bar.update(videos - self.bar.n)
            self.bar.set_postfix_str(f"{clips} clips, {rate:.2f} clips/s, {failed} failed", refresh=False)
            self.bar.refresh()
        elif self.mode == "lines" and (final or now - self.last >= self.interval):
            self.last = now
            eta = "?"
            if 0 < videos < self.total:
                eta = _fmt_seconds(elapsed / videos * (self.total - videos))
            elif videos >= self.total:
                eta = "0s"
            print(
                f"videoprism {self.name}: {videos}/{self.total} videos, {clips} clips, {rate:.2f} clips/s, "
                f"{failed} failed, elapsed {_fmt_seconds(elapsed)}, ETA {eta}",
                file=sys.stderr,
                flush=True,
            )

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        elif self.mode == "lines":
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ----------------------------------------------------------------------------------------------------------------
# embed_videos


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
        failures: ``(path, error)`` of each failed video.
        warnings: ``(path, message)`` of decoder warnings (e.g. a truncated stream whose readable part was used).
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
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0


@dataclass
class VideoState:
    """A video whose clips are being embedded: enough to write its pooled "video" row at the end."""

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
            self.total = embedding.astype(np.float64) if self.total is None else self.total + embedding
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
    states: dict[int, VideoState], idx: int, meta: dict[str, Any], embedding: np.ndarray, windowed: bool, summary
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


def failure_row(key: tuple[str, int, int], error: str, summary, bar=None) -> dict[str, Any]:
    """Counts a failed video (and reports it on `bar`); returns its failure row."""
    path, size, mtime = key
    summary.failures.append((path, error))
    summary.failed += 1
    if bar is not None:
        bar.write(f"failed: {error if error.startswith(path) else f'{path}: {error}'}")
    return {"path": path, "size": size, "mtime_ns": mtime, "error": error}


def plan_videos(
    paths: list[str], writer: EmbeddingStore | None, retry_failed: bool, summary
) -> tuple[list[tuple[str, int, int]], list[dict[str, Any]]]:
    """The resume keys still to embed, and failure rows for files that cannot be stat'ed; counts skips and failures."""
    keys: list[tuple[str, int, int]] = []
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


def write_clip_rows(writer, records, embeds, frame_embeds, pooled_records, pooled) -> None:
    """Clip rows and the pooled rows they complete, in one write unless the clip rows carry frame embeddings."""
    if pooled and frame_embeds is None:
        writer.write_batch(records + pooled_records, np.concatenate([embeds, np.stack(pooled)]))
    else:
        writer.write_batch(records, embeds, frame_embeds)
        if pooled:  # a pooled row has no frames of its own; rows of one write share the frames layout
            writer.write_batch(pooled_records, np.stack(pooled))


def checked_inputs(inputs, window: float | None, stride: float | None) -> list[str]:
    """The expanded video paths, after the window settings both engines share are validated."""
    if stride is not None and window is None:
        raise EmbedSettingsError("stride needs window: pass window=SECONDS too")
    if window is not None:
        window_bounds(1.0, window, stride)  # validates both
    paths = expand_inputs(inputs)
    if not paths:
        raise NoVideosFoundError(
            f"no video files found in {inputs!r}; extensions looked for: {sorted(VIDEO_EXTENSIONS)}"
        )
    return paths


def check_settings(store: str | os.PathLike[str], num_frames: int, window: float | None, stride: float | None):
    """Refuses to add clips made with other settings to a store: resuming would silently mix them."""
    import pyarrow.compute as pc

    reader = open_store(store)
    meta = reader.metadata
    if not meta.num_rows:
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


def embed_videos(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    store: str | os.PathLike[str],
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
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
) -> EmbedSummary:
    """Embeds videos into a store (created if needed), skipping those it already holds.

    See the module docstring for the pipeline, the clips and what each checkpoint type gives. Each clip becomes one
    store row (kind "clip", or "window" with its start/end seconds), with the indices of the frames fed to the model;
    a windowed video also gets a "video" row, the normalised mean of its window embeddings. Videos are keyed by
    absolute path + size + mtime + model id: a video already stored (or recorded as failed) is skipped, a modified
    one is embedded again and supersedes its old rows. At the end the store is compacted.

    Args:
        inputs: Files, folders, globs, URLs or ``@list.txt`` files (see `expand_inputs`).
        store: Store folder.
        model: A preset name, hub repo id, local folder, ``.npz`` or ``.safetensors`` file; recorded in the store as
            `model_id_for` says.
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        dtype: Weights dtype ("bfloat16", "float16", "float32" or a torch dtype); None keeps float32.
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
    paths = checked_inputs(inputs, window, stride)

    model_id = model_id_for(model)
    store = os.fspath(store)
    summary = EmbedSummary(store=store, model_id=model_id, videos=len(paths))
    embedder = processor = None
    if (Path(store) / MANIFEST_NAME).is_file():
        writer = EmbeddingStore.open(store, model_id=model_id)
    else:
        embedder, processor = load_video_embedder(model, device=device, dtype=dtype, num_frames=num_frames)
        writer = EmbeddingStore.open(store, model_id=model_id, dim=embedder.dim)
    with writer:
        # Checked even when there is nothing to do: a re-run with other settings must not look like a success.
        check_settings(store, embedder.num_frames if embedder else load_processor(model, num_frames).num_frames,
                        window, stride)  # fmt: skip
        keys, failures = plan_videos(paths, writer, retry_failed, summary)
        if failures:
            writer.write_failures(failures)
        if keys:
            if embedder is None:
                embedder, processor = load_video_embedder(model, device=device, dtype=dtype, num_frames=num_frames)
            if embedder.dim != writer.dim:
                raise EmbedSettingsError(
                    f"model {model_id} gives {embedder.dim}-d embeddings; store {store} holds {writer.dim}-d ones"
                )
            settings = ClipSettings(processor.to_dict(), embedder.num_frames, window, stride)
            _run(writer, keys, embedder, settings, summary, batch_size, workers, frames, queue_size, progress,
                 progress_interval)  # fmt: skip
        if compact:
            writer.compact()
    return summary


def _run(
    writer: EmbeddingStore,
    keys: list[tuple[str, int, int]],
    embedder: VideoEmbedder,
    settings: ClipSettings,
    summary: EmbedSummary,
    batch_size: int,
    workers: int | None,
    frames: bool,
    queue_size: int | None,
    progress: bool | str,
    progress_interval: float,
) -> None:
    """The decode -> embed -> write loop of `embed_videos`."""
    windowed = settings.window is not None
    states: dict[int, VideoState] = {}
    pending: list[tuple[int, dict[str, Any], np.ndarray]] = []
    failures: list[dict[str, Any]] = []
    bar = Progress(len(keys), progress, progress_interval)
    failed_before = summary.failed  # files that could not even be stat'ed: not part of `keys`

    def record(idx: int, meta: dict[str, Any]) -> dict[str, Any]:
        path, size, mtime = keys[idx]
        return {"path": path, "size": size, "mtime_ns": mtime, **meta}

    def flush() -> None:
        if pending:
            pixels = torch.from_numpy(np.stack([p for _, _, p in pending]))
            embeds, frame_embeds = embedder(pixels, frames=frames)
            records = [record(idx, meta) for idx, meta, _ in pending]
            pooled_records, pooled = [], []
            for (idx, meta, _), emb in zip(pending, embeds, strict=True):
                if (done := add_clip(states, idx, meta, emb, windowed, summary)) is not None:
                    pooled_records.append(record(idx, done[0]))
                    pooled.append(done[1])
            summary.clips += len(pending)
            write_clip_rows(writer, records, embeds, frame_embeds, pooled_records, pooled)
            pending.clear()
        if failures:
            writer.write_failures(failures)
            failures.clear()
        bar.update(summary.embedded + summary.failed - failed_before, summary.clips, summary.failed)

    num_workers = default_workers(len(keys)) if workers is None else workers
    queue_size = queue_size or 2 * batch_size
    t0 = time.perf_counter()
    try:
        with DecodePool([k[0] for k in keys], settings, num_workers, queue_size) as pool:
            for event in pool.events():
                kind, idx = event[:2]
                if kind == "clip":
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
                    summary.warnings.append((keys[idx][0], event[2]))
            flush()
    finally:
        summary.seconds = time.perf_counter() - t0
        bar.update(summary.embedded + summary.failed - failed_before, summary.clips, summary.failed, final=True)
        bar.close()
