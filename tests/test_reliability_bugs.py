"""Regression tests of failures that used to hang, print invalid numbers or blame the wrong thing."""

import json
import os
import shutil
import signal
import socket
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests._checkpoints import save_tiny_clip_model
from tests._videos import make_video
from videoprism import CheckpointError, EmbedSettingsError, VideoDecodeError, VideoPrismVideoProcessor
from videoprism.cli import main
from videoprism.collection.clips import ClipSettings
from videoprism.collection.decode_pool import DecodePool
from videoprism.store import EmbeddingStore, open_store
from videoprism.video_io import read_video

# A hang guard only: far above the few seconds these runs take.
HANG_S = 300


def _settings(size: int = 288) -> ClipSettings:
    processor = VideoPrismVideoProcessor(num_frames=8, size=size).to_dict()
    return ClipSettings(processor=processor, num_frames=8, window=0.25, stride=None)  # 8 clips per video


SPM = Path(__file__).parent / "fixtures" / "tokenizer" / "spm_t5layout.model"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_clip_model(tmp_path_factory.mktemp("model"), SPM)


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
    # Killed after it began its video, before the main process read all that video's 8 clips (it reads at most 3
    # ahead of the consumer, and each clip's 8 MB are far more than a pipe holds), so it cannot have finished it:
    # that video fails, and only that one.
    assert set(failed) == {victim}
    for event in failed.values():
        assert "decoding process died" in event[2] and "SIGKILL" in event[2]
    assert all(outcomes[idx][0] == "done" for idx in outcomes if idx != victim)


# -- a stalled HTTP source ---------------------------------------------------------------------------------------


@pytest.fixture
def stalling_server(tmp_path):
    """An HTTP server on 127.0.0.1 that answers with headers and the first 2 KB of a video, then sends nothing."""
    data = make_video(tmp_path / "remote.mp4", num_frames=60, size=(64, 48)).read_bytes()
    server = socket.create_server(("127.0.0.1", 0))
    release = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {len(data)}\r\n\r\n"
            conn.sendall(head.encode() + data[:2048])
            release.wait()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/remote.mp4"
    release.set()
    server.close()


def test_stalled_url_times_out_with_a_clear_error(stalling_server):
    with pytest.raises(VideoDecodeError) as info:
        read_video(stalling_server, num_frames=4, timeout=0.5)
    message = str(info.value)
    assert stalling_server in message and "0.5 s" in message and "network timeout" in message


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        read_video("x.mp4", timeout=0)
    with pytest.raises(EmbedSettingsError, match="network_timeout"):
        ClipSettings({}, 4, None, None, network_timeout=-1)


def test_stalled_url_fails_that_video_of_an_embed(stalling_server, tmp_path, tiny_model, capsys):
    local = make_video(tmp_path / "local.mp4", num_frames=16, size=(64, 48))
    code = main(
        ["embed", str(local), stalling_server, "--out", str(tmp_path / "store"), "--model", str(tiny_model),
         "--workers", "0", "--network-timeout", "0.5", "--quiet"]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert stalling_server in err and "network timeout" in err
    assert len(open_store(tmp_path / "store")) == 1


# -- NaN and infinite numbers --------------------------------------------------------------------------------------


def _strict_json(text: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_damaged_rows_are_left_out_of_search_with_a_warning(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "store"
    rec = {"size": 1, "mtime_ns": 1, "kind": "clip", "start": None, "end": None, "frame_indices": [0],
           "duration": 1.0, "num_frames_total": 1}  # fmt: skip
    with EmbeddingStore.open(root, model_id="m", dim=8) as st:
        st.write_batch([{**rec, "path": f"/v/a{i}.mp4"} for i in range(4)], rng.normal(size=(4, 8)))
        st.write_batch([{**rec, "path": f"/v/b{i}.mp4"} for i in range(4)], rng.normal(size=(4, 8)))
    reader = open_store(root)
    shards = sorted({s for s in reader.metadata["shard"].to_pylist()})
    query = np.asarray(reader.embeddings[1], np.float32)  # the best match, before the damage
    for shard, row, value in ((shards[0], 1, np.nan), (shards[1], 2, np.inf)):
        arr = np.load(root / shard, mmap_mode="r+")
        arr[row, 3] = value
        arr.flush()
        del arr
    with pytest.warns(RuntimeWarning) as caught:
        hits = open_store(root).search(query, k=8)
    assert len(hits) == 6 and all(np.isfinite(h.score) for h in hits)
    assert {h.metadata["path"] for h in hits} == {f"/v/{c}{i}.mp4" for c in "ab" for i in range(4)} - {
        "/v/a1.mp4",
        "/v/b2.mp4",
    }
    message = str(caught[0].message)
    assert f"{shards[0]} rows 1" in message and f"{shards[1]} rows 2" in message and "NaN or infinite" in message


def test_search_json_never_prints_nan(tmp_path, tiny_model, capsys):
    videos = [make_video(tmp_path / f"v{i}.mp4", num_frames=8 + 4 * i, size=(64, 48)) for i in range(3)]
    store = tmp_path / "store"
    assert main(["embed", *map(str, videos), "--out", str(store), "--model", str(tiny_model), "--workers", "0",
                 "--quiet"]) == 0  # fmt: skip
    shard = open_store(store).metadata["shard"][0].as_py()
    arr = np.load(store / shard, mmap_mode="r+")
    arr[0, :] = np.nan
    arr.flush()
    del arr
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["search", str(store), "--video", str(videos[0]), "--json", "--model", str(tiny_model)])
    assert code == 0
    rows = _strict_json(capsys.readouterr().out)
    assert len(rows) == 2 and all(-1.01 <= r["score"] <= 1.01 for r in rows)
    assert any(shard in str(w.message) for w in caught)


def test_nan_weights_fail_classify_naming_the_checkpoint(tmp_path, tiny_model, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if "vision" in k and k.endswith("weight") and weights[k].ndim == 2)
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    video = make_video(tmp_path / "v.mp4", num_frames=8, size=(64, 48))
    code = main(["classify", str(video), "--labels", "cat,dog", "--model", str(broken), "--workers", "0", "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert str(broken) in captured.err and "NaN or infinite" in captured.err
    assert captured.out == ""


# -- sizes from configs and flags ----------------------------------------------------------------------------------


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, last = key.split("__")
        for name in parents:
            target = target[name]
        target[last] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"text_config__max_position_embeddings": 10**9}, "max_position_embeddings"),
        ({"vision_config__num_spatial_layers": 10**7}, "num_spatial_layers"),
        ({"vision_config__num_spatial_layers": 2}, "num_spatial_layers is 2, but the checkpoint's tensors hold 1"),
        ({"text_config__max_position_embeddings": 128}, "max_position_embeddings is 128"),
        ({"vision_config__num_frames": 9}, "num_frames is 9"),
    ],
)
def test_config_sizes_are_refused_before_the_model_is_built(tmp_path, tiny_model, monkeypatch, change, field):
    from videoprism import VideoPrismClipModel, modeling

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    _edit_json(broken / "config.json", **change)

    def no_layers(*args, **kwargs):
        raise AssertionError("a layer was built before the config was checked")

    monkeypatch.setattr(modeling.VideoPrismLayer, "__init__", no_layers)
    with pytest.raises(CheckpointError, match=field) as info:
        VideoPrismClipModel.from_pretrained(broken)
    assert str(broken) in str(info.value)


