"""Tests of the embedding store: layout, resume semantics, crash safety, compaction and search."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from videoprism import store as vs
from videoprism.store import (
    ConcatenatedRows,
    EmbeddingStore,
    EmptyStoreError,
    SearchHit,
    StoreCorruptedError,
    StoreError,
    StoreLockedError,
    StoreMismatchError,
    StoreNotFoundError,
    open_store,
)
from videoprism.store import writer as store_writer

REPO = Path(__file__).resolve().parents[1]
DIM = 32
MODEL = "videoprism_test"


def records(prefix: str, n: int, *, size: int = 100, mtime: int = 7, kind: str = "window", **extra) -> list[dict]:
    """``n`` window rows of one video each (``prefix``-``i``), or of a single video if ``prefix`` ends in '/'."""
    out = []
    for i in range(n):
        path = f"/videos/{prefix}{i}.mp4" if not prefix.endswith("/") else f"/videos/{prefix}v.mp4"
        rec = {"path": path, "size": size, "mtime_ns": mtime, "kind": kind, "start": 2.0 * i, "end": 2.0 * i + 2}
        rec.update(frame_indices=[4 * i, 4 * i + 1], duration=60.0, num_frames_total=1800, **extra)
        out.append(rec)
    return out


def unit16(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float16)


def brute_topk(emb: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    q = np.atleast_2d(queries).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rows = np.asarray(emb, np.float32)
    scores = q @ (rows / np.linalg.norm(rows, axis=1, keepdims=True)).T  # cosines of the stored fp16 rows
    order = np.stack([np.lexsort((ids, -s))[:k] for s in scores])
    return np.take_along_axis(scores, order, 1), ids[order]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def snapshot_state(path: Path) -> tuple:
    r = open_store(path)
    meta = r.metadata.drop_columns(["shard", "row", "frames_shard"]).to_pylist()
    frames = None if r.frame_embeddings is None else np.asarray(r.frame_embeddings)
    return r.ids.copy(), meta, np.asarray(r.embeddings).copy(), frames, r.failures["path"].to_pylist()


def assert_same_state(a: tuple, b: tuple) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    assert json.dumps(a[1], default=str) == json.dumps(b[1], default=str)
    np.testing.assert_array_equal(a[2], b[2])
    if a[3] is None:
        assert b[3] is None
    else:
        np.testing.assert_array_equal(a[3], b[3])
    assert a[4] == b[4]


def assert_consistent(path: Path) -> None:
    """Every referenced shard exists and is long enough; live ids and clips are unique."""
    r = open_store(path)
    assert len(np.unique(r.ids)) == len(r.ids)
    clips = list(zip(*(r.metadata[c].to_pylist() for c in ("path", "kind", "start", "end")), strict=True))
    assert len(set(clips)) == len(clips)
    for shard, row in zip(r.metadata["shard"].to_pylist(), r.metadata["row"].to_pylist(), strict=True):
        assert row < len(np.load(path / shard, mmap_mode="r"))
    if len(r):
        np.testing.assert_allclose(np.linalg.norm(np.asarray(r.embeddings, np.float32), axis=1), 1, atol=2e-3)


# ----------------------------------------------------------------------------------------------------------------------
# Round trip and layout


def test_round_trip_and_layout(tmp_path, rng):
    root = tmp_path / "store"
    x1, x2, x3 = rng.normal(size=(4, DIM)), rng.normal(size=(3, DIM)) * 5, rng.normal(size=(2, DIM))
    f1 = rng.normal(size=(4, 3, DIM))
    with EmbeddingStore.open(root, model_id=MODEL, dim=DIM) as st:
        ids1 = st.write_batch(records("a", 4), x1, f1)
        ids2 = st.write_batch(records("b", 3, kind="clip"), x2)
        st.write_failures([{"path": "/videos/broken.mp4", "size": 5, "mtime_ns": 1, "error": "moov atom not found"}])
        ids3 = st.write_batch(records("c/", 2, video_rows=2), x3)
        assert len(st) == 9 and st.num_failures == 1
    assert ids1.tolist() == [0, 1, 2, 3] and ids2.tolist() == [4, 5, 6] and ids3.tolist() == [8, 9]

    r = open_store(root)
    assert len(r) == 9 and r.model_id == MODEL and r.dim == DIM
    np.testing.assert_array_equal(r.ids, [0, 1, 2, 3, 4, 5, 6, 8, 9])
    assert r.embeddings.dtype == np.float16 and r.embeddings.shape == (9, DIM)
    np.testing.assert_array_equal(np.asarray(r.embeddings), unit16(np.concatenate([x1, x2, x3])))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(r.embeddings, np.float32), axis=1), 1, atol=2e-3)
    frames = np.asarray(r.frame_embeddings)
    assert frames.shape == (9, 3, DIM) and frames.dtype == np.float16
    np.testing.assert_array_equal(frames[:4], f1.astype(np.float16))
    assert np.isnan(frames[4:]).all()  # rows written without per-frame embeddings
    m = r.row(2)
    assert m["path"] == "/videos/a2.mp4" and m["kind"] == "window" and (m["start"], m["end"]) == (4.0, 6.0)
    assert m["frame_indices"] == [8, 9] and m["size"] == 100 and m["mtime_ns"] == 7 and m["model_id"] == MODEL
    assert m["error"] is None and m["num_frames_total"] == 1800 and m["duration"] == 60.0
    assert r.failures.num_rows == 1 and r.failures["error"][0].as_py() == "moov atom not found"
    assert r.failures["shard"][0].as_py() is None
    assert r.metadata.schema.equals(vs.METADATA_SCHEMA)

    # The documented layout, read with pyarrow and numpy alone.
    manifest = json.loads((root / "store.json").read_text())
    assert manifest["model_id"] == MODEL and manifest["dim"] == DIM and manifest["dtype"] == "float16"
    assert manifest["format"] == "videoprism-embedding-store" and manifest["format_version"] == 1
    meta = pq.read_table(root / "meta")
    assert meta.num_rows == 10 and sorted(meta["id"].to_pylist()) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    for row in meta.filter(pc.is_valid(meta["shard"])).to_pylist():
        arr = np.load(root / row["shard"])
        assert arr.dtype == np.float16 and arr.shape[1] == DIM
        np.testing.assert_array_equal(arr[row["row"]], r.embeddings[int(np.searchsorted(r.ids, row["id"]))])
    assert {p.name for p in (root / "shards").iterdir()} == {
        Path(s).name for s in meta["shard"].to_pylist() + meta["frames_shard"].to_pylist() if s
    }


def test_compacted_store_reads_with_the_documented_recipe(tmp_path, rng):
    root = tmp_path / "s"
    with EmbeddingStore.open(root, model_id=MODEL, dim=DIM) as st:
        for b in range(3):
            st.write_batch(records(f"b{b}_", 5), rng.normal(size=(5, DIM)))
        st.write_failures([{"path": "/x.mp4", "size": 1, "mtime_ns": 1, "error": "bad"}])
        expected = snapshot_state(root)
        assert st.compact()
    r = open_store(root)
    assert r.is_compacted and isinstance(r.embeddings, np.memmap)
    assert len(list((root / "meta").iterdir())) == 1 and len(list((root / "shards").iterdir())) == 1
    # Recipe from docs/store-format.md.
    meta = pq.read_table(root / "meta")
    ok = meta.filter(pc.is_null(meta["error"]))
    emb = np.load(root / ok["shard"][0].as_py(), mmap_mode="r")
    assert (ok["row"].to_numpy() == np.arange(len(emb))).all()
    np.testing.assert_array_equal(ok["id"].to_numpy(), expected[0])
    np.testing.assert_array_equal(emb, expected[2])


# ----------------------------------------------------------------------------------------------------------------------
# Opening and errors


def test_open_errors(tmp_path, rng):
    missing = tmp_path / "nope"
    with pytest.raises(StoreNotFoundError, match="no embedding store"):
        open_store(missing)
    with pytest.raises(FileNotFoundError):  # StoreNotFoundError is also a FileNotFoundError and a ValueError
        EmbeddingStore.open(missing, create=False)
    with pytest.raises(StoreError, match="needs model_id and dim"):
        EmbeddingStore.open(missing)
    assert not missing.exists()

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hi")
    with pytest.raises(StoreError, match="not an embedding store"):
        EmbeddingStore.open(other, model_id=MODEL, dim=DIM)

    root = tmp_path / "s"
    st = EmbeddingStore.open(root, model_id=MODEL, dim=DIM)
    with pytest.raises(StoreLockedError, match="another process"):
        EmbeddingStore.open(root)
    st.close()
    with pytest.raises(StoreError, match="closed"):
        st.write_batch(records("a", 1), rng.normal(size=(1, DIM)))
    with pytest.raises(StoreMismatchError, match="model 'videoprism_test', not 'other_model'"):
        EmbeddingStore.open(root, model_id="other_model", dim=DIM)
    with pytest.raises(StoreMismatchError, match="32-dim"):
        EmbeddingStore.open(root, model_id=MODEL, dim=DIM + 1)
    with EmbeddingStore.open(root) as st:  # model and dim come from the manifest
        assert (st.model_id, st.dim) == (MODEL, DIM)
        with pytest.raises(StoreMismatchError, match="dim 33"):
            st.write_batch(records("a", 1), rng.normal(size=(1, DIM + 1)))
        with pytest.raises(StoreMismatchError, match="from model"):
            st.write_batch(records("a", 1, model_id="x"), rng.normal(size=(1, DIM)))
        with pytest.raises(ValueError, match="unknown keys"):
            st.write_batch([{**records("a", 1)[0], "fps": 30}], rng.normal(size=(1, DIM)))
        with pytest.raises(ValueError, match="NaN"):
            st.write_batch(records("a", 1), np.full((1, DIM), np.nan))
        with pytest.raises(ValueError, match="zero"):
            st.write_batch(records("a", 1), np.zeros((1, DIM)))
        with pytest.raises(ValueError, match="shape"):
            st.write_batch(records("a", 2), rng.normal(size=(1, DIM)))
        with pytest.raises(ValueError, match="kind"):
            st.write_batch(records("a", 1, kind="frame"), rng.normal(size=(1, DIM)))
        with pytest.raises(ValueError, match="write_failures"):
            st.write_batch(records("a", 1, error="x"), rng.normal(size=(1, DIM)))
        with pytest.raises(ValueError, match="error"):
            st.write_failures([{"path": "/a", "size": 1, "mtime_ns": 1}])
        with pytest.raises(ValueError, match="overflow"):
            st.write_batch(records("a", 1), rng.normal(size=(1, DIM)), np.full((1, 2, DIM), 1e6))
        st.write_batch(records("a", 1), rng.normal(size=(1, DIM)), rng.normal(size=(1, 2, DIM)))
        with pytest.raises(StoreMismatchError, match="frames"):
            st.write_batch(records("b", 1), rng.normal(size=(1, DIM)), rng.normal(size=(1, 3, DIM)))
        assert len(st) == 1  # failed calls wrote nothing
    assert len(open_store(root)) == 1 and len(list((root / "shards").iterdir())) == 2

    (root / "store.json").write_text("{not json")
    with pytest.raises(StoreCorruptedError, match="store.json"):
        open_store(root)
    (root / "store.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(StoreCorruptedError, match="not a valid"):
        EmbeddingStore.open(root)
    (root / "store.json").unlink()
    with pytest.raises(StoreCorruptedError, match="no store.json"):
        open_store(root)


def test_missing_or_corrupted_data_files_are_reported(tmp_path, rng):
    root = tmp_path / "s"
    with EmbeddingStore.open(root, model_id=MODEL, dim=DIM) as st:
        st.write_batch(records("a", 2), rng.normal(size=(2, DIM)))
        st.write_batch(records("b", 2), rng.normal(size=(2, DIM)))
    shard = sorted((root / "shards").iterdir())[0]
    np.save(shard, np.zeros((2, DIM + 1), np.float16))
    with pytest.raises(StoreCorruptedError, match="shape"):
        open_store(root)
    shard.unlink()
    with pytest.raises(StoreCorruptedError, match="missing"):
        open_store(root)
    part = sorted((root / "meta").iterdir())[0]
    part.write_bytes(b"garbage")
    with pytest.raises(StoreCorruptedError, match="cannot read metadata part"):
        open_store(root)


# ----------------------------------------------------------------------------------------------------------------------
# Resume semantics


def test_is_done_touched_files_and_failures(tmp_path, rng):
    root = tmp_path / "s"
    with EmbeddingStore.open(root, model_id=MODEL, dim=DIM) as st:
        st.write_batch(records("v/", 3, size=100, mtime=7), rng.normal(size=(3, DIM)))
        st.write_failures([{"path": "/videos/bad.mp4", "size": 9, "mtime_ns": 9, "error": "decode error"}])
        assert st.is_done("/videos/v/v.mp4", 100, 7)
        assert not st.is_done("/videos/v/v.mp4", 100, 8)  # touched
        assert not st.is_done("/videos/v/v.mp4", 101, 7)
        assert not st.is_done("/videos/other.mp4", 100, 7)
        assert st.is_done("/videos/bad.mp4", 9, 9)
        assert not st.is_done("/videos/bad.mp4", 9, 10)

    # Reopen: the state is rebuilt from disk. The touched file is rewritten with 2 windows.
    with EmbeddingStore.open(root, model_id=MODEL) as st:
        assert st.is_done("/videos/v/v.mp4", 100, 7) and st.is_done("/videos/bad.mp4", 9, 9)
        new = rng.normal(size=(2, DIM))
        st.write_batch(records("v/", 2, size=100, mtime=8), new)
        assert st.is_done("/videos/v/v.mp4", 100, 8) and not st.is_done("/videos/v/v.mp4", 100, 7)
        # The broken file was fixed: a success for the same key supersedes the failure.
        st.write_batch([{"path": "/videos/bad.mp4", "size": 9, "mtime_ns": 9}], rng.normal(size=(1, DIM)))
        assert len(st) == 3 and st.num_failures == 0
    r = open_store(root)
    assert len(r) == 3 and r.failures.num_rows == 0
    assert r.metadata["mtime_ns"].to_pylist() == [8, 8, 9]
    np.testing.assert_array_equal(np.asarray(r.embeddings)[:2], unit16(new))
    # Search never returns the stale version.
    hits = r.search(rng.normal(size=DIM), k=10)
    assert len(hits) == 3 and all(h.metadata["mtime_ns"] != 7 for h in hits)
    with EmbeddingStore.open(root) as st:
        assert st.compact()
        assert st.is_done("/videos/v/v.mp4", 100, 8) and st.is_done("/videos/bad.mp4", 9, 9)
    assert pq.read_table(root / "meta").num_rows == 3  # stale rows physically dropped

    # A failure of a new version supersedes the old version's embeddings.
    with EmbeddingStore.open(root) as st:
        st.write_failures([{"path": "/videos/v/v.mp4", "size": 100, "mtime_ns": 9, "error": "truncated"}])
        assert st.is_done("/videos/v/v.mp4", 100, 9) and len(st) == 1 and st.num_failures == 1
    r = open_store(root)
    assert r.metadata["path"].to_pylist() == ["/videos/bad.mp4"]
    assert r.failures["error"].to_pylist() == ["truncated"]


def test_video_split_over_batches_resumes_without_duplicates(tmp_path, rng):
    root = tmp_path / "s"
    recs = records("long/", 5, video_rows=6) + [
        {"path": "/videos/long/v.mp4", "size": 100, "mtime_ns": 7, "kind": "video", "video_rows": 6}
    ]
    x = rng.normal(size=(6, DIM))
    with EmbeddingStore.open(root, model_id=MODEL, dim=DIM) as st:
        st.write_batch(recs[:2], x[:2])
        assert not st.is_done("/videos/long/v.mp4", 100, 7)  # 2 of 6 rows
        assert st.status("/videos/long/v.mp4")["rows"] == 2
    # "Killed" here. The re-run sees an incomplete video and embeds all of it again.
    with EmbeddingStore.open(root) as st:
        assert not st.is_done("/videos/long/v.mp4", 100, 7)
        st.write_batch(recs[:4], x[:4])
        assert not st.is_done("/videos/long/v.mp4", 100, 7)  # 4 distinct clips, not 2 + 4
        st.write_batch(recs[4:], x[4:])
        assert st.is_done("/videos/long/v.mp4", 100, 7) and len(st) == 6
    r = open_store(root)
    assert len(r) == 6 and r.ids.tolist() == [2, 3, 4, 5, 6, 7]  # the rewritten clips keep the newest copy
    np.testing.assert_array_equal(np.asarray(r.embeddings), unit16(x))
    assert_consistent(root)
    with EmbeddingStore.open(root) as st:
        assert st.is_done("/videos/long/v.mp4", 100, 7) and len(st) == 6


def test_write_interrupted_before_metadata_commit_in_process(tmp_path, rng, monkeypatch):
    root = tmp_path / "s"
    st = EmbeddingStore.open(root, model_id=MODEL, dim=DIM)
    st.write_batch(records("a", 2), rng.normal(size=(2, DIM)))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_writer, "write_part", interrupted)
    with pytest.raises(KeyboardInterrupt):
        st.write_batch(records("b", 2), rng.normal(size=(2, DIM)), rng.normal(size=(2, 2, DIM)))
    monkeypatch.undo()
    assert len(list((root / "shards").iterdir())) == 1  # the uncommitted shards were removed
    assert not st.is_done("/videos/b0.mp4", 100, 7)
    assert st.write_batch(records("b", 2), rng.normal(size=(2, DIM))).tolist() == [2, 3]  # no id was consumed
    st.close()
    assert open_store(root).ids.tolist() == [0, 1, 2, 3]


# ----------------------------------------------------------------------------------------------------------------------
# Crash safety with real SIGKILLs

CHILD = r"""
import os, signal, sys, time
import numpy as np
from videoprism.store import EmbeddingStore

