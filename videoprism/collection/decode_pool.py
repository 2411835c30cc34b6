"""Decoding worker processes: `DecodePool` turns a list of videos into a stream of pre-processed clips.

Decoding, frame sampling and resizing happen in worker processes (``spawn`` start method: no fork of a process that
runs torch threads), which stream pre-processed clips through a pipe each: a worker blocks until its clip is read,
so memory stays bounded (about one clip per worker, plus the batch) however large the collection or long the videos.
A video that cannot be decoded is reported as failed and the pool goes on; a worker that dies (a crash inside a
decoder, a kill, the out-of-memory killer) fails only the video it was reading and is replaced, and the videos it
had not begun go to the other workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ..errors import DecodingWorkerError, EmbedSettingsError
from ..video_processing import set_resize_threads
from .clips import ClipSettings, error_text, put_unless_stopped, video_clips

if TYPE_CHECKING:
    import torch

__all__ = [
    "POLL_S",
    "DecodePool",
    "decode_between_batches",
    "decoder_niceness",
    "decoding_worker_process",
    "default_workers",
    "model_decode_pool",
    "one_thread_children",
]

# Seconds between checks that the workers (in the main process) or the main process (in a worker) are alive.
POLL_S = 0.5
# Scheduling niceness added to each decoding process or thread (environment variable VIDEOPRISM_DECODER_NICE overrides
# it; 0 keeps normal priority). Lowest: where cores are few the model's threads keep them and decoding takes the rest.
DECODER_NICENESS = 19
# Linux: a child can ask to die with its parent (PR_SET_PDEATHSIG), so a stopped worker is never left behind, and
# niceness is per thread.
_LINUX = sys.platform.startswith("linux")


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


def _decode_loop(get_task: Any, put: Any, settings: ClipSettings, wid: int, capture: bool) -> None:
    """A worker's life: take a video (``get_task()``), stream its clips (or its error) through ``put``.

    ``get_task`` returns ``(index, path)``, or None when the worker should end; ``put`` raises `_Stopped` when
    nobody reads any more.
    """
    from ..video_processing import VideoPrismVideoProcessor

    processor = VideoPrismVideoProcessor.from_dict(settings.processor)
    while (task := get_task()) is not None:
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
                except (MemoryError, EmbedSettingsError) as err:  # the settings' fault, not the video's: stop the run
                    outcome = ("abort", wid, idx, error_text(err))
                except Exception as err:  # noqa: BLE001 - any error of one video fails that video only
                    outcome = ("fail", wid, idx, error_text(err))
            for w in caught or ():
                put(("warn", wid, idx, str(w.message)))
            put(outcome)
        except _Stopped:
            return


def _queue_io(task_q: Any, result_q: Any, alive: Any) -> tuple[Any, Any]:
    """``get_task`` and ``put`` of `_decode_loop` over two queues, giving up when ``alive()`` turns false."""

    def get_task() -> tuple | None:
        while True:
            try:
                return task_q.get(timeout=POLL_S)
            except queue.Empty:
                if not alive():
                    return None

    def put(item: tuple) -> None:
        while True:
            try:
                result_q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                if not alive():
                    raise _Stopped from None

    return get_task, put


def _die_with_parent() -> None:
    """On Linux, asks the kernel to kill this process when its parent dies, even by SIGKILL (elsewhere a worker
    notices at its next queue operation)."""
    if not _LINUX:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def decoder_niceness() -> int:
    """The niceness added to decoding processes and threads: VIDEOPRISM_DECODER_NICE (0 to 19), else DECODER_NICENESS.

    Raises:
        EmbedSettingsError: VIDEOPRISM_DECODER_NICE is set to something else than a whole number from 0 to 19.
    """
    text = os.environ.get("VIDEOPRISM_DECODER_NICE", "").strip()
    if not text:
        return DECODER_NICENESS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise EmbedSettingsError(
            f"VIDEOPRISM_DECODER_NICE={text!r}: use a whole number from 0 (decoding at the model's priority) to 19 "
            f"(the lowest), or unset it for the default ({DECODER_NICENESS})"
        )
    return value


def _lower_priority(increment: int) -> None:
    """Makes the calling decoding process (or, on Linux, thread: niceness is per thread there, and the threads it
    starts later inherit it) nicer by ``increment``: where cores are few, the model's threads, which wait for each
    other at every operation, then keep their cores and decoding takes the rest."""
    if increment > 0 and hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(increment)


def _worker_setup(niceness: int, threads: int = 1) -> Any:
    """Settings of every decoding process (``threads``: how many frames it resizes at once); returns a function that
    tells whether the parent is alive."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it stops the workers
    set_resize_threads(threads)  # the video processor resizes frames in as many threads (torch is never imported)
    _lower_priority(niceness)
    parent = mp.parent_process()
    return parent.is_alive if parent is not None else (lambda: True)


