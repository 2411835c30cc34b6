"""The collection tools end to end through the real CLI: `videoprism embed`, `search` and `classify`.

Videos are generated with PyAV (colour ramps, a moving square, a solid-grey clip, different lengths and containers,
one corrupt file, one zero-length file, one text file, one 10 s video for windows); the model is a tiny random LvT
checkpoint saved with its tokenizer and video processor to a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from _checkpoints import save_tiny_clip_model
from _videos import make_video

from videoprism import VideoPrismClipModel
from videoprism.cli import main as cli_main
from videoprism.collection import expand_inputs, load_video_embedder
from videoprism.collection.clips import clip_pixels
from videoprism.errors import VideoInputNotFoundError
from videoprism.processing import VideoPrismProcessor
from videoprism.store import open_store
from videoprism.video_io import read_video, sample_frame_indices, window_bounds
from videoprism.zero_shot import label_probabilities_of_videos

SPM = Path(__file__).parent / "fixtures" / "tokenizer" / "spm_t5layout.model"
GOOD = ["ramp_a.mp4", "ramp_b.mov", "shapes_c.mkv", "sub/solid_d.mp4"]
LABELS = ["a colour ramp", "a moving square", "a grey screen"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "videoprism.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a runner started in background passes SIGINT on ignored


def start_cli(*args: str) -> subprocess.Popen:
    """The CLI in a child process that takes Ctrl-C (SIGINT) as a user's terminal would deliver it."""
    return subprocess.Popen(
        [sys.executable, "-m", "videoprism.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def make_shapes_video(path: Path, num_frames: int = 30, size: tuple[int, int] = (64, 48), fps: int = 15) -> Path:
    """A yellow square moving right over black."""
    width, height = size
    with av.open(str(path), mode="w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "18"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num_frames):
            image = np.zeros((height, width, 3), np.uint8)
            x = (3 * i) % (width - 16)
            image[16:32, x : x + 16] = (255, 220, 0)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("tools")
    model_dir = root / "model"
    save_tiny_clip_model(model_dir, SPM)

    videos = root / "videos"
    (videos / "sub").mkdir(parents=True)
    make_video(videos / "ramp_a.mp4", num_frames=24, size=(64, 48))
    make_video(videos / "ramp_b.mov", num_frames=45, fps=25, size=(80, 48))
    make_shapes_video(videos / "shapes_c.mkv")
    make_video(videos / "sub" / "solid_d.mp4", num_frames=16, fps=8, pattern="solid")
    shutil.copy(videos / "ramp_a.mp4", videos / "sub" / ".hidden.mp4")  # hidden: not picked up from the folder
    full = (videos / "ramp_b.mov").read_bytes()
    (videos / "corrupt.mp4").write_bytes(full[:32] + bytes(range(256)) * 8)
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "notes.txt").write_text("not a video\n")
    long_video = make_video(root / "long.mp4", num_frames=100, fps=10, size=(64, 48))
    extra = root / "extra"
    extra.mkdir()
    for i in range(3):
        make_video(extra / f"extra_{i}.mp4", num_frames=12 + 4 * i, size=(48, 32))
    return SimpleNamespace(root=root, model=model_dir, videos=videos, long=long_video, extra=extra)


@pytest.fixture(scope="module")
def reference(assets: SimpleNamespace) -> SimpleNamespace:
    """The model and processor loaded in this process, to check the CLI's numbers against."""
    return SimpleNamespace(
        model=VideoPrismClipModel.from_pretrained(assets.model),
        processor=VideoPrismProcessor.from_pretrained(assets.model),
    )


@pytest.fixture(scope="module")
def embedded(assets: SimpleNamespace) -> SimpleNamespace:
    """The videos folder embedded once (shared by the tests that read the store)."""
    store = assets.root / "store"
    # float32: the tests check the store against the float32 model, whatever "auto" picks on this machine
    result = run_cli("embed", str(assets.videos), "--out", str(store), "--model", str(assets.model),
                     "--batch-size", "2", "--workers", "1", "--dtype", "float32")  # fmt: skip
    return SimpleNamespace(store=store, result=result)


def store_state(store: Path) -> dict[str, tuple]:
    reader = open_store(store)
    meta = reader.metadata.to_pylist()
    return {m["path"]: (m["id"], m["mtime_ns"]) for m in meta}


# ----------------------------------------------------------------------------------------------------------------
# embed


def test_embed_store_contents(assets, embedded, reference):
    result = embedded.result
    assert result.returncode == 1, result.stderr  # two videos failed, the rest is embedded
    assert "embedded 4 of 6 videos (4 clips" in result.stdout
    assert f"failed: {assets.videos / 'corrupt.mp4'}" in result.stderr
    assert f"failed: {assets.videos / 'empty.mp4'}: empty file" in result.stderr

    reader = open_store(embedded.store)
    assert reader.model_id == str(assets.model.resolve()) and reader.dim == 32 and reader.is_compacted
    meta = reader.metadata.to_pylist()
    assert sorted(m["path"] for m in meta) == sorted(str(assets.videos / name) for name in GOOD)
    emb = np.asarray(reader.embeddings)
    assert emb.shape == (4, 32) and emb.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1.0, atol=2e-3)
    cosines = emb.astype(np.float32) @ emb.astype(np.float32).T
    assert (cosines[~np.eye(4, dtype=bool)] < 0.9999).all()  # distinct videos, distinct embeddings
    assert reader.frame_embeddings is None

    pixels = reference.processor(videos=[m["path"] for m in meta], return_tensors="pt")["pixel_values_videos"]
    with torch.no_grad():
        expected = reference.model.get_video_features(pixels).numpy()
    np.testing.assert_allclose(emb.astype(np.float32), expected, atol=3e-3)

    for m in meta:
        st = os.stat(m["path"])
        assert (m["size"], m["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
        assert m["kind"] == "clip" and np.isnan(m["start"]) and np.isnan(m["end"]) and m["error"] is None
        assert m["model_id"] == reader.model_id
        assert m["frame_indices"] == sample_frame_indices(m["num_frames_total"], 4).tolist()
    by_name = {Path(m["path"]).name: m for m in meta}
    assert by_name["ramp_b.mov"]["num_frames_total"] == 45
    assert by_name["ramp_b.mov"]["duration"] == pytest.approx(45 / 25, abs=1e-3)
    assert by_name["solid_d.mp4"]["duration"] == pytest.approx(2.0, abs=1e-3)

    failures = {Path(f["path"]).name: f["error"] for f in reader.failures.to_pylist()}
    assert set(failures) == {"corrupt.mp4", "empty.mp4"}
    assert "empty file" in failures["empty.mp4"] and "corrupt.mp4" in failures["corrupt.mp4"]


def test_resume_skips_stored_and_redoes_touched(assets, embedded, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(embedded.store, store)
    before = store_state(store)
    args = ("embed", str(assets.videos), "--out", str(store), "--model", str(assets.model), "--workers", "1")
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr  # recorded failures are skipped, not failed again
    assert "embedded 0 of 6 videos" in again.stdout and "skipped 6" in again.stdout
    assert "2 skipped videos failed in an earlier run" in again.stdout
    assert store_state(store) == before

    touched = assets.videos / "ramp_b.mov"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    try:
        third = run_cli(*args, "--retry-failed")
        new_mtime = touched.stat().st_mtime_ns
    finally:
        os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns))  # other tests read the shared videos
    assert third.returncode == 1, third.stderr  # the recorded failures fail again
    assert "embedded 1 of 6 videos (1 clips" in third.stdout and "2 failed" in third.stdout
    after = store_state(store)
    assert set(after) == set(before)
    for path, (row_id, mtime) in after.items():
        if path == str(touched):
            assert mtime == new_mtime and row_id > max(i for i, _ in before.values())
        else:
            assert (row_id, mtime) == before[path]  # not redone
    assert len(open_store(store).failures) == 2


class StallingServer:
    """An HTTP server that accepts connections and never answers: a worker reading from it blocks."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/stall.mp4"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def wait_for_parts(store: Path, count: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = store / "meta"
        if meta.is_dir() and len(list(meta.glob("*.parquet"))) >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"{store} did not reach {count} committed batches")


def assert_consistent(store: Path, paths: list[str]) -> None:
    reader = open_store(store)
    meta = reader.metadata.to_pylist()
    assert sorted(m["path"] for m in meta) == sorted(paths)  # each video exactly once
    assert len(set(reader.ids.tolist())) == len(meta)
    assert np.asarray(reader.embeddings).shape == (len(paths), 32)


def test_interrupt_and_kill_then_resume(assets, tmp_path):
    videos = [str(assets.videos / name) for name in GOOD[:3]] + [str(p) for p in sorted(assets.extra.glob("*.mp4"))]
    store = tmp_path / "store"
    server = StallingServer()
    try:
        common = ("--out", str(store), "--model", str(assets.model), "--batch-size", "1", "--workers", "1")
        # Ctrl-C while the worker is stuck on the URL: the three batches before it are kept, the lock released.
        first = tmp_path / "first.txt"
        first.write_text("# three videos, then a URL that never answers\n" + "\n".join(videos[:3] + [server.url]))
        proc = start_cli("embed", f"@{first}", *common)
        wait_for_parts(store, 3, proc)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "interrupted" in err
        assert_consistent(store, videos[:3])

        # SIGKILL: nothing runs on exit; the store is still consistent and the next run takes over.
        second = tmp_path / "second.txt"
        second.write_text("\n".join(videos[:4] + [server.url] + videos[4:]))
        proc = start_cli("embed", f"@{second}", *common)
        wait_for_parts(store, 4, proc)
        time.sleep(0.2)
        proc.kill()
        proc.wait(timeout=30)
        proc.communicate(timeout=30)  # returns once the worker is gone too (it shares the pipes)
        assert_consistent(store, videos[:4])
        before = store_state(store)
    finally:
        server.close()

    resumed = run_cli("embed", *videos, *common)
    assert resumed.returncode == 0, resumed.stderr
    assert "embedded 2 of 6 videos" in resumed.stdout and "skipped 4" in resumed.stdout
    assert_consistent(store, videos)
    after = store_state(store)
    assert {p: after[p] for p in before} == before  # stored rows were not redone
    assert open_store(store).is_compacted


def test_windows_frames_and_video_row(assets, tmp_path):
    store = tmp_path / "store"
    args = ("embed", str(assets.long), "--out", str(store), "--model", str(assets.model), "--window", "4",
            "--stride", "3", "--frames", "--batch-size", "2")  # fmt: skip
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "embedded 1 of 1 videos (3 clips" in result.stdout
    reader = open_store(store)
    meta = reader.metadata.to_pylist()
    windows = [m for m in meta if m["kind"] == "window"]
    pooled = [i for i, m in enumerate(meta) if m["kind"] == "video"]
    assert [(m["start"], m["end"]) for m in windows] == [(0.0, 4.0), (3.0, 7.0), (6.0, 10.0)]
    # 10 fps: window [3, 7) holds frames 30..69; 4 frames are sampled inside it as the original samples a clip.
    assert [m["frame_indices"] for m in windows] == [[0, 10, 20, 30], [30, 40, 50, 60], [60, 70, 80, 90]]
    assert len(pooled) == 1 and all(m["video_rows"] == 4 for m in meta)
    emb = np.asarray(reader.embeddings, np.float32)
    window_rows = [i for i, m in enumerate(meta) if m["kind"] == "window"]
    mean = emb[window_rows].mean(0)
    np.testing.assert_allclose(emb[pooled[0]], mean / np.linalg.norm(mean), atol=2e-3)
    frames = np.asarray(reader.frame_embeddings, np.float32)
    assert frames.shape == (4, 4, 32)
    assert np.isfinite(frames[window_rows]).all() and np.isnan(frames[pooled[0]]).all()
    np.testing.assert_allclose(np.linalg.norm(frames[window_rows], axis=-1), 1.0, atol=2e-3)

    clash = run_cli("embed", str(assets.long), "--out", str(store), "--model", str(assets.model))
    assert clash.returncode == 2 and "--window" in clash.stderr


def test_clip_is_sampled_once_and_embedded_as_the_model_gives_it(assets, reference):
    """A decoded clip is resized without resampling, and the embedder returns the model's own embeddings."""
    embedder, processor = load_video_embedder(assets.model, device="cpu")
    path = str(assets.videos / "ramp_b.mov")
    pixels = clip_pixels(processor, read_video(path, num_frames=embedder.num_frames))[None]
    np.testing.assert_array_equal(pixels, processor(path, return_tensors="np")["pixel_values_videos"])
    embeds, frames = embedder(pixels, frames=True)
    with torch.inference_mode():
        out = reference.model.video_model(
            torch.from_numpy(pixels), interpolate_pos_encoding=embedder.interpolate, return_frame_embeds=True
        )
    np.testing.assert_allclose(embeds, out.pooler_output.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(frames, out.frame_embeds.numpy(), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# search and classify


def test_search_by_video_and_text(assets, embedded):
    query = assets.videos / "shapes_c.mkv"
    found = run_cli("search", str(embedded.store), "--video", str(query), "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["path"] == str(query) and hits[0]["score"] > 0.999  # a stored clip is its own nearest neighbour
    assert hits[0]["start"] is None and hits[0]["end"] is None

    text = run_cli("search", str(embedded.store), "a yellow square moving", "-k", "2")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.strip().splitlines()
    assert lines[0].split() == ["rank", "score", "window", "path"] and len(lines) == 3
    assert "whole video" in lines[1]
    scores = [float(line.split()[1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)

    as_json = run_cli("search", str(embedded.store), "a grey screen", "-k", "10", "--json")
    hits = json.loads(as_json.stdout)
    assert len(hits) == 4 and all(set(h) == {"rank", "score", "id", "path", "start", "end"} for h in hits)
    paths = dict(zip(*open_store(embedded.store).metadata.select(["id", "path"]).to_pydict().values(), strict=True))
    assert [paths[h["id"]] for h in hits] == [h["path"] for h in hits]  # the id names the stored row


def test_classify_probabilities(assets, reference, tmp_path):
    videos = [str(assets.videos / name) for name in ("ramp_a.mp4", "shapes_c.mkv")]
    result = run_cli("classify", *videos, str(assets.videos / "corrupt.mp4"), "--labels", ",".join(LABELS),
                     "--model", str(assets.model), "--json", "--dtype", "float32")  # fmt: skip
    assert result.returncode == 1 and "corrupt.mp4" in result.stderr
    table = json.loads(result.stdout)
    assert [row["video"] for row in table] == videos
    expected = label_probabilities_of_videos(reference.model, reference.processor, videos, LABELS).numpy()
    for row, probs in zip(table, expected, strict=True):
        got = [entry["probability"] for entry in row["labels"]]
        assert sorted(entry["label"] for entry in row["labels"]) == sorted(LABELS)
        assert got == sorted(got, reverse=True) and sum(got) == pytest.approx(1.0, abs=1e-5)
        by_label = {entry["label"]: entry["probability"] for entry in row["labels"]}
        np.testing.assert_allclose([by_label[label] for label in LABELS], probs, atol=1e-4)

    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# classes\n" + "\n".join(LABELS) + "\n")
    shown = run_cli("classify", videos[0], "--labels-file", str(labels_file), "--templates", "ensemble",
                    "--top-k", "2", "--model", str(assets.model))  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert lines[0] == videos[0] and len(lines) == 3
    assert sum(float(line.split()[0]) for line in lines[1:]) < 1.0


# ----------------------------------------------------------------------------------------------------------------
# usage


def test_help_and_usage_errors(assets, embedded, tmp_path, capsys):
    for command in ("embed", "search", "classify"):
        shown = run_cli(command, "--help") if command == "embed" else None
        if shown is not None:
            assert shown.returncode == 0 and "example" in shown.stdout
        else:
            with pytest.raises(SystemExit) as exit_info:
                cli_main([command, "--help"])
            assert exit_info.value.code == 0 and "example" in capsys.readouterr().out

    missing = run_cli("embed", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "s"), "--model", str(assets.model))
    assert missing.returncode == 2 and "nope.mp4" in missing.stderr
    assert not (tmp_path / "s").exists()

    model = ("--model", str(assets.model))
    (tmp_path / "empty_dir").mkdir()
    cases = [
        ["embed", str(assets.long)],  # no --out
        ["embed", str(assets.long), "--out", str(tmp_path / "s"), "--window", "-1", *model],
        ["embed", str(assets.long), "--out", str(tmp_path / "s"), "--stride", "2", *model],
        ["embed", str(tmp_path / "empty_dir"), "--out", str(tmp_path / "s"), *model],
        ["embed", "@" + str(tmp_path / "no_list.txt"), "--out", str(tmp_path / "s"), *model],
        ["embed", str(tmp_path / "*.mp4"), "--out", str(tmp_path / "s"), *model],
        ["search", str(tmp_path / "no_store"), "text"],
        ["search", str(embedded.store)],
        ["search", str(embedded.store), "text", "--video", str(assets.long)],
        ["search", str(embedded.store), "text", "-k", "0"],
        ["classify", str(assets.long), *model],
        ["classify", str(assets.long), "--labels", "one", *model],
        ["classify", str(assets.long), "--labels", "a,b,a", *model],
        ["classify", str(assets.long), "--labels", "a,b", "--templates", "no placeholder", *model],
        ["info"],
    ]
    for argv in cases:
        try:
            code = cli_main(argv)
        except SystemExit as exit_info:
            code = exit_info.code
        assert code == 2, (argv, capsys.readouterr())
    assert not (tmp_path / "s").exists()
    assert "error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Python API pieces


def test_expand_inputs(assets, tmp_path):
    videos = assets.videos
    folder = expand_inputs(videos)
    assert folder == [str(videos / name) for name in ("corrupt.mp4", "empty.mp4", "ramp_a.mp4", "ramp_b.mov",
                                                      "shapes_c.mkv", "sub/solid_d.mp4")]  # fmt: skip
    assert expand_inputs([str(videos / "*.m*"), str(videos / "ramp_a.mp4")]) == [
        str(videos / name) for name in ("corrupt.mp4", "empty.mp4", "ramp_a.mp4", "ramp_b.mov", "shapes_c.mkv")
    ]
    assert expand_inputs(str(videos / "**" / "solid_*.mp4")) == [str(videos / "sub" / "solid_d.mp4")]
    assert expand_inputs(videos / "notes.txt") == [str(videos / "notes.txt")]  # a named file is always tried
    listing = assets.root / "inputs.txt"  # relative lines are relative to the list's folder
    listing.write_text("# comment\n\nvideos/sub\nhttps://example.com/v.mp4\n")
    assert expand_inputs("@" + str(listing)) == [str(videos / "sub" / "solid_d.mp4"), "https://example.com/v.mp4"]
    with pytest.raises(VideoInputNotFoundError, match="nothing_here"):
        expand_inputs([str(videos), str(tmp_path / "nothing_here")])


def test_window_bounds():
    assert window_bounds(10.0, 4, 3, fps=10) == [(0.0, 4.0), (3.0, 7.0), (6.0, 10.0)]
    assert window_bounds(10.0, 5) == [(0.0, 5.0), (5.0, 10.0)]
    assert window_bounds(10.001, 5, fps=30) == [(0.0, 5.0), (5.0, 10.0)]  # no window for the last millisecond
    assert window_bounds(2.0, 5) == [(0.0, 2.0)]
    assert window_bounds(10.0, 1, 3) == [(0.0, 1.0), (3.0, 4.0), (6.0, 7.0), (9.0, 10.0)]