root, mode = sys.argv[1], sys.argv[2]
real_replace, real_unlink = os.replace, os.unlink
count = {"n": 0}

def kill_on(fn, suffix, nth=1):
    def wrapped(src, *args, **kwargs):
        name = os.fspath(args[0] if args and fn is real_replace else src)
        if name.endswith(suffix):
            count["n"] += 1
            if count["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return fn(src, *args, **kwargs)
    return wrapped

rng = np.random.default_rng(1)
st = EmbeddingStore.open(root)
if mode == "batch":
    os.replace = kill_on(real_replace, ".parquet")  # the shard is committed, its metadata part is not
    st.write_batch([dict(path="/videos/k.mp4", size=1, mtime_ns=1)], rng.normal(size=(1, st.dim)))
elif mode == "pipeline":
    print("started", flush=True)
    for i in range(10_000):
        path = f"/videos/p{i % 200}.mp4"
        if st.is_done(path, 1, 1):
            continue
        recs = [dict(path=path, size=1, mtime_ns=1, kind="window", start=w, end=w + 1.0) for w in range(3)]
        st.write_batch(recs, rng.normal(size=(3, st.dim)))
    time.sleep(60)  # finished before the kill on a fast machine: wait for it
elif mode == "compact-shard":
    os.replace = kill_on(real_replace, ".emb.npy")
    st.compact()
elif mode == "compact-part":
    os.unlink = kill_on(real_unlink, ".parquet")  # the new part is committed, the old ones still exist
    st.compact()
elif mode == "compact-shards-deleted":
    os.unlink = kill_on(real_unlink, ".npy", nth=2)
    st.compact()
raise SystemExit("not killed")
"""


def run_child(root: Path, mode: str, kill_after: float | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    if kill_after is not None:
        assert proc.stdout.readline().strip() == b"started"
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    return proc.returncode


def test_sigkill_between_shard_and_metadata(tmp_path, rng):
    root = tmp_path / "s"
    with EmbeddingStore.open(root, model_id=MODEL, dim=DIM) as st:
        st.write_batch(records("a", 3), rng.normal(size=(3, DIM)))
    before = snapshot_state(root)
    run_child(root, "batch")
    assert len(list((root / "shards").glob("*.npy"))) == 2  # orphan shard left behind
    assert list((root / "meta").glob(".tmp-*"))  # and the uncommitted part's temporary
    assert_same_state(snapshot_state(root), before)  # readers ignore both
    with EmbeddingStore.open(root) as st:  # the next writer removes them
        assert not st.is_done("/videos/k.mp4", 1, 1)
        st.write_batch([dict(path="/videos/k.mp4", size=1, mtime_ns=1)], rng.normal(size=(1, DIM)))
    assert len(list((root / "shards").glob("*.npy"))) == 2 and not list((root / "meta").glob(".tmp-*"))
    assert open_store(root).ids.tolist() == [0, 1, 2, 3]


def test_sigkill_during_pipeline_then_resume(tmp_path, rng):
    root = tmp_path / "s"
    EmbeddingStore.open(root, model_id=MODEL, dim=DIM).close()
    run_child(root, "pipeline", kill_after=0.2)
    assert_consistent(root)
    killed = open_store(root)
    assert len(killed) % 3 == 0  # whole batches only
    # Resume: the same pipeline in-process finishes the job.
    with EmbeddingStore.open(root) as st:
        for i in range(200):
            path = f"/videos/p{i}.mp4"
            if not st.is_done(path, 1, 1):
                recs = [dict(path=path, size=1, mtime_ns=1, kind="window", start=w, end=w + 1.0) for w in range(3)]
                st.write_batch(recs, rng.normal(size=(3, DIM)))
        st.compact()
    r = open_store(root)
    assert len(r) == 600 and len(set(r.metadata["path"].to_pylist())) == 200
    np.testing.assert_array_equal(r.ids[: len(killed)], killed.ids)  # nothing written before the kill was lost
    assert_consistent(root)


@pytest.mark.parametrize("mode", ["compact-shard", "compact-part", "compact-shards-deleted"])
def test_compaction_is_crash_safe(tmp_path, rng, mode):
    root = tmp_path / "s"
    with EmbeddingStore.open(root, model_id=MODEL, dim=DIM) as st:
        st.write_batch(records("a", 3), rng.normal(size=(3, DIM)), rng.normal(size=(3, 2, DIM)))
        st.write_batch(records("b", 3), rng.normal(size=(3, DIM)))
        st.write_failures([{"path": "/videos/bad.mp4", "size": 1, "mtime_ns": 1, "error": "eof"}])
        st.write_batch(records("a", 2, mtime=8), rng.normal(size=(2, DIM)))  # supersedes a0, a1
    before = snapshot_state(root)
    assert len(before[0]) == 4 + 2
    run_child(root, mode)
    assert_same_state(snapshot_state(root), before)
    with EmbeddingStore.open(root) as st:
        assert_same_state(snapshot_state(root), before)
        st.compact()
        assert not st.compact()
    assert_same_state(snapshot_state(root), before)
    assert len(list((root / "meta").iterdir())) == 1 and len(list((root / "shards").iterdir())) == 2
    assert open_store(root).is_compacted


# ----------------------------------------------------------------------------------------------------------------------
# Compaction


def test_compaction_is_idempotent_and_keeps_ids(tmp_path, rng):
    root = tmp_path / "s"
    with EmbeddingStore.open(root, model_id=MODEL, dim=DIM) as st:
        assert not st.compact()  # empty store
        st.write_batch(records("a", 4), rng.normal(size=(4, DIM)))
        assert not st.compact()  # a single batch is already compact
        st.write_batch(records("b", 4), rng.normal(size=(4, DIM)))
        st.write_batch(records("a", 1, size=1), rng.normal(size=(1, DIM)))  # a0 touched
        before = snapshot_state(root)
        reader_before = open_store(root)
        assert not reader_before.is_compacted and isinstance(reader_before.embeddings, ConcatenatedRows)
        assert st.compact()
        files = sorted(p.name for p in root.rglob("*") if p.is_file())
        assert not st.compact()
        assert files == sorted(p.name for p in root.rglob("*") if p.is_file())
        assert_same_state(snapshot_state(root), before)
        # A reader opened before the compaction still reads its snapshot.
        np.testing.assert_array_equal(np.asarray(reader_before.embeddings), before[2])
        ids = st.write_batch(records("c", 2), rng.normal(size=(2, DIM)))
        assert ids.tolist() == [9, 10]  # ids of dropped rows are never reused
    r = open_store(root)
    assert r.ids.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] and not r.is_compacted


# ----------------------------------------------------------------------------------------------------------------------
# Search


@pytest.fixture
def search_store(tmp_path) -> Path:
    rng = np.random.default_rng(3)
    root = tmp_path / "search"
    with EmbeddingStore.open(root, model_id=MODEL, dim=DIM) as st:
        for b in range(5):
            kinds = ["window"] * 300 + ["video"] * 100
            recs = [dict(path=f"/videos/{b}_{i}.mp4", size=1, mtime_ns=1, kind=k) for i, k in enumerate(kinds)]
            st.write_batch(recs, rng.normal(size=(400, DIM)))
    return root


@pytest.mark.parametrize("compacted", [False, True])
@pytest.mark.parametrize("kernel", ["numpy", "torch"])
def test_search_is_exact(search_store, compacted, kernel):
    if compacted:
        with EmbeddingStore.open(search_store) as st:
            st.compact()
    r = open_store(search_store)
    assert len(r) == 2000
    q = np.random.default_rng(4).normal(size=(6, DIM))
    emb = np.asarray(r.embeddings)
    ref_scores, ref_ids = brute_topk(emb, r.ids, q, 15)
    for block_rows in (7, 256):
        scores, rows = r.topk(q, 15, block_rows=block_rows, kernel=kernel)
        np.testing.assert_array_equal(r.ids[rows], ref_ids)
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-5)
    hits = r.search(q, k=15, kernel=kernel)
    assert len(hits) == 6 and all(isinstance(h, SearchHit) for h in hits[0])
    assert [[h.id for h in hs] for hs in hits] == ref_ids.tolist()
    assert all(hs[i].score >= hs[i + 1].score for hs in hits for i in range(14))
    assert json.dumps(hits[2][0].metadata) == json.dumps(r.row(int(np.searchsorted(r.ids, hits[2][0].id))))
    single = r.search(q[2], k=15, kernel=kernel)  # a (D,) query gives one list of hits
    assert [h.id for h in single] == ref_ids[2].tolist()

    # A stored vector is its own nearest neighbour.
    own = r.search(emb[123].astype(np.float32), k=1, kernel=kernel)[0]
    assert own.id == r.ids[123] and own.score == pytest.approx(1.0, abs=1e-3)

    # kind filter: same as brute force over the matching rows only.
    mask = (r.metadata["kind"].to_numpy(zero_copy_only=False) == "video").nonzero()[0]
    _, ref_video = brute_topk(emb[mask], r.ids[mask], q, 15)
    assert [[h.id for h in hs] for hs in r.search(q, k=15, kind="video", kernel=kernel)] == ref_video.tolist()
    assert all(h.metadata["kind"] == "video" for h in r.search(q[0], k=50, kind=["video"], kernel=kernel))
    assert len(r.search(q[0], k=5000, kind="video", kernel=kernel)) == 500
    assert r.search(q[0], k=5, kind="clip", kernel=kernel) == []
    # k larger than the store.
    assert len(r.search(q[0], k=10_000, kernel=kernel)) == 2000


def test_search_small_store_and_errors(tmp_path, rng):
    root = tmp_path / "s"
    with EmbeddingStore.open(root, model_id=MODEL, dim=DIM) as st:
        st.write_failures([{"path": "/a.mp4", "size": 1, "mtime_ns": 1, "error": "bad"}])
        with pytest.raises(EmptyStoreError, match="no embeddings.*1 videos failed"):
            st.reader().search(rng.normal(size=DIM))
        st.write_batch(records("a", 3), rng.normal(size=(3, DIM)))
    r = open_store(root)
    hits = r.search(rng.normal(size=DIM), k=10)  # n < k
    assert len(hits) == 3 and sorted(h.id for h in hits) == [1, 2, 3]
    with pytest.raises(ValueError, match="NaN"):
        r.search(np.full(DIM, np.nan))
    with pytest.raises(ValueError, match="NaN"):
        r.search(np.array([[np.inf] * DIM]))
    with pytest.raises(ValueError, match="shape"):
        r.search(np.ones(DIM + 1))
    with pytest.raises(ValueError, match="zero"):
        r.search(np.zeros(DIM))
    with pytest.raises(ValueError, match="k must"):
        r.search(np.ones(DIM), k=0)
    with pytest.raises(ValueError, match="unknown kind"):
        r.search(np.ones(DIM), kind="frames")
    with pytest.raises(ValueError, match="backend"):
        r.search(np.ones(DIM), backend="faiss")
    with pytest.raises(ValueError, match="kernel"):
        r.search(np.ones(DIM), kernel="cuda")


def test_concatenated_rows_indexing(search_store):
    r = open_store(search_store)
    view = r.embeddings
    assert isinstance(view, ConcatenatedRows) and view.shape == (2000, DIM) and len(view) == 2000
    full = np.asarray(view)
    np.testing.assert_array_equal(view[5], full[5])
    np.testing.assert_array_equal(view[-1], full[-1])
    np.testing.assert_array_equal(view[390:810:3], full[390:810:3])
    np.testing.assert_array_equal(view[[1999, 0, 400, 401]], full[[1999, 0, 400, 401]])
    mask = np.zeros(2000, bool)
    mask[::7] = True
    np.testing.assert_array_equal(view[mask], full[mask])
    np.testing.assert_array_equal(view[10:20, :4], full[10:20, :4])
    np.testing.assert_array_equal(view[3, 2], full[3, 2])
    with pytest.raises(IndexError):
        view[2000]
    assert np.asarray(view, dtype=np.float32).dtype == np.float32


# ----------------------------------------------------------------------------------------------------------------------
# LanceDB backend


def test_lance_backend(search_store, tmp_path):
    r = open_store(search_store, lance_dir=tmp_path / "lance")
    q = np.random.default_rng(5).normal(size=(3, DIM))
    exact = r.search(q, k=10)
    flat = r.search(q, k=10, backend="lance")  # 2000 rows: no index, so Lance scans exactly
    assert [[h.id for h in hs] for hs in flat] == [[h.id for h in hs] for hs in exact]
    for hs_f, hs_e in zip(flat, exact, strict=True):
        np.testing.assert_allclose([h.score for h in hs_f], [h.score for h in hs_e], atol=2e-3)
    assert json.dumps(flat[0][0].metadata) == json.dumps(exact[0][0].metadata)
    assert all(h.metadata["kind"] == "video" for h in r.search(q[0], k=20, kind="video", backend="lance"))
    assert r.search(q[0], k=5, kind="clip", backend="lance") == []

    # An IVF-PQ index still finds each stored vector first.
    table = r.lance_table(index="ivf_pq")
    assert table.list_indices()
    emb = np.asarray(r.embeddings, np.float32)
    probes = np.arange(0, 2000, 97)
    top1 = [hs[0].id for hs in r.search(emb[probes], k=1, backend="lance", nprobes=64, refine_factor=10)]
    assert np.mean(np.array(top1) == r.ids[probes]) >= 0.9

    # The table follows the store: after a write it is rebuilt under a new name and the old one dropped.
    with EmbeddingStore.open(search_store) as st:
        st.write_batch([dict(path="/videos/new.mp4", size=1, mtime_ns=1)], emb[:1] * -1)
    r2 = open_store(search_store, lance_dir=tmp_path / "lance")
    assert r2.search(-emb[0], k=1, backend="lance")[0].metadata["path"] == "/videos/new.mp4"
    assert len(list((tmp_path / "lance").glob("emb_*"))) == 1
