"""Scheduling of the decoding processes and threads."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _checkpoints import save_tiny_clip_model
from _videos import make_video

from videoprism.collection import decode_pool, embed_videos
from videoprism.collection.clips import ClipSettings
from videoprism.collection.decode_pool import DECODER_NICENESS, DecodePool, decoder_niceness
from videoprism.errors import EmbedSettingsError
from videoprism.store import open_store
from videoprism.video_processing import VideoPrismVideoProcessor, _thread_pool

SCRIPT = """
import os
from videoprism.collection import decode_pool
before = os.nice(0)
decode_pool._lower_priority(decode_pool.decoder_niceness())
print(os.nice(0) - before)
"""


@pytest.mark.parametrize("setting, added", [("7", 7), ("0", 0), (None, DECODER_NICENESS), (" ", DECODER_NICENESS)])
def test_decoding_processes_take_the_niceness_asked_for(setting, added):
    """VIDEOPRISM_DECODER_NICE (unset or blank: the default) is added to the niceness of each decoding process."""
    env = {k: v for k, v in os.environ.items() if k != "VIDEOPRISM_DECODER_NICE"}
    if setting is not None:
        env["VIDEOPRISM_DECODER_NICE"] = setting
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    start = os.nice(0)
    assert int(done.stdout) == min(added, 19 - start)


@pytest.mark.parametrize("setting", ["soon", "40", "-3", "2.5"])
def test_invalid_decoder_niceness_is_refused_before_the_store_is_made(setting, monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOPRISM_DECODER_NICE", setting)
    with pytest.raises(EmbedSettingsError, match=rf"VIDEOPRISM_DECODER_NICE='{setting}': use a whole number from 0"):
        decoder_niceness()
    video = tmp_path / "a.mp4"
    video.write_bytes(b"not read")
    with pytest.raises(EmbedSettingsError, match="VIDEOPRISM_DECODER_NICE"):
        embed_videos(video, tmp_path / "store", tmp_path / "no-model-needed-yet")
    assert not (tmp_path / "store").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="niceness is per thread on Linux only")
def test_decoding_thread_runs_nicer_and_resizes_itself(monkeypatch):
    """workers=0: the decoding thread lowers its own priority and resizes frames without the shared resize threads;
    the thread that runs the model keeps its priority."""
    monkeypatch.setenv("VIDEOPRISM_DECODER_NICE", "5")
    seen = {}

    def fake_clips(path, processor, settings):
        seen["nice"], seen["pool"] = os.nice(0), _thread_pool()
        yield {"kind": "clip"}, np.zeros(1, np.float32)

    monkeypatch.setattr(decode_pool, "video_clips", fake_clips)
    before = os.nice(0)
    with DecodePool(["a.mp4"], ClipSettings({}, 1, None, None), 0, 2) as pool:
        kinds = [event[0] for event in pool.events()]
    assert kinds == ["clip", "done"]
    assert seen == {"nice": min(before + 5, 19), "pool": None}
    assert os.nice(0) == before


def _state(pid: int) -> str:
    """The scheduler state letter of a process: "T" when stopped."""
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]


def _stopped(pid: int, want: bool) -> bool:
    """Whether the process reaches the stopped (``want``) or running state within 10 s (signals arrive async)."""
    deadline = time.monotonic() + 10
    while (_state(pid) == "T") != want:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_decoding_between_batches_only_where_the_model_takes_every_core(monkeypatch):
    monkeypatch.setattr(decode_pool, "_LINUX", True)
    monkeypatch.setattr(decode_pool, "_cpus", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert decode_pool.decode_between_batches(torch.device("cpu"))
    assert not decode_pool.decode_between_batches(torch.device("cuda"))  # the CPU is free while the GPU computes
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert not decode_pool.decode_between_batches(torch.device("cpu"))  # a core to spare


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pausing needs Linux")
def test_paused_workers_are_stopped_and_resume(tmp_path):
    """`pause` stops the decoding processes, `resume` lets them go on, and closing a paused pool ends them; the clips
    are all there. A pausable pool's workers resize on every core."""
    paths = [str(make_video(tmp_path / f"{i}.mp4", num_frames=8)) for i in range(3)]
    settings = ClipSettings(VideoPrismVideoProcessor(num_frames=2, size=16).to_dict(), 2, None, None)
    with DecodePool(paths, settings, 1, 2, pausable=True) as pool:
        assert pool.worker_threads == decode_pool._cpus()
        assert pool.worker_settings.read_ahead == (pool.worker_threads > 1)
        events = pool.events()
        kinds = [next(events)[0]]
        (worker,) = pool.workers.values()
        pool.pause()
        assert _stopped(worker.proc.pid, True)
        pool.resume()
        assert _stopped(worker.proc.pid, False)
        kinds += [event[0] for event in events]
        assert kinds.count("clip") == 3 and kinds.count("done") == 3
    with DecodePool(paths, settings, 1, 2, pausable=True) as pool:
        next(pool.events())
        (worker,) = pool.workers.values()
        pool.pause()
    assert worker.proc.exitcode is not None  # closed while stopped: resumed, then ended


