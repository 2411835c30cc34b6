"""Decoding worker processes: `DecodePool` turns a list of videos into a stream of pre-processed clips.

Decoding, frame sampling and resizing happen in worker processes (``spawn`` start method: no fork of a process that
runs torch threads), which stream pre-processed clips through a bounded queue: workers block when it is full, so
memory stays bounded (about ``queue_size + batch_size`` clips) however large the collection or long the videos. A
video that cannot be decoded is reported as failed and the pool goes on; a worker that dies (a crash inside a
decoder) fails only the video it was reading and is replaced.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..errors import DecodingWorkerError
from .clips import ClipSettings, error_text, video_clips

__all__ = ["POLL_S", "DecodePool", "decoding_worker_process", "default_workers", "one_thread_children"]

# Seconds between checks that the workers (in the main process) or the main process (in a worker) are alive.
POLL_S = 0.5


@contextlib.contextmanager
def one_thread_children() -> Iterator[None]:
    """Processes started inside run torch with one thread and ignore Ctrl-C from their first instruction.

    ``OMP_NUM_THREADS=1`` is set, then restored for this process: torch reads it when the child imports it, so it must
    be set while the child starts. SIGINT is ignored while the child starts (an ignored signal stays ignored in the
    new program), so a Ctrl-C during its imports does not print a traceback per worker: the main process handles it
    and stops the workers.
    """
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    main_thread = threading.current_thread() is threading.main_thread()
    old_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        yield
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, old_sigint)
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old


class _Stopped(Exception):  # noqa: N818 - internal control flow: the consumer went away
    pass


def _decode_loop(task_q: Any, result_q: Any, settings: ClipSettings, wid: int, alive: Any, capture: bool) -> None:
    """A worker's life: take a video index, stream its clips (or its error) to ``result_q``; None ends it."""
    from ..video_processing import VideoPrismVideoProcessor

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
                    for meta, pixels in video_clips(path, processor, settings):
                        put(("clip", wid, idx, meta, pixels))
                    outcome: tuple = ("done", wid, idx)
                except _Stopped:
                    raise
                except Exception as err:  # noqa: BLE001 - any error of one video fails that video only
                    outcome = ("fail", wid, idx, error_text(err))
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
        paths: Videos to decode.
        settings: Clip settings.
        workers: Worker processes; 0 decodes in one thread of this process.
        queue_size: Clips that may wait in the queue (the memory bound).
    """

    def __init__(self, paths: Sequence[str], settings: ClipSettings, workers: int, queue_size: int) -> None:
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
            # Warnings are captured here too (the one decoding thread is the only user of catch_warnings while
            # the pool runs), so that they reach the run's summary once per video instead of Python's stderr.
            args = (self.task_q, self.result_q, self.settings, wid, lambda: not self._stop.is_set(), True)
            worker: Any = threading.Thread(target=_decode_loop, args=args, daemon=True, name=f"videoprism-decode-{wid}")
            worker.start()
        else:
            args = (self.task_q, self.result_q, self.settings, wid)
            worker = self.ctx.Process(
                target=decoding_worker_process, args=args, daemon=True, name=f"videoprism-decode-{wid}"
            )
            with one_thread_children():
                worker.start()
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