def _embed(videos, store, model, *extra) -> int:
    return main(["embed", *map(str, videos), "--out", str(store), "--model", str(model), "--workers", "0", "--quiet",
                 *extra])  # fmt: skip


def test_huge_num_frames_aborts_before_the_store_is_touched(tmp_path, tiny_model, capsys):
    video = make_video(tmp_path / "v.mp4", num_frames=8, size=(64, 48))
    assert _embed([video], tmp_path / "store", tiny_model, "--num-frames", "1000000") == 2
    err = capsys.readouterr().err
    assert "1000000 frames" in err and "--num-frames" in err and "--max-clip-mb" in err
    assert not (tmp_path / "store").exists()
    assert _embed([video], tmp_path / "store", tiny_model, "--num-frames", "4") == 0
    assert len(open_store(tmp_path / "store")) == 1


def test_huge_processor_size_is_refused_naming_the_file(tmp_path, tiny_model, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    _edit_json(broken / "video_preprocessor_config.json", size={"height": 100000, "width": 100000})
    video = make_video(tmp_path / "v.mp4", num_frames=8, size=(64, 48))
    assert _embed([video], tmp_path / "store", broken) == 2
    err = capsys.readouterr().err
    assert "video_preprocessor_config.json" in err and "100000x100000" in err
    assert not (tmp_path / "store").exists()


def test_out_of_memory_aborts_the_run_and_records_nothing(tmp_path, tiny_model, monkeypatch, capsys):
    from videoprism.collection import decode_pool

    videos = [make_video(tmp_path / f"v{i}.mp4", num_frames=8 + 4 * i, size=(64, 48)) for i in range(2)]
    real = decode_pool.video_clips

    def exhausted(path, processor, settings):
        if path.endswith("v1.mp4"):
            raise MemoryError("cannot allocate 40 GiB")
        return real(path, processor, settings)

    monkeypatch.setattr(decode_pool, "video_clips", exhausted)
    store = tmp_path / "store"
    assert _embed(videos, store, tiny_model) == 2
    err = capsys.readouterr().err
    assert "v1.mp4" in err and "MemoryError" in err and "without recording this video" in err
    assert open_store(store).failures.num_rows == 0
    monkeypatch.setattr(decode_pool, "video_clips", real)
    assert _embed(videos, store, tiny_model) == 0
    assert sorted(Path(p).name for p in open_store(store).metadata["path"].to_pylist()) == ["v0.mp4", "v1.mp4"]


# -- messages that blamed the wrong thing --------------------------------------------------------------------------


def test_no_network_fails_fast_saying_the_hub_is_unreachable(monkeypatch, tmp_path):
    import huggingface_hub
    import huggingface_hub.constants

    from videoprism import _sources
    from videoprism._loading import load_checkpoint

    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(_sources, "_unreachable_until", 0.0)
    for name in _sources._PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def no_retries(*args, **kwargs):
        raise AssertionError("huggingface_hub was asked (and would retry for about 30 s)")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_retries)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_retries)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint("someorg/somemodel", cache_dir=str(tmp_path))
    message = str(info.value)
    assert "cannot reach the hub" in message and "HF_HUB_OFFLINE=1" in message and "local folder" in message
    assert "found neither" not in message