def decoding_worker_process(task_q: Any, result_q: Any, settings: ClipSettings, wid: int, niceness: int) -> None:
    """Entry point of a decoding process fed through queues: ``(index, path)`` tasks in, events out; ``niceness`` is
    added to its scheduling niceness."""
    alive = _worker_setup(niceness)
    try:
        _decode_loop(*_queue_io(task_q, result_q, alive), settings, wid, capture=True)
    finally:
        if not alive():
            result_q.cancel_join_thread()  # nobody reads any more: do not block exit flushing the pipe


def _pipe_worker_process(
    task_conn: Connection, result_conn: Connection, settings: ClipSettings, wid: int, niceness: int, threads: int
) -> None:
    """Entry point of a `DecodePool` process: tasks and events travel through pipes of its own.

    A pipe has one writer, so when the process dies mid-message its reader gets end-of-file instead of waiting for
    the rest (a shared queue's reader would block for ever).
    """
    alive = _worker_setup(niceness, threads)

    def get_task() -> tuple | None:
        while not task_conn.poll(POLL_S):
            if not alive():
                return None
        try:
            return task_conn.recv()
        except (EOFError, OSError):
            return None

    def put(item: tuple) -> None:
        try:
            result_conn.send(item)
        except OSError:  # the main process closed its end: it stopped reading
            raise _Stopped from None

    _decode_loop(get_task, put, settings, wid, capture=True)