@pytest.mark.parametrize("pausable, cpus, ahead", [(True, 2, True), (True, 1, False), (False, 4, False)])
def test_workers_read_ahead_only_with_cores_of_their_own(monkeypatch, pausable, cpus, ahead):
    """A decoding process that has the cores between batches decodes a video's next window while resizing this one;
    one beside the model (a core at most) or alone on one core decodes and resizes by turns."""
    monkeypatch.setattr(decode_pool, "_cpus", lambda: cpus)
    settings = ClipSettings(VideoPrismVideoProcessor(num_frames=2, size=16).to_dict(), 2, 1.0, 0.5)
    pool = DecodePool(["a.mp4"], settings, 1, 2, pausable=pausable)
    assert pool.worker_settings.read_ahead is (ahead and pool.pausable)
    assert settings.read_ahead is False  # the caller's settings are left as they were


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pausing needs Linux")
def test_worker_started_while_paused_waits_for_resume(tmp_path):
    """A worker that starts during a pause (the first ones, or one replacing a dead worker) is stopped at once."""
    paths = [str(make_video(tmp_path / "0.mp4", num_frames=8))]
    settings = ClipSettings(VideoPrismVideoProcessor(num_frames=2, size=16).to_dict(), 2, None, None)
    with DecodePool(paths, settings, 1, 2, pausable=True) as pool:
        pool.pause()
        got = []
        reader = threading.Thread(target=lambda: got.extend(pool.events()), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while not pool.workers and time.monotonic() < deadline:
            time.sleep(0.01)
        (worker,) = pool.workers.values()
        assert _stopped(worker.proc.pid, True)
        reader.join(timeout=1)
        assert not got
        pool.resume()
        reader.join(timeout=60)
        assert [event[0] for event in got] == ["clip", "done"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pausing needs Linux")
def test_embedding_with_paused_workers_matches_decoding_in_a_thread(tmp_path, monkeypatch):
    """The same rows and embeddings whether a worker process decodes between batches (stopped during each forward
    pass) or a thread decodes beside the model."""
    model = save_tiny_clip_model(tmp_path / "model")
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        make_video(videos / f"{i}.mp4", num_frames=24 + 8 * i, pattern="ramp" if i % 2 else "solid")
    paused = []  # per forward pass: whether the pool could stop its workers
    pause = DecodePool.pause
    monkeypatch.setattr(decode_pool, "decode_between_batches", lambda device: True)
    monkeypatch.setattr(decode_pool, "_cpus", lambda: 2)  # the worker reads windows ahead (two cores to itself)
    monkeypatch.setattr(DecodePool, "pause", lambda self: paused.append(self.pausable) or pause(self))
    stores = {}
    for workers in (1, 0):
        stores[workers] = tmp_path / f"store{workers}"
        embed_videos(videos, stores[workers], model, window=0.5, stride=0.25, workers=workers, batch_size=2,
                     dtype="float32", progress=False, thumbnails=False)  # fmt: skip
    assert paused.count(True) >= 3  # the worker process was stopped around forward passes
    rows = {}
    for workers, store in stores.items():
        reader = open_store(store)
        meta = reader.metadata.select(["path", "kind", "start", "end", "frame_indices"]).to_pylist()
        keys = [tuple(-1.0 if v != v else v for v in (m["path"], m["kind"], m["start"], m["end"])) for m in meta]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        rows[workers] = [keys[i] + (meta[i]["frame_indices"],) for i in order], np.asarray(reader.embeddings)[order]
    kinds = [key[1] for key in rows[1][0]]
    assert kinds.count("video") == 3 and kinds.count("window") >= 9
    assert rows[1][0] == rows[0][0]
    np.testing.assert_array_equal(rows[1][1], rows[0][1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and pauses workers")
def test_decoding_processes_never_load_torch(tmp_path):
    """A decoding process pre-processes frames with PyAV, numpy and PIL only: it never loads torch (seconds and
    hundreds of MB per process)."""
    paths = [str(make_video(tmp_path / f"{i}.mp4", num_frames=8)) for i in range(3)]
    settings = ClipSettings(VideoPrismVideoProcessor(num_frames=2, size=16).to_dict(), 2, 0.1, None, posters=True)
    with DecodePool(paths, settings, 1, 2, pausable=True) as pool:
        events = pool.events()
        first = next(events)
        (worker,) = pool.workers.values()
        with pool.paused():  # stopped, so still there to be looked at
            maps = Path(f"/proc/{worker.proc.pid}/maps").read_text()
        kinds = [first[0]] + [event[0] for event in events]
    assert "libavcodec" in maps  # the process that decoded
    assert "libtorch" not in maps and "libc10" not in maps
    assert kinds.count("done") == 3 and kinds.count("clip") >= 3


def test_started_pool_decodes_before_its_events_are_read(tmp_path):
    """`start` sets the workers decoding before anyone reads `events` (the caller loads its model meanwhile): videos
    deleted after they were decoded, and before `events` is called, still give their clips."""
    paths = [str(make_video(tmp_path / f"{i}.mp4", num_frames=8)) for i in range(2)]
    settings = ClipSettings(VideoPrismVideoProcessor(num_frames=2, size=16).to_dict(), 2, None, None)
    with DecodePool(paths, settings, 1, 8) as pool:
        assert pool.start() is pool and pool.start() is pool  # a second call starts nothing more
        deadline = time.monotonic() + 60
        while not (pool.workers and all(not w.assigned for w in pool.workers.values())):
            assert time.monotonic() < deadline, "the started pool did not decode its videos"
            time.sleep(0.02)
        assert len(pool.workers) == 1
        for path in paths:
            os.remove(path)
        events = list(pool.events())
    assert sorted((e[0], e[1]) for e in events) == [("clip", 0), ("clip", 1), ("done", 0), ("done", 1)]
    assert all(e[3].shape == (2, 3, 16, 16) for e in events if e[0] == "clip")


def test_embed_closes_started_workers_when_the_model_fails_to_load(tmp_path, monkeypatch):
    """embed starts decoding before it loads the model: a model that cannot be loaded stops those workers, and no
    store is made."""
    from videoprism.collection import local
    from videoprism.errors import CheckpointError

    videos = [make_video(tmp_path / f"{i}.mp4", num_frames=8) for i in range(3)]
    pools, procs = [], []
    real_pool = local.model_decode_pool
    monkeypatch.setattr(local, "model_decode_pool", lambda *a, **k: pools.append(real_pool(*a, **k)) or pools[-1])

    def broken(*args, **kwargs):
        deadline = time.monotonic() + 60
        while not pools[0].workers and time.monotonic() < deadline:  # decoding has begun
            time.sleep(0.02)
        procs.extend(worker.proc for worker in pools[0].workers.values())
        raise CheckpointError("model.safetensors is damaged")

    monkeypatch.setattr(local, "load_video_embedder", broken)
    model = save_tiny_clip_model(tmp_path / "model")
    with pytest.raises(CheckpointError, match="damaged"):
        embed_videos(videos, tmp_path / "store", model, workers=2, progress=False, thumbnails=False)
    assert len(pools) == 1 and not pools[0]._pump.is_alive()
    assert procs and all(proc.exitcode is not None for proc in procs)  # every decoding process ended
    assert not (tmp_path / "store").exists()


def test_classify_stops_its_started_workers_when_the_model_has_no_text_tower(tmp_path):
    """classify starts decoding before it loads the model: a video-only model is refused with its reason, and the
    decoding processes already started are ended."""
    import multiprocessing

    from videoprism import VideoPrismClipModel
    from videoprism.collection import classify_video_files

    vision = tmp_path / "vision"
    VideoPrismClipModel.from_pretrained(save_tiny_clip_model(tmp_path / "clip")).video_model.save_pretrained(vision)
    VideoPrismVideoProcessor(num_frames=4, size=32).save_pretrained(vision)
    videos = [make_video(tmp_path / f"{i}.mp4", num_frames=8) for i in range(3)]
    with pytest.raises(EmbedSettingsError, match="embeds videos only .no text tower.; zero-shot classification"):
        classify_video_files(videos, ["a", "b"], vision, workers=2, dtype="float32")
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("videoprism-decode")]


@pytest.mark.parametrize("cpus, spare, every", [(1, 1, 1), (2, 1, 2), (4, 3, 4), (16, 8, 8)])
def test_default_workers_take_every_core_only_between_batches(monkeypatch, cpus, spare, every):
    """Decoding beside the model leaves it a core; decoding between batches has them all (at most 8 processes)."""
    monkeypatch.setattr(decode_pool, "_cpus", lambda: cpus)
    assert decode_pool.default_workers(100) == spare
    assert decode_pool.default_workers(100, between_batches=True) == every
    assert decode_pool.default_workers(3, between_batches=True) == min(3, every)
    assert decode_pool.default_workers(2, between_batches=True) == 0  # one or two videos: a thread


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pausing needs Linux")
def test_classify_and_probe_features_pause_workers_around_forward_passes(tmp_path, monkeypatch):
    """Zero-shot classification and probe feature extraction also stop their decoding processes for each forward pass
    on the CPU, and get what a decoding thread gives."""
    from videoprism.collection import classify_video_files
    from videoprism.probe.data import load_labelled_set
    from videoprism.probe.features import extract_features

    model = save_tiny_clip_model(tmp_path / "model", Path(__file__).parent / "fixtures/tokenizer/spm_t5layout.model")
    videos = [make_video(tmp_path / f"{i}.mp4", num_frames=12 + 6 * i, pattern="ramp" if i % 2 else "solid")
              for i in range(4)]  # fmt: skip
    (tmp_path / "set.csv").write_text(
        "path,label\n" + "".join(f"{v.name},{'ab'[i % 2]}\n" for i, v in enumerate(videos))
    )
    data = load_labelled_set(tmp_path / "set.csv")
    paused = []  # per forward pass: whether the pool could stop its workers
    pause = DecodePool.pause
    monkeypatch.setattr(DecodePool, "pause", lambda self: paused.append(self.pausable) or pause(self))
    monkeypatch.setattr(decode_pool, "decode_between_batches", lambda device: True)
    labels = ["a ramp", "a solid colour"]
    threaded = classify_video_files(videos, labels, model, workers=0, batch_size=2, dtype="float32")
    assert paused.count(True) == 0
    spawned = classify_video_files(videos, labels, model, workers=1, batch_size=2, dtype="float32")
    assert paused.count(True) == 2
    assert [r.labels for r in spawned] == [r.labels for r in threaded]
    paused.clear()
    feats = {w: extract_features(data, model, tmp_path / f"f{w}", cache="pooled2", workers=w, batch_size=2,
                                 dtype="float32", progress=False) for w in (0, 1)}  # fmt: skip
    assert paused.count(True) == 2
    np.testing.assert_array_equal(feats[1].embeddings, feats[0].embeddings)
    np.testing.assert_array_equal(feats[1].tokens, feats[0].tokens)