def test_fifo_and_symlink_loop_are_named_for_what_they_are(tmp_path, tiny_model, capsys):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.mp4"
    os.symlink(loop, loop)
    broken = tmp_path / "broken.mp4"
    os.symlink(tmp_path / "gone.mp4", broken)
    with pytest.raises(VideoDecodeError, match="FIFO"):
        read_video(fifo)  # refused before it is opened: opening a FIFO would wait for a writer
    with pytest.raises(VideoDecodeError, match="symbolic link loop"):
        read_video(loop)
    with pytest.raises(VideoDecodeError, match="broken symbolic link"):
        read_video(broken)
    for path, what in ((fifo, "FIFO"), (loop, "symbolic link loop")):
        assert _embed([path], tmp_path / "store", tiny_model) == 2
        err = capsys.readouterr().err
        assert what in err and "no such file" not in err and "empty file" not in err


def test_losers_of_a_store_creation_race_are_told_it_is_locked(tmp_path):
    import fcntl

    from videoprism import StoreCorruptedError, StoreLockedError
    from videoprism.store.format import LOCK_NAME, META_DIR, SHARDS_DIR

    root = tmp_path / "store"
    root.mkdir()
    (root / SHARDS_DIR).mkdir()
    (root / META_DIR).mkdir()  # the winner made its folders and holds the lock until its manifest is written
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(StoreLockedError, match="another process is writing"):
            EmbeddingStore.open(root, model_id="m", dim=8)
    finally:
        os.close(fd)
    with pytest.raises(StoreCorruptedError):  # nobody holds the lock and no manifest came: the store is incomplete
        EmbeddingStore.open(root, model_id="m", dim=8)


def test_garbage_shard_is_called_an_invalid_npy_file(tmp_path):
    from videoprism import StoreCorruptedError

    root = tmp_path / "store"
    rec = {"path": "/v/a.mp4", "size": 1, "mtime_ns": 1, "kind": "clip", "start": None, "end": None,
           "frame_indices": [0], "duration": 1.0, "num_frames_total": 1}  # fmt: skip
    with EmbeddingStore.open(root, model_id="m", dim=8) as st:
        st.write_batch([rec], np.ones((1, 8)))
    shard = open_store(root).metadata["shard"][0].as_py()
    (root / shard).write_bytes(b"this is not an array" * 10)
    with pytest.raises(StoreCorruptedError) as info:
        open_store(root)
    message = str(info.value)
    assert "not a valid .npy file" in message and shard in message and "allow_pickle" not in message


def _store_with_clips(tmp_path, tiny_model) -> tuple[Path, Path]:
    video = make_video(tmp_path / "v.mp4", num_frames=8, size=(64, 48))
    store = tmp_path / "store"
    assert _embed([video], store, tiny_model) == 0
    return store, video


def test_a_model_of_another_width_is_refused_before_it_is_loaded(tmp_path, tiny_model, monkeypatch, capsys):
    from videoprism.collection import search

    store, video = _store_with_clips(tmp_path, tiny_model)
    wider = tmp_path / "wider"
    shutil.copytree(tiny_model, wider)
    _edit_json(wider / "config.json", vision_config__hidden_size=64, text_config__hidden_size=64)

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(search, "load_video_embedder", no_loading)
    capsys.readouterr()
    with pytest.warns(UserWarning, match="compares embeddings of two models"):
        assert main(["search", str(store), "--video", str(video), "--model", str(wider)]) == 2
    err = capsys.readouterr().err
    assert "32-d embeddings" in err and "64-d" in err and str(wider) in err


def test_a_moved_model_folder_gets_a_hint_to_pass_model(tmp_path, capsys):
    model = save_tiny_clip_model(tmp_path / "model", SPM)
    store, video = _store_with_clips(tmp_path, model)
    model.rename(tmp_path / "moved")
    capsys.readouterr()
    assert main(["search", str(store), "--video", str(video)]) == 2
    err = capsys.readouterr().err
    assert str(model) in err and "no longer exists" in err and "--model" in err
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the moved model is the same model: no warning about mixing two
        assert main(["search", str(store), "--video", str(video), "--model", str(tmp_path / "moved")]) == 0


def test_search_for_a_kind_the_store_lacks_says_what_it_holds(tmp_path, tiny_model, capsys):
    store, video = _store_with_clips(tmp_path, tiny_model)
    capsys.readouterr()
    assert main(["search", str(store), "--video", str(video), "--kind", "video"]) == 2
    err = capsys.readouterr().err
    assert "has no video rows" in err and "1 clip" in err and "--window" in err