def _death_text(exitcode: int | None) -> str:
    """How a process ended, in words: "killed by signal SIGKILL" or "exit code 3"."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


_END = object()  # the pump thread's last item


@dataclass
class _Raised:
    """An error of the pump thread, for the consumer to raise."""

    error: BaseException


@dataclass
class _Worker:
    """A decoding process with its two pipe ends in this process and the videos it was given, in order."""

    proc: Any
    tasks: Connection  # this process writes tasks here
    results: Connection  # and reads the worker's events here
    assigned: deque = field(default_factory=deque)  # video indices sent to it and not finished; the first is current
    started: bool = False  # whether it began ``assigned[0]``
    ended: bool = False  # whether it was told to end (no more videos)


class DecodePool:
    """Workers decoding ``paths`` into clips; ``events()`` yields what they produce, in arrival order.

    Events: ``("clip", idx, meta, pixels)``, ``("done", idx)``, ``("fail", idx, error)``, ``("warn", idx, message)``.
    Each video index gets exactly one "done" or "fail". A video whose decoding runs out of memory (or meets invalid
    settings) is no video's fault: ``events()`` raises `EmbedSettingsError` instead, so nothing records it failed.

    Each worker process has a pipe for its tasks and one for its events, and is given at most two videos at a time,
    so a worker that dies (killed, out of memory, a crash inside a decoder) fails the video it was reading, its
    other video goes to another worker, and the pool never waits on a message that a dead process left half-sent.
    A worker blocks while its event is not read, so about one clip per worker waits in the pipes. Decoding begins
    with `events`, or earlier with `start` (the caller can then load its model while the first clips are decoded).

    Args:
        paths: Videos to decode; a ``(path, start, end)`` span (seconds, None for either end) gives one clip of the
            frames in ``[start, end)``.
        settings: Clip settings.
        workers: Worker processes; 0 decodes in one thread of this process.
        queue_size: Clips that may wait in the queue when decoding in a thread (the memory bound).
        pausable: Whether `pause` stops the decoding processes (Linux only; otherwise it does nothing).

    Decoding processes (and, on Linux, the decoding thread, with every thread it starts) run at a lower priority
    (`decoder_niceness`), and the decoding thread resizes frames itself, so decoding takes what the model leaves.
    With ``pausable`` (see `decode_between_batches`) the caller stops the decoding processes while its model
    computes (`pause`, `resume`, `paused`): they then decode only between batches, each resizing on every core and
    decoding a video's next window while it resizes this one (`clips.read_ahead`).

    Raises:
        EmbedSettingsError: VIDEOPRISM_DECODER_NICE is invalid (see `decoder_niceness`).
    """

    def __init__(
        self,
        paths: Sequence[str | tuple],
        settings: ClipSettings,
        workers: int,
        queue_size: int,
        pausable: bool = False,
    ) -> None:
        self.paths = list(paths)
        self.settings = settings
        self.threaded = workers == 0
        self.num_workers = max(1, workers)
        self.queue_size = queue_size
        self.niceness = decoder_niceness()
        self.pausable = pausable and not self.threaded and _LINUX
        # Paused between batches, the workers have the cores to themselves: each resizes on all of them, so that one
        # worker alone with work (one long video, the end of a collection) still uses every core.
        self.worker_threads = _cpus() if self.pausable else 1
        # With cores of their own, they also decode a video's next window while resizing this one.
        self.worker_settings = dataclasses.replace(settings, read_ahead=settings.read_ahead or self.worker_threads > 1)
        self._paused = False
        self._pausing = threading.Lock()  # a worker the pump thread starts while paused is stopped too
        self._stop = threading.Event()
        self.workers: dict[int, _Worker] = {}
        self._next_wid = 0
        self._idle_deaths = 0  # workers that died, in a row, before starting any video
        self.ctx = mp.get_context("spawn")
        self._pump: threading.Thread | None = None
        self._pump_out: queue.Queue | None = None

    def start(self) -> DecodePool:
        """Begins decoding now, ahead of `events`: the worker processes start, import their libraries and decode the
        first clips (up to ``queue_size`` wait for the caller) while the caller does something else, such as loading
        its model. Decoding in a thread (``workers=0``) begins with `events`. Returns the pool."""
        if self._pump is None and self.paths and not self.threaded:
            self._pump_out = queue.Queue(maxsize=max(1, self.queue_size))
            self._pump = threading.Thread(
                target=self._pump_events, args=(self._process_events(),), daemon=True, name="videoprism-decode-pump"
            )
            self._pump.start()
        return self

    def events(self) -> Iterator[tuple]:
        if not self.paths:
            return
        if self.threaded:
            yield from self._thread_events()
            return
        # The pump thread reads the workers' events into a queue of ``queue_size`` items, so their pipes are drained
        # (and they decode ahead) while the caller is busy with earlier clips; its error is raised here.
        self.start()
        while True:
            item = self._pump_out.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item

    def _pump_events(self, events: Iterator[tuple]) -> None:
        """The pump thread: ``events`` into the queue that `events` reads, then its end or its error."""

        def put(item: Any) -> bool:
            return put_unless_stopped(self._pump_out, item, self._stop, POLL_S)

        try:
            for event in events:
                if not put(event):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, who raises it
            put(_Raised(err))
        else:
            put(_END)

    def _thread_events(self) -> Iterator[tuple]:
        task_q: Any = queue.Queue()
        result_q: Any = queue.Queue(maxsize=self.queue_size)
        for item in enumerate(self.paths):
            task_q.put(item)
        task_q.put(None)
        io = _queue_io(task_q, result_q, lambda: not self._stop.is_set())
        thread = threading.Thread(
            target=self._decoding_thread, args=(*io, self.settings), daemon=True, name="videoprism-decode-0"
        )
        thread.start()
        finished = 0
        while finished < len(self.paths):
            msg = result_q.get()
            kind, _, idx = msg[:3]
            if kind == "clip":
                yield ("clip", idx, msg[3], msg[4])
            elif kind == "warn":
                yield ("warn", idx, msg[3])
            elif kind == "abort":
                raise self._abort(idx, msg[3])
            elif kind in ("done", "fail"):
                finished += 1
                yield ("done", idx) if kind == "done" else ("fail", idx, msg[3])

    def _decoding_thread(self, get_task: Any, put: Any, settings: ClipSettings) -> None:
        """`_decode_loop` in a thread of this process, at lower priority where niceness is per thread (Linux)."""
        from ..video_processing import resize_in_this_thread

        if _LINUX:
            _lower_priority(self.niceness)
        resize_in_this_thread()
        _decode_loop(get_task, put, settings, 0, True)

    def _start_worker(self) -> None:
        wid = self._next_wid
        self._next_wid += 1
        task_recv, task_send = self.ctx.Pipe(duplex=False)
        result_recv, result_send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=_pipe_worker_process,
            args=(task_recv, result_send, self.worker_settings, wid, self.niceness, self.worker_threads),
            daemon=True,
            name=f"videoprism-decode-{wid}",
        )
        with one_thread_children():
            proc.start()
        # The worker's ends live in the worker only: its death then closes them, which this process sees as EOF.
        task_recv.close()
        result_send.close()
        with self._pausing:
            self.workers[wid] = _Worker(proc, task_send, result_recv)
            if self._paused:
                os.kill(proc.pid, signal.SIGSTOP)

    def _assign(self, pending: deque) -> None:
        """Gives each worker up to two videos, so a slow video never leaves the others without work; tells the
        workers with nothing to do that they are done."""
        for worker in self.workers.values():
            while len(worker.assigned) < 2 and pending:
                idx = pending.popleft()
                try:
                    worker.tasks.send((idx, self.paths[idx]))
                except OSError:  # it died: its sentinel reports it, and the video goes back to the others
                    pending.appendleft(idx)
                    break
                worker.assigned.append(idx)
            if not pending and not worker.assigned and not worker.ended:
                worker.ended = True
                with contextlib.suppress(OSError):
                    worker.tasks.send(None)

    def _process_events(self) -> Iterator[tuple]:
        pending: deque[int] = deque(range(len(self.paths)))
        for _ in range(min(self.num_workers, len(self.paths))):
            self._start_worker()
        self._assign(pending)
        remaining = len(self.paths)
        while remaining and not self._stop.is_set():
            by_handle: dict[Any, int] = {}
            for wid, worker in self.workers.items():
                by_handle[worker.results] = wid
                by_handle[worker.proc.sentinel] = wid
            for handle in mp_connection.wait(list(by_handle), timeout=POLL_S):
                wid = by_handle[handle]
                worker = self.workers.get(wid)
                if worker is None:
                    continue  # already removed this round
                if handle is worker.results:
                    try:
                        msg = worker.results.recv()
                    except (EOFError, OSError):
                        msg = None
                    if msg is not None:
                        for event in self._on_message(worker, msg):
                            if event[0] in ("done", "fail"):
                                remaining -= 1
                            yield event
                        self._assign(pending)
                        continue
                # The process exited (or its pipe broke): read what it sent before, then account for its videos.
                events = list(self._drain(worker))
                events += self._on_death(wid, worker, pending)
                for event in events:
                    if event[0] in ("done", "fail"):
                        remaining -= 1
                    yield event
                if remaining and pending:
                    self._start_worker()
                self._assign(pending)

    def _on_message(self, worker: _Worker, msg: tuple) -> Iterator[tuple]:
        kind, _, idx = msg[:3]
        if kind == "start":
            worker.started = True
            self._idle_deaths = 0
        elif kind == "clip":
            yield ("clip", idx, msg[3], msg[4])
        elif kind == "warn":
            yield ("warn", idx, msg[3])
        elif kind == "abort":
            raise self._abort(idx, msg[3])
        else:
            worker.assigned.popleft()
            worker.started = False
            yield ("done", idx) if kind == "done" else ("fail", idx, msg[3])

    def _abort(self, idx: int, error: str) -> EmbedSettingsError:
        return EmbedSettingsError(
            f"{self.paths[idx]!r}: {error}. The run stopped without recording this video: the settings (--num-frames, "
            "the video processor's size, --workers) ask for more memory than this machine has; lower them and run "
            "again"
        )

    def _drain(self, worker: _Worker) -> Iterator[tuple]:
        """The complete messages still in the pipe of a worker that exited."""
        while True:
            try:
                if not worker.results.poll(0):
                    return
                msg = worker.results.recv()
            except (EOFError, OSError):
                return
            yield from self._on_message(worker, msg)

    def _on_death(self, wid: int, worker: _Worker, pending: deque) -> list[tuple]:
        """Removes an exited worker: fails the video it was reading; the videos it had not begun go back first in
        line."""
        worker.proc.join(timeout=5)
        if worker.proc.is_alive():  # its pipe broke but it runs: stop it
            worker.proc.kill()
            worker.proc.join()
        del self.workers[wid]
        worker.tasks.close()
        worker.results.close()
        events = []
        if worker.assigned and worker.started:
            idx = worker.assigned.popleft()
            how = _death_text(worker.proc.exitcode)
            events.append(("fail", idx, f"the decoding process died ({how}) while reading this video"))
        elif worker.assigned or not worker.ended:
            self._idle_deaths += 1
            if self._idle_deaths >= 3:
                raise DecodingWorkerError(
                    f"decoding worker processes exit at start-up ({_death_text(worker.proc.exitcode)}). Called from "
                    "a script? Workers re-import the main module, so put the call under "
                    "`if __name__ == '__main__':`; or pass workers=0 (--workers 0) to decode in this process"
                )
        pending.extendleft(reversed(worker.assigned))
        return events

    def pause(self) -> None:
        """Stops the decoding processes (SIGSTOP) until `resume`, if the pool is pausable: while the model computes on
        every core, a decoder that runs beside it stalls all of the model's threads, which wait for each other."""
        with self._pausing:
            if self.pausable and not self._paused:
                self._paused = True
                self._signal_workers(signal.SIGSTOP)

    def resume(self) -> None:
        """Lets paused decoding processes go on (SIGCONT)."""
        with self._pausing:
            if self._paused:
                self._paused = False
                self._signal_workers(signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """`pause` for the block (a forward pass), then `resume`."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def _signal_workers(self, sig: int) -> None:
        for worker in list(self.workers.values()):  # the pump thread may replace a dead worker meanwhile
            if worker.proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.proc.pid, sig)

    def close(self) -> None:
        self.resume()  # a stopped process would not act on the SIGTERM below
        self._stop.set()
        if self._pump is not None:
            self._pump.join()  # it stops within a poll; then only this thread touches the workers
        for worker in self.workers.values():
            worker.proc.join(timeout=0 if worker.proc.exitcode is not None else 0.2)
            if worker.proc.is_alive():
                worker.proc.terminate()
        for worker in self.workers.values():
            worker.proc.join(timeout=5)
            if worker.proc.is_alive():
                worker.proc.kill()
                worker.proc.join()
            worker.tasks.close()
            worker.results.close()
        self.workers.clear()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def decode_between_batches(device: torch.device) -> bool:
    """Whether decoding processes should wait while the model computes: when it computes on the CPU with a thread on
    every core this process may use, a decoder running beside it takes a core from one of those threads, and all of
    them wait for that one at each operation. On a GPU, or with cores to spare, decoding overlaps with the model."""
    import torch

    return _LINUX and device.type == "cpu" and torch.get_num_threads() >= _cpus()


def model_decode_pool(
    paths: Sequence[str | tuple], settings: ClipSettings, workers: int | None, queue_size: int, device: torch.device
) -> DecodePool:
    """The `DecodePool` that feeds a model computing on ``device``: pausable where `decode_between_batches` says so
    (the caller wraps each forward pass in `DecodePool.paused`), with `default_workers` processes unless ``workers``
    is given."""
    pausable = decode_between_batches(device)
    num_workers = default_workers(len(paths), pausable) if workers is None else workers
    return DecodePool(paths, settings, num_workers, queue_size, pausable)


def default_workers(num_videos: int, between_batches: bool = False) -> int:
    """Decoding processes for ``num_videos`` videos: none (a thread) for 1-2; else one per spare core, or one per core
    when they decode between batches (`decode_between_batches`: the model then leaves them every core); at most 8."""
    if num_videos <= 2:
        return 0
    cores = _cpus() if between_batches else _cpus() - 1
    return max(1, min(8, cores, num_videos))
