"""Poster thumbnails: written by `embed_videos` from the decoded clips, back-filled by `videoprism thumbnails`."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _shapes import build_store, make_shape_videos
from PIL import Image

from videoprism.collection import embed_videos
from videoprism.collection.thumbnails import (
    THUMBS_DIR,
    backfill_thumbnails,
    poster_jpeg,
    thumbnail_key,
    thumbnail_path,
)
from videoprism.store import open_store
from videoprism.video_io import read_video


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videoprism.cli", *args], capture_output=True, text=True, timeout=300)


def thumb_files(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((store / THUMBS_DIR).glob("*/*.jpg"))}


def expected_poster(row: dict) -> bytes:
    """The poster of a row as embed makes it: the middle sampled frame of the row's clip."""
    frames = len(row["frame_indices"])
    start, end = row["start"], row["end"]
    if start != start:  # NaN: the whole video
        clip = read_video(row["path"], num_frames=frames)
    else:
        clip = read_video(row["path"], num_frames=frames, start_time=start, end_time=end)
    assert clip.indices.tolist() == row["frame_indices"]
    return poster_jpeg(clip.frames[frames // 2])


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same shape videos embedded with posters (windows of 2 s) and without them."""
    root = tmp_path_factory.mktemp("thumbs")
    model, with_posters = build_store(root, count=3)
    without = root / "bare"
    embed_videos(root / "videos", without, model, window=2.0, workers=0, progress=False, thumbnails=False)
    return {"root": root, "model": model, "with": with_posters, "without": without}


def test_thumbnail_key_is_a_hash_of_path_kind_and_bounds() -> None:
    expected = hashlib.sha1(json.dumps(["/v/a.mp4", "window", 0.0, 2.5]).encode()).hexdigest()
    assert thumbnail_key("/v/a.mp4", "window", 0.0, 2.5) == expected
    assert thumbnail_key("/v/a.mp4", "video", float("nan"), float("nan")) == thumbnail_key(
        "/v/a.mp4", "video", None, None
    )
    assert thumbnail_key("/v/a.mp4", "clip", None, None) != thumbnail_key("/v/a.mp4", "video", None, None)
    assert thumbnail_path("/s", expected) == Path("/s") / THUMBS_DIR / expected[:2] / f"{expected}.jpg"
    with pytest.raises(ValueError, match="40 lowercase hex"):
        thumbnail_path("/s", "../../etc/passwd")


def test_poster_scales_the_long_side_and_never_enlarges() -> None:
    frame = np.zeros((128, 192, 3), np.uint8)
    frame[:, :96] = (255, 0, 0)
    image = Image.open(io.BytesIO(poster_jpeg(frame)))
    assert image.format == "JPEG" and image.size == (160, 107)
    left, right = np.asarray(image)[50, 10].astype(int), np.asarray(image)[50, 150].astype(int)
    assert left[0] > 200 and left[1] < 40 and right.max() < 40  # red on the left, black on the right
    assert Image.open(io.BytesIO(poster_jpeg(np.zeros((20, 32, 3), np.uint8)))).size == (32, 20)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        poster_jpeg(np.zeros((20, 32), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        poster_jpeg(np.zeros((20, 32, 3), np.float32))


def test_embed_writes_one_poster_per_row_from_the_middle_frame(stores: dict[str, Path]) -> None:
    reader = open_store(stores["with"])
    rows = reader.metadata.to_pylist()
    assert {r["kind"] for r in rows} == {"window", "video"} and len(rows) == 9  # 3 videos x (2 windows + pooled)
    files = thumb_files(stores["with"])
    assert len(files) == len(rows)
    for row in rows:
        data = thumbnail_path(
            stores["with"], thumbnail_key(row["path"], row["kind"], row["start"], row["end"])
        ).read_bytes()
        if row["kind"] == "window":
            assert data == expected_poster(row)
        else:  # the pooled row shows its middle window (of 2 windows: the second)
            middle = next(r for r in rows if r["path"] == row["path"] and r["kind"] == "window" and r["start"] == 2.0)
            assert data == expected_poster(middle)
        assert Image.open(io.BytesIO(data)).size == (160, 107)
    assert not list((stores["with"] / THUMBS_DIR).glob("*/.tmp-*"))


def test_embed_without_windows_writes_clip_posters(tmp_path: Path, stores: dict[str, Path]) -> None:
    store = tmp_path / "clips"
    embed_videos(stores["root"] / "videos", store, stores["model"], workers=0, progress=False)
    rows = open_store(store).metadata.to_pylist()
    assert [r["kind"] for r in rows] == ["clip"] * 3
    for row in rows:
        assert thumbnail_path(store, thumbnail_key(row["path"], "clip", None, None)).read_bytes() == expected_poster(
            row
        )
    assert len(thumb_files(store)) == 3


def test_embed_with_thumbnails_off_writes_none(stores: dict[str, Path]) -> None:
    assert len(open_store(stores["without"])) == 9
    assert not (stores["without"] / THUMBS_DIR).exists()


def test_backfill_matches_embed_and_resumes(stores: dict[str, Path]) -> None:
    store = stores["without"]
    first = run_cli("thumbnails", str(store))
    assert first.returncode == 0, first.stderr
    assert "wrote 9 thumbnails" in first.stdout and "0 rows already had one" in first.stdout
    assert thumb_files(store) == thumb_files(stores["with"])  # same keys (same paths), same bytes

    names = sorted(thumb_files(store))
    for name in names[:2]:
        (store / THUMBS_DIR / name[:2] / name).unlink()
    stale = store / THUMBS_DIR / names[3][:2] / f".tmp-0badc0de-{names[3]}"
    stale.write_bytes(b"half a jpeg")
    again = run_cli("thumbnails", str(store))
    assert again.returncode == 0, again.stderr
    assert "wrote 2 thumbnails" in again.stdout and "7 rows already had one" in again.stdout
    assert not stale.exists()
    assert thumb_files(store) == thumb_files(stores["with"])
    quiet = run_cli("thumbnails", str(store), "-q", "--workers", "1")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    summary = backfill_thumbnails(store)
    assert (summary.written, summary.existing, summary.failures) == (0, 9, [])


def test_backfill_reports_videos_that_fail_and_fills_the_rest(tmp_path: Path, stores: dict[str, Path]) -> None:
    videos = make_shape_videos(tmp_path / "videos", 2)
    store = tmp_path / "store"
    embed_videos(videos, store, stores["model"], workers=0, progress=False, thumbnails=False)
    videos[0].unlink()
    result = run_cli("thumbnails", str(store))
    assert result.returncode == 1
    assert "wrote 1 thumbnails" in result.stdout and "1 videos failed" in result.stdout
    assert f"failed: {str(videos[0])!r}" in result.stderr
    summary = backfill_thumbnails(store)  # the failed video is tried again, the other one is skipped
    assert (summary.written, summary.existing, [p for p, _ in summary.failures]) == (0, 1, [str(videos[0])])


def test_backfill_errors(tmp_path: Path) -> None:
    missing = run_cli("thumbnails", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no embedding store" in missing.stderr
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        backfill_thumbnails(tmp_path, workers=0)
