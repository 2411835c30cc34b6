"""Regression tests of failures that used to hang, print invalid numbers or blame the wrong thing."""

import os
import signal
import threading

import pytest

from tests._videos import make_video
from videoprism import VideoPrismVideoProcessor
from videoprism.collection.clips import ClipSettings
from videoprism.collection.decode_pool import DecodePool

# A hang guard only: far above the few seconds these runs take.
HANG_S = 300


def _settings(size: int = 288) -> ClipSettings:
    processor = VideoPrismVideoProcessor(num_frames=8, size=size).to_dict()
    return ClipSettings(processor=processor, num_frames=8, window=0.5, stride=None)


@pytest.fixture(scope="module")
def pool_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    return [str(make_video(folder / f"v{i}.mp4", num_frames=32, fps=16, size=(64, 48))) for i in range(4)]


def _run_pool(paths: list[str], kill_after_clips: int) -> dict[int, tuple]:
    """Runs a 2-worker pool; once the video of worker 0 has given ``kill_after_clips`` clips (its next clip, 8 MB,
    is then blocked half-sent in the pipe), kills that worker with SIGKILL. Returns the outcome of each video."""
    outcomes: dict[int, tuple] = {}
    clips: dict[int, int] = {}

    def consume() -> None:
        with DecodePool(paths, _settings(), workers=2, queue_size=2) as pool:
            victim = None
            for event in pool.events():
                kind, idx = event[:2]
                if kind == "clip":
                    clips[idx] = clips.get(idx, 0) + 1
                elif kind in ("done", "fail"):
                    outcomes[idx] = event
                if victim is None and 0 in pool.workers and pool.workers[0].started:
                    held = pool.workers[0].assigned[0]
                    if clips.get(held, 0) >= kill_after_clips:
                        victim = held
                        outcomes["victim"] = held
                        os.kill(pool.workers[0].proc.pid, signal.SIGKILL)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(HANG_S)
    assert not thread.is_alive(), "the pool hung after a worker was killed"
    return outcomes


@pytest.mark.parametrize("kill_after_clips", [0, 1, 2])
def test_killed_worker_fails_only_its_video(pool_videos, kill_after_clips):
    outcomes = _run_pool(pool_videos, kill_after_clips)
    victim = outcomes.pop("victim")
    assert sorted(outcomes) == [0, 1, 2, 3]
    failed = {idx: event for idx, event in outcomes.items() if event[0] == "fail"}
    # Killed after it began its video, before the main process read all that video's clips (each 8 MB: far more than
    # a pipe holds), so it cannot have finished it: that video fails, and only that one.
    assert set(failed) == {victim}
    for event in failed.values():
        assert "decoding process died" in event[2] and "SIGKILL" in event[2]
    assert all(outcomes[idx][0] == "done" for idx in outcomes if idx != victim)
