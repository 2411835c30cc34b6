"""The Ray engine against the local one: same store rows, metadata, embeddings and failures; resume does nothing new.

A local Ray instance (2 CPUs, no dashboard, no network) embeds generated videos, one of them corrupt, with a tiny
random LvT checkpoint saved to a temporary folder; the local engine embeds the same videos into another store.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from _checkpoints import save_tiny_clip_model
from _videos import make_video

from videoprism.collection import embed_videos
from videoprism.collection.clips import ClipSettings
from videoprism.collection.ray_engine import _IsolatedDecoder, embed_videos_ray
from videoprism.errors import EmbedSettingsError, RayNotInstalledError
from videoprism.store import open_store
from videoprism.video_processing import VideoPrismVideoProcessor

BOOKKEEPING = {"id", "shard", "row", "frames_shard"}  # where a row is stored, not what it says
# Ray's environment for the test: no usage reporting, no token file written under $HOME.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("ray_engine")
    model_dir = root / "model"
    save_tiny_clip_model(model_dir)

    videos = root / "videos"
    (videos / "sub").mkdir(parents=True)
    make_video(videos / "ramp_a.mp4", num_frames=24, size=(64, 48))
    make_video(videos / "ramp_b.mov", num_frames=45, fps=25, size=(80, 48))
    make_video(videos / "ramp_c.mkv", num_frames=30, fps=15, size=(48, 32), codec="mpeg4")
    make_video(videos / "sub" / "solid_d.mp4", num_frames=16, fps=8, pattern="solid")
    full = (videos / "ramp_b.mov").read_bytes()
    (videos / "corrupt.mp4").write_bytes(full[:32] + bytes(range(256)) * 8)
    long_video = make_video(root / "long.mp4", num_frames=100, fps=10, size=(64, 48))
    late = make_video(root / "late.mp4", num_frames=20, fps=10, size=(48, 32))
    return SimpleNamespace(root=root, model=model_dir, videos=videos, long=long_video, late=late)


@pytest.fixture(scope="module")
def ray_session() -> Any:
    """A local Ray instance shared by the tests of this file, shut down after them."""
    import ray

    saved = {name: os.environ.get(name) for name in RAY_ENV}
    os.environ.update(RAY_ENV)  # read by the Ray processes that ray.init starts
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def store_rows(store: Path) -> tuple[list[dict], np.ndarray, np.ndarray | None, list[dict]]:
    """Embedding rows (without their storage bookkeeping), embeddings and frame embeddings in a canonical order,
    and the failure rows; the same content in two stores gives equal results whatever order the rows were written."""
    reader = open_store(store)
    meta = reader.metadata.to_pylist()

    def key(i: int) -> tuple:
        m = meta[i]
        start = -1.0 if m["start"] is None or math.isnan(m["start"]) else m["start"]
        return m["path"], m["kind"], start, tuple(m["frame_indices"])

    order = sorted(range(len(meta)), key=key)
    rows = [{k: v for k, v in meta[i].items() if k not in BOOKKEEPING} for i in order]
    emb = np.asarray(reader.embeddings)[order].astype(np.float32)
    frames = None
    if reader.frame_embeddings is not None:
        frames = np.asarray(reader.frame_embeddings)[order].astype(np.float32)
    failures = sorted(
        ({k: v for k, v in f.items() if k not in BOOKKEEPING} for f in reader.failures.to_pylist()),
        key=lambda f: f["path"],
    )
    return rows, emb, frames, failures


def assert_same_rows(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for name in x:
            u, v = x[name], y[name]
            if isinstance(u, float) and isinstance(v, float):
                assert u == pytest.approx(v, abs=1e-9, nan_ok=True), (name, x, y)
            else:
                assert u == v, (name, x, y)


def assert_same_stores(local: Path, distributed: Path) -> None:
    rows_a, emb_a, frames_a, fail_a = store_rows(local)
    rows_b, emb_b, frames_b, fail_b = store_rows(distributed)
    assert open_store(local).model_id == open_store(distributed).model_id
    assert_same_rows(rows_a, rows_b)
    np.testing.assert_allclose(emb_b, emb_a, atol=1e-3, rtol=0)
    assert (frames_a is None) == (frames_b is None)
    if frames_a is not None:
        np.testing.assert_allclose(frames_b, frames_a, atol=1e-3, rtol=0)  # NaN (pooled rows) in the same places
    assert_same_rows(fail_a, fail_b)


def store_state(store: Path) -> tuple[dict, list[str]]:
    reader = open_store(store)
    ids = {(m["path"], m["kind"], tuple(m["frame_indices"])): m["id"] for m in reader.metadata.to_pylist()}
    files = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())
    return ids, files


@pytest.fixture(scope="module")
def clip_runs(assets: SimpleNamespace, ray_session: Any) -> SimpleNamespace:
    """The videos folder embedded once by each engine (one clip per video)."""
    local = embed_videos(assets.videos, assets.root / "local", assets.model, batch_size=2, workers=0, progress=False)
    distributed = embed_videos_ray(assets.videos, assets.root / "ray", assets.model, concurrency=2, batch_size=2,
                                   progress=False)  # fmt: skip
    return SimpleNamespace(local=local, ray=distributed)


def test_ray_store_matches_local(assets, clip_runs):
    local, distributed = clip_runs.local, clip_runs.ray
    assert (distributed.videos, distributed.embedded, distributed.failed, distributed.clips) == (5, 4, 1, 4)
    assert (local.videos, local.embedded, local.failed, local.clips) == (5, 4, 1, 4)
    assert sorted(distributed.failures) == sorted(local.failures)
    assert [Path(p).name for p, _ in distributed.failures] == ["corrupt.mp4"]
    assert distributed.model_id == local.model_id == str(assets.model.resolve())
    reader = open_store(assets.root / "ray")
    assert reader.is_compacted and len(reader) == 4 and reader.dim == 32
    assert_same_stores(assets.root / "local", assets.root / "ray")


def test_ray_resume_does_nothing_new(assets, clip_runs):
    store = assets.root / "ray"
    before = store_state(store)
    again = embed_videos_ray(assets.videos, store, assets.model, concurrency=2, batch_size=2, progress=False)
    assert (again.embedded, again.failed, again.clips, again.skipped, again.skipped_failed) == (0, 0, 0, 5, 1)
    assert store_state(store) == before

    # A new video among stored ones: only it goes through Ray, and it gets the embedding the local engine gives it.
    more = embed_videos_ray([assets.videos, assets.late], store, assets.model, concurrency=1, progress=False)
    assert (more.embedded, more.failed, more.clips, more.skipped) == (1, 0, 1, 5)
    ids, _ = store_state(store)
    assert {k: v for k, v in ids.items() if k in before[0]} == before[0]
    embed_videos(assets.late, assets.root / "local", assets.model, workers=0, progress=False)
    assert_same_stores(assets.root / "local", store)


def test_ray_windows_and_frames_match_local(assets, ray_session):
    inputs = [assets.long, assets.videos / "ramp_a.mp4", assets.videos / "corrupt.mp4"]
    settings = {"window": 4.0, "stride": 3.0, "frames": True, "batch_size": 3, "progress": False}
    local = embed_videos(inputs, assets.root / "local_win", assets.model, workers=0, **settings)
    # Half a CPU per actor: decoding runs in separate tasks (the layout GPU actors get), not fused into the actor.
    distributed = embed_videos_ray(inputs, assets.root / "ray_win", assets.model, concurrency=1,
                                   num_cpus_per_worker=0.5, **settings)  # fmt: skip
    assert (distributed.embedded, distributed.failed, distributed.clips) == (local.embedded, local.failed, local.clips)
    assert (distributed.embedded, distributed.failed) == (2, 1)
    rows, _, frames, _ = store_rows(assets.root / "ray_win")
    kinds = [(Path(r["path"]).name, r["kind"]) for r in rows]
    assert kinds.count(("long.mp4", "window")) == 3 and kinds.count(("long.mp4", "video")) == 1
    assert frames is not None and frames.shape[1:] == (4, 32)
    assert_same_stores(assets.root / "local_win", assets.root / "ray_win")


def test_without_ray_says_how_to_install(assets, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(RayNotInstalledError, match=r'pip install "videoprism\[ray\]"'):
        embed_videos_ray(assets.videos, assets.root / "never", assets.model, progress=False)
    assert not (assets.root / "never").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, "concurrency must be a positive integer"),
        ({"concurrency": (3, 1)}, "min <= max"),
        ({"num_gpus_per_worker": -1}, "num_gpus_per_worker must be a non-negative number"),
        ({"device": "cuda"}, "needs GPUs in the inference actors"),
        ({"stride": 2.0}, "stride needs window"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_bad_settings_fail_before_starting_ray(assets, kwargs, message):
    with pytest.raises(EmbedSettingsError, match=message):
        embed_videos_ray(assets.videos, assets.root / "never", assets.model, progress=False, **kwargs)
    assert not (assets.root / "never").exists()


def test_a_decoder_crash_fails_only_its_video(assets):
    """Decoding runs in a child of the Ray worker: its death fails the video it was reading, and the next video gets
    a fresh process (decoding in the worker itself would make Ray restart it and retry the same video forever)."""
    server = socket.create_server(("127.0.0.1", 0))  # accepts, never answers: the decoder waits, then is killed
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    stuck = f"http://127.0.0.1:{server.getsockname()[1]}/stuck.mp4"
    settings = ClipSettings(VideoPrismVideoProcessor(num_frames=4, size=32).to_dict(), 4, None, None)
    decoder = _IsolatedDecoder(settings)
    try:
        events = decoder.events(stuck)
        killer = threading.Timer(3.0, lambda: os.kill(decoder.proc.pid, signal.SIGKILL))
        killer.start()
        assert list(events) == [("fail", "the decoding process died (exit code -9) while reading this video")]
        killer.join()
        events = list(decoder.events(str(assets.videos / "ramp_a.mp4")))
        assert [e[0] for e in events] == ["clip"] and events[0][2].shape == (4, 3, 32, 32)
    finally:
        decoder.close()
        for conn in held:
            conn.close()
        server.close()


def test_cli_engine_ray_writes_the_same_store(assets):
    """`videoprism embed --engine ray` (its own local Ray instance) gives the store the local engine gives."""
    import subprocess
    import sys

    local = assets.root / "cli-local"
    embed_videos(assets.videos, local, assets.model, batch_size=2, workers=0, progress=False)
    out = assets.root / "cli-ray"
    cmd = [sys.executable, "-m", "videoprism.cli", "embed", str(assets.videos), "--out", str(out)]
    cmd += ["--model", str(assets.model), "--engine", "ray", "--concurrency", "1", "--batch-size", "2", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # the corrupt file fails; the rest is embedded
    assert_same_stores(local, out)
