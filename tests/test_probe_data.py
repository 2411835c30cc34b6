"""Labelled sets for `videoprism probe` (folders, CSV, JSONL), their splits and shots, and the cached features."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _checkpoints import save_tiny_clip_model
from _videos import make_video

from videoprism import VideoPrismClipModel, VideoPrismVideoProcessor, VideoPrismVisionModel, read_video
from videoprism.collection import load_video_embedder
from videoprism.probe import features
from videoprism.probe.data import (
    EmptyClassError,
    EmptyLabelError,
    EmptyLabelledSetError,
    LabelColumnsError,
    LabelledItem,
    LabelledSetError,
    LabelledSetNotFoundError,
    SingleClassError,
    SplitError,
    TimeRangeError,
    UnknownLabelError,
    load_labelled_set,
)
from videoprism.probe.features import FeatureCacheError, FeatureSettingsError, extract_features

# ----------------------------------------------------------------------------------------------------------------
# Labelled sets (placeholder files: loading a set only looks at names)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_folder_set(tmp_path):
    for name in ["dog/b.mp4", "dog/a.MKV", "dog/deep/c.webm", "cat/z.mov", "cat/notes.txt", "cat/.hidden.mp4"]:
        touch(tmp_path / "set" / name)
    touch(tmp_path / "set" / ".git" / "x.mp4")
    data = load_labelled_set(tmp_path / "set")
    root = str((tmp_path / "set").resolve())
    assert data.class_names == ["cat", "dog"]
    assert not data.multi_label and data.skipped == []
    assert [(item.path[len(root) + 1 :], item.labels) for item in data.items] == [
        ("cat/z.mov", ("cat",)),
        ("dog/a.MKV", ("dog",)),
        ("dog/b.mp4", ("dog",)),
        ("dog/deep/c.webm", ("dog",)),
    ]
    assert all(item.start is None and item.end is None for item in data.items)
    np.testing.assert_array_equal(data.targets(), [[1, 0], [0, 1], [0, 1], [0, 1]])


def test_csv_set_with_spans_and_missing_files(tmp_path, capsys):
    touch(tmp_path / "v" / "a.mp4")
    touch(tmp_path / "v" / "b.avi")
    touch(tmp_path / "elsewhere.bin")
    (tmp_path / "v" / "folder.mp4").mkdir()
    (tmp_path / "list.csv").write_text(
        "Path, label ,start,end\n"
        "v/a.mp4,run,1.5,4\n"
        f"{tmp_path / 'elsewhere.bin'},walk,,\n"
        "\n"
        "v/gone.mp4,walk,,\n"
        "v/folder.mp4,walk,,\n"
        '"v/b.avi","jump ",,2\n'
    )
    data = load_labelled_set(tmp_path / "list.csv")
    assert data.items == [
        LabelledItem(str(tmp_path / "v" / "a.mp4"), ("run",), 1.5, 4.0),
        LabelledItem(str(tmp_path / "elsewhere.bin"), ("walk",), None, None),
        LabelledItem(str(tmp_path / "v" / "b.avi"), ("jump",), None, 2.0),
    ]
    assert data.class_names == ["jump", "run", "walk"] and not data.multi_label
    assert [(Path(p).name, reason.split(" (")[0]) for p, reason in data.skipped] == [
        ("gone.mp4", "no such file"),
        ("folder.mp4", "a folder, not a video file"),
    ]
    assert "list.csv:5" in data.skipped[0][1]
    err = capsys.readouterr().err
    assert "skipped" in err and "gone.mp4" in err and "folder.mp4" in err
    load_labelled_set(tmp_path / "list.csv", quiet=True)
    assert capsys.readouterr().err == ""


def test_jsonl_multi_label_and_merged_rows(tmp_path):
    for name in ["a.mp4", "b.mp4", "c.mp4"]:
        touch(tmp_path / name)
    rows = [
        {"path": "a.mp4", "label": "cat|dog"},
        {"path": "b.mp4", "label": ["dog", "bird"], "start": 0, "end": 2.5},
        {"path": "b.mp4", "label": "cat", "start": 0, "end": 2.5},  # same video and span: labels merge
        {"path": "b.mp4", "label": "cat", "start": 2.5},  # another span: another item
        {"path": "c.mp4", "label": 7, "end": None},
    ]
    (tmp_path / "set.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    data = load_labelled_set(tmp_path / "set.jsonl")
    assert data.multi_label
    assert data.class_names == ["7", "bird", "cat", "dog"]
    assert [(Path(i.path).name, i.labels, i.start, i.end) for i in data.items] == [
        ("a.mp4", ("cat", "dog"), None, None),
        ("b.mp4", ("dog", "bird", "cat"), 0.0, 2.5),
        ("b.mp4", ("cat",), 2.5, None),
        ("c.mp4", ("7",), None, None),
    ]
    np.testing.assert_array_equal(data.targets(), [[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 1, 0], [1, 0, 0, 0]])


def test_given_class_names(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "b.mp4")
    (tmp_path / "test.csv").write_text("path,label\na.mp4,dog\nb.mp4,dog\n")
    data = load_labelled_set(tmp_path / "test.csv", class_names=["dog", "cat", "bird"])
    assert data.class_names == ["dog", "cat", "bird"] and len(data) == 2
    np.testing.assert_array_equal(data.targets(), [[1, 0, 0], [1, 0, 0]])
    with pytest.raises(UnknownLabelError, match="test.csv has labels the classifier does not know: 'dog'; its cl"):
        load_labelled_set(tmp_path / "test.csv", class_names=["cat", "bird"])
    with pytest.raises(SingleClassError, match="at least two distinct classes"):
        load_labelled_set(tmp_path / "test.csv", class_names=["dog", "dog"])


def test_url_rows_are_kept_unchecked(tmp_path):
    touch(tmp_path / "a.mp4")
    (tmp_path / "set.csv").write_text("path,label\na.mp4,x\nhttps://example.com/v.mp4,y\n")
    assert [i.path for i in load_labelled_set(tmp_path / "set.csv").items] == [
        str(tmp_path / "a.mp4"),
        "https://example.com/v.mp4",
    ]


BAD_LISTS = [
    ("empty.csv", "", EmptyLabelledSetError, "is empty"),
    ("blank.csv", "\n \n", EmptyLabelledSetError, "is empty"),
    ("header.csv", "path,label\n", EmptyLabelledSetError, "header but no rows"),
    ("empty.jsonl", "\n", EmptyLabelledSetError, "is empty"),
    ("unknown.csv", "path,label,speed\na.mp4,x,1\n", LabelColumnsError, "unknown column(s) 'speed'; allowed: path"),
    ("nolabel.csv", "path,start\na.mp4,1\n", LabelColumnsError, "missing column(s) label; allowed: path, label"),
    ("twice.csv", "path,label,label\na.mp4,x,y\n", LabelColumnsError, "a column appears twice"),
    ("fields.csv", "path,label\na.mp4,x,3\n", LabelColumnsError, "fields.csv:2: 3 fields, the header has 2"),
    ("unknown.jsonl", '{"path": "a.mp4", "label": "x", "fps": 3}\n', LabelColumnsError, "unknown column(s) 'fps'"),
    ("nopath.jsonl", '{"label": "x"}\n', LabelColumnsError, "missing column(s) path"),
    ("notjson.jsonl", "{oops\n", LabelledSetError, "notjson.jsonl:1: not JSON"),
    ("list.jsonl", '["a.mp4", "x"]\n', LabelledSetError, "not a JSON object"),
    ("one.csv", "path,label\na.mp4,x\nb.mp4,x\n", SingleClassError, "a single class ('x')"),
    ("nan.csv", "path,label,start\na.mp4,x,soon\nb.mp4,y,\n", TimeRangeError, "nan.csv:2: start='soon' is not"),
    ("inf.csv", "path,label,end\na.mp4,x,inf\nb.mp4,y,\n", TimeRangeError, "end='inf' is not a number"),
    ("neg.csv", "path,label,start\na.mp4,x,-1\nb.mp4,y,\n", TimeRangeError, "start='-1' is negative"),
    ("order.csv", "path,label,start,end\na.mp4,x,3,3\nb.mp4,y,,\n", TimeRangeError, "end=3.0 is not after start=3.0"),
    ("bool.jsonl", '{"path": "a.mp4", "label": "x", "end": true}\n', TimeRangeError, "end=True is not a number"),
    ("nolab.csv", "path,label\na.mp4,\nb.mp4,y\n", EmptyLabelError, "nolab.csv:2: the label is missing"),
    ("pipe.csv", "path,label\na.mp4,x||y\nb.mp4,y\n", EmptyLabelError, "pipe.csv:2: empty label ''"),
    ("emptylist.jsonl", '{"path": "a.mp4", "label": []}\n', EmptyLabelError, "the label list is empty"),
    ("nopathtext.jsonl", '{"path": 3, "label": "x"}\n', LabelledSetError, "the path is empty or not text"),
    ("gone.csv", "path,label\nnone1.mp4,x\nnone2.mp4,y\n", EmptyLabelledSetError, "none of the 2 videos listed"),
    ("set.txt", "a.mp4 x\n", LabelledSetError, "a .csv or a .jsonl file"),
]


@pytest.mark.parametrize(("name", "text", "error", "message"), BAD_LISTS, ids=[b[0] for b in BAD_LISTS])
def test_bad_list_files(tmp_path, name, text, error, message):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "b.mp4")
    (tmp_path / name).write_text(text)
    with pytest.raises(error) as info:
        load_labelled_set(tmp_path / name)
    assert message in str(info.value)
    assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_folders(tmp_path):
    with pytest.raises(LabelledSetNotFoundError, match="no such folder or file"):
        load_labelled_set(tmp_path / "nothing")
    (tmp_path / "flat").mkdir()
    touch(tmp_path / "flat" / "a.mp4")
    with pytest.raises(EmptyLabelledSetError, match="flat has no class folders; put the videos"):
        load_labelled_set(tmp_path / "flat")
    touch(tmp_path / "set" / "cat" / "a.mp4")
    touch(tmp_path / "set" / "dog" / "readme.txt")
    with pytest.raises(EmptyClassError, match=r"class folder .*dog holds no video file .*add videos to it"):
        load_labelled_set(tmp_path / "set")
    (tmp_path / "set" / "dog" / "readme.txt").unlink()
    (tmp_path / "set" / "dog").rmdir()
    with pytest.raises(SingleClassError, match="a single class \\('cat'\\)"):
        load_labelled_set(tmp_path / "set")


# ----------------------------------------------------------------------------------------------------------------
# Splits and shots


def make_set(tmp_path: Path, counts: dict[str, int], multi: dict[str, str] | None = None):
    lines = ["path,label"]
    for label, count in counts.items():
        for i in range(count):
            lines.append(f"{touch(tmp_path / f'{label}{i}.mp4').name},{label}")
    for name, labels in (multi or {}).items():
        lines.append(f"{touch(tmp_path / name).name},{labels}")
    (tmp_path / "set.csv").write_text("\n".join(lines) + "\n")
    return load_labelled_set(tmp_path / "set.csv")


def names(data) -> list[str]:
    return [Path(item.path).name for item in data.items]


def test_split_is_stratified_and_reproducible(tmp_path):
    data = make_set(tmp_path, {"a": 10, "b": 5, "c": 1})
    train, val = data.split(0.2, seed=3)
    assert sorted(names(train) + names(val)) == sorted(names(data))
    assert not set(names(train)) & set(names(val))
    # round(0.2 * 10) = 2 of a, round(0.2 * 5) = 1 of b, none of the single c (a class keeps one training video)
    assert [sum(name.startswith(c) for name in names(val)) for c in "abc"] == [2, 1, 0]
    assert names(train) == [n for n in names(data) if n in names(train)]  # the set's order is kept
    assert train.class_names == val.class_names == ["a", "b", "c"]
    again_train, again_val = data.split(0.2, seed=3)
    assert names(again_val) == names(val) and names(again_train) == names(train)
    other = {tuple(names(data.split(0.2, seed=s)[1])) for s in range(6)}
    assert len(other) > 1  # the seed matters
    np.testing.assert_array_equal(val.targets().sum(0), [2, 1, 0])


def test_split_multi_label_and_errors(tmp_path):
    data = make_set(tmp_path, {"a": 6, "b": 6}, multi={"ab0.mp4": "a|rare", "ab1.mp4": "b|rare"})
    train, val = data.split(0.5, seed=0)
    # the two "rare" videos form one stratum (their rarest label): one goes to val
    assert sum(name.startswith("ab") for name in names(val)) == 1
    assert len(val) == 3 + 3 + 1
    for bad in (0, 1, 1.5, -0.1, True, "0.2"):
        with pytest.raises(SplitError, match="in \\(0, 1\\)"):
            data.split(bad)
    with pytest.raises(SplitError, match="seed=-1"):
        data.split(0.2, seed=-1)
    tiny = make_set(tmp_path / "tiny", {"a": 2, "b": 1})
    with pytest.raises(SplitError, match="is no video; raise --val-split"):
        tiny.split(0.1)


def test_sample_shots(tmp_path):
    data = make_set(tmp_path, {"a": 8, "b": 5, "c": 3})
    shots = data.sample_shots(2, seed=1)
    assert [sum(name.startswith(c) for name in names(shots)) for c in "abc"] == [2, 2, 2]
    assert names(shots) == [n for n in names(data) if n in names(shots)]
    assert names(data.sample_shots(2, seed=1)) == names(shots)
    assert len({tuple(names(data.sample_shots(2, seed=s))) for s in range(6)}) > 1
    assert [sum(n.startswith(c) for n in names(data.sample_shots(3, seed=0))) for c in "abc"] == [3, 3, 3]
    with pytest.raises(SplitError, match="class 'c' .* has 3 videos, fewer than shots=4; lower --shots"):
        data.sample_shots(4)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(SplitError, match="positive number of videos per class"):
            data.sample_shots(bad)


def test_sample_shots_multi_label_counts_every_label(tmp_path):
    data = make_set(tmp_path, {"a": 4, "b": 4}, multi={"ab0.mp4": "a|b", "ab1.mp4": "a|b"})
    for seed in range(5):
        shots = data.sample_shots(2, seed=seed)
        counts = shots.targets().sum(0)
        assert (counts >= 2).all() and len(shots) <= 4


# ----------------------------------------------------------------------------------------------------------------
# Cached features (real videos, tiny checkpoints)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("probe")
    lvt = save_tiny_clip_model(root / "lvt")
    vision = root / "vision"
    config = VideoPrismClipModel.from_pretrained(lvt).config.vision_config
    torch.manual_seed(1)
    VideoPrismVisionModel(config).save_pretrained(vision)
    VideoPrismVideoProcessor(num_frames=4, size=32).save_pretrained(vision)
    odd = root / "odd"
    shutil.copytree(vision, odd)
    VideoPrismVideoProcessor(num_frames=4, size=24).save_pretrained(odd)  # a 3x3 patch grid
    videos = root / "videos"
    videos.mkdir()
    make_video(videos / "a0.mp4", num_frames=24, fps=12)
    make_video(videos / "a1.mkv", num_frames=30, fps=10, size=(48, 64))
    make_video(videos / "b0.mp4", num_frames=40, fps=10, size=(80, 48))
    make_video(videos / "b1.mov", num_frames=16, fps=8)
    (videos / "broken.mp4").write_bytes(b"not a video at all" * 10)
    rows = ["path,label,start,end", "a0.mp4,a,,", "a1.mkv,a,0.5,2", "b0.mp4,b|c,1,", "b1.mov,b,,1.5", "b0.mp4,c,0,1"]
    (videos / "set.csv").write_text("\n".join(rows) + "\n")
    (videos / "broken.csv").write_text("path,label,end\na0.mp4,a,\nbroken.mp4,b,\nb1.mov,b,1.5\n")
    return SimpleNamespace(root=root, lvt=lvt, vision=vision, odd=odd, data=load_labelled_set(videos / "set.csv"))


def reference(model: Path, data) -> tuple[np.ndarray, np.ndarray]:
    """The vision tokens (n, T, N, D) and embeddings (n, D) of each item, straight from the model."""
    embedder, processor = load_video_embedder(model, device="cpu")
    vision = getattr(embedder.video_model, "vision_model", embedder.video_model)
    tokens, embeds = [], []
    for item in data.items:
        video = read_video(item.path, num_frames=4, start_time=item.start, end_time=item.end)
        pixels = torch.from_numpy(processor(video, return_tensors="np")["pixel_values_videos"])
        with torch.no_grad():
            tokens.append(vision(pixels).last_hidden_state.reshape(4, 16, -1).numpy())
        embed = embedder(pixels)[0][0]  # the model's embedding; the cache holds it L2-normalised, as stores do
        embeds.append(embed / np.linalg.norm(embed))
    return np.stack(tokens), np.stack(embeds)


@pytest.mark.parametrize("kind", ["lvt", "vision"])
def test_token_features_equal_the_model(clips, tmp_path, kind):
    model = getattr(clips, kind)
    feats = extract_features(clips.data, model, tmp_path, cache="tokens", workers=0, batch_size=2, progress=False)
    tokens, embeds = reference(model, clips.data)
    assert feats.tokens.dtype == np.float16 and feats.tokens.shape == (5, 4, 16, 32)
    assert isinstance(feats.tokens, np.memmap) and isinstance(feats.embeddings, np.memmap)
    np.testing.assert_allclose(feats.tokens.astype(np.float32), tokens, rtol=1e-3, atol=1e-3)
    assert np.abs(tokens).max() > 1  # the fp16 tolerance is tested on values of a real size
    np.testing.assert_allclose(feats.embeddings, embeds, atol=1e-5)
    if kind == "vision":  # a vision encoder's embedding is the mean of its tokens
        np.testing.assert_allclose(embeds, tokens.mean((1, 2)) / np.linalg.norm(tokens.mean((1, 2)), axis=1)[:, None],
                                   atol=1e-5)  # fmt: skip
    assert (feats.pool, feats.grid, feats.num_frames, feats.size, feats.cache) == (1, (4, 4, 4), 4, (32, 32), "tokens")
    assert feats.paths == [item.path for item in clips.data.items] and feats.failures == []
    assert feats.decoded_clips == 5
    assert feats.class_names == ["a", "b", "c"] and feats.multi_label
    np.testing.assert_array_equal(feats.targets, [[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 1, 0], [0, 0, 1]])
    manifest = json.loads((Path(feats.cache_path) / "manifest.json").read_text())
    assert manifest["model_id"] == str(model) and manifest["grid"] == [4, 4, 4] and manifest["dim"] == 32
    assert (manifest["cache"], manifest["pool"], manifest["dtype"], manifest["num_frames"]) == (
        "tokens",
        1,
        "float16",
        4,
    )
    assert [(Path(k["path"]).name, k["start"], k["end"]) for k in manifest["items"]] == [
        ("a0.mp4", None, None), ("a1.mkv", 0.5, 2.0), ("b0.mp4", 1.0, None), ("b1.mov", None, 1.5), ("b0.mp4", 0.0, 1.0)
    ]  # fmt: skip
    assert manifest["items"][0]["size"] == os.path.getsize(clips.data.items[0].path)
    # the spans matter: the same video over another span gives other tokens
    assert np.abs(tokens[2] - tokens[4]).max() > 1e-2


def test_pooled_caches_equal_pooled_tokens(clips, tmp_path):
    full = extract_features(clips.data, clips.lvt, tmp_path, cache="tokens", workers=0, progress=False)
    grid = full.tokens.astype(np.float32).reshape(5, 4, 4, 4, 32)
    for cache, pool in (("pooled2", 2), ("pooled4", 4)):
        feats = extract_features(clips.data, clips.lvt, tmp_path, cache=cache, workers=0, progress=False)
        side = 4 // pool
        expected = grid.reshape(5, 4, side, pool, side, pool, 32).mean((3, 5)).reshape(5, 4, side * side, 32)
        assert feats.tokens.shape == expected.shape and feats.grid == (4, side, side) and feats.pool == pool
        np.testing.assert_allclose(feats.tokens.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(feats.embeddings, full.embeddings)
    # pooled 2x2, then the top-left token by hand
    feats = extract_features(clips.data, clips.lvt, tmp_path, cache="pooled2", workers=0, progress=False)
    np.testing.assert_allclose(feats.tokens[1, 2, 0], grid[1, 2, :2, :2].mean((0, 1)), rtol=2e-3, atol=2e-3)
    only = extract_features(clips.data, clips.lvt, tmp_path, cache="embedding", workers=0, progress=False)
    assert only.tokens is None and (only.pool, only.grid) == (0, (0, 0, 0))
    np.testing.assert_array_equal(only.embeddings, full.embeddings)
    assert not (Path(only.cache_path) / "tokens.npy").exists()
    assert len({full.cache_path, feats.cache_path, only.cache_path}) == 3


def test_cache_is_reused_without_decoding(clips, tmp_path, monkeypatch):
    first = extract_features(clips.data, clips.lvt, tmp_path, cache="pooled2", workers=0, progress=False)
    assert first.decoded_clips == 5
    tokens, embeds = np.array(first.tokens), np.array(first.embeddings)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(features, "load_video_embedder", no_model)
    again = extract_features(clips.data, clips.lvt, tmp_path, cache="pooled2", workers=0, progress=False)
    assert again.decoded_clips == 0 and again.cache_path == first.cache_path
    np.testing.assert_array_equal(again.tokens, tokens)
    np.testing.assert_array_equal(again.embeddings, embeds)
    # the parts of a split are other clip lists: their rows are copied from the folder above, not computed
    train, val = clips.data.split(0.4, seed=0)
    for part in (train, val):
        feats = extract_features(part, clips.lvt, tmp_path, cache="pooled2", workers=0, progress=False)
        assert feats.decoded_clips == 0 and feats.cache_path != first.cache_path
        rows = [clips.data.items.index(item) for item in part.items]
        np.testing.assert_array_equal(feats.tokens, tokens[rows])
        np.testing.assert_array_equal(feats.embeddings, embeds[rows])
        np.testing.assert_array_equal(feats.targets, first.targets[rows])
    # other settings are another cache: the model is needed again
    with pytest.raises(AssertionError, match="the model was loaded"):
        extract_features(clips.data, clips.lvt, tmp_path, cache="pooled2", num_frames=2, workers=0, progress=False)


def test_interrupted_extraction_resumes(clips, tmp_path, monkeypatch):
    calls = []
    real = features.clip_features

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "clip_features", failing)
    with pytest.raises(KeyboardInterrupt):
        extract_features(clips.data, clips.vision, tmp_path, cache="tokens", workers=0, batch_size=1, progress=False)
    monkeypatch.setattr(features, "clip_features", real)
    feats = extract_features(clips.data, clips.vision, tmp_path, cache="tokens", workers=0, batch_size=1,
                             progress=False)  # fmt: skip
    assert feats.decoded_clips == 3  # two rows were written before the interruption
    tokens, embeds = reference(clips.vision, clips.data)
    np.testing.assert_allclose(feats.tokens.astype(np.float32), tokens, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(feats.embeddings, embeds, atol=1e-5)


def test_decoding_workers_give_the_same_features(clips, tmp_path):
    threaded = extract_features(clips.data, clips.lvt, tmp_path / "t", cache="pooled2", workers=0, progress=False)
    spawned = extract_features(clips.data, clips.lvt, tmp_path / "p", cache="pooled2", workers=2, batch_size=3,
                               progress=False)  # fmt: skip
    assert spawned.decoded_clips == 5
    np.testing.assert_allclose(spawned.tokens.astype(np.float32), threaded.tokens.astype(np.float32), atol=2e-3)


def test_undecodable_videos_are_left_out(clips, tmp_path, capsys):
    data = load_labelled_set(Path(clips.data.items[0].path).parent / "broken.csv")
    feats = extract_features(data, clips.lvt, tmp_path, cache="pooled4", workers=0, progress="lines")
    assert [Path(p).name for p in feats.paths] == ["a0.mp4", "b1.mov"]
    assert [Path(p).name for p, _ in feats.failures] == ["broken.mp4"] and feats.failures[0][1]
    assert "failed:" in capsys.readouterr().err
    assert feats.tokens.shape == (2, 4, 1, 32) and feats.embeddings.shape == (2, 32)
    np.testing.assert_array_equal(feats.targets, [[1, 0], [0, 1]])
    full = extract_features(clips.data, clips.lvt, tmp_path, cache="pooled4", workers=0, progress=False)
    np.testing.assert_array_equal(feats.embeddings, full.embeddings[[0, 3]])
    np.testing.assert_array_equal(feats.tokens, full.tokens[[0, 3]])
    again = extract_features(data, clips.lvt, tmp_path, cache="pooled4", workers=0, progress=False)
    assert again.decoded_clips == 0 and again.failures == feats.failures
    np.testing.assert_array_equal(again.tokens, feats.tokens)


def test_feature_settings_errors(clips, tmp_path):
    for kwargs, message in (
        ({"cache": "pooled3"}, "cache='pooled3'; use one of tokens, pooled2, pooled4, embedding"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"num_frames": True}, "num_frames must be a positive integer"),
        ({"workers": -1}, "workers must be a non-negative integer"),
    ):
        with pytest.raises(FeatureSettingsError, match=re.escape(message)):
            extract_features(clips.data, clips.lvt, tmp_path, progress=False, **kwargs)
    with pytest.raises(FeatureSettingsError, match="2x2 pooling does not divide the 3x3 patch grid of 24x24 frames"):
        extract_features(clips.data, clips.odd, tmp_path, cache="pooled2", workers=0, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # nothing was allocated
    feats = extract_features(clips.data, clips.odd, tmp_path, cache="tokens", workers=0, progress=False)
    assert feats.tokens.shape == (5, 4, 9, 32) and feats.size == (24, 24)


def test_damaged_cache_folder(clips, tmp_path):
    feats = extract_features(clips.data, clips.lvt, tmp_path, cache="embedding", workers=0, progress=False)
    manifest = Path(feats.cache_path) / "manifest.json"
    good = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({k: v for k, v in good.items() if k != "grid"}))
    with pytest.raises(FeatureCacheError, match="is damaged \\(KeyError: 'grid'\\); delete it"):
        extract_features(clips.data, clips.lvt, tmp_path, cache="embedding", workers=0, progress=False)
    (Path(feats.cache_path) / "embeddings.npy").write_bytes(b"garbage")
    manifest.write_text(json.dumps(good))
    with pytest.raises(FeatureCacheError, match="is damaged \\(ValueError: .*delete it"):
        extract_features(clips.data, clips.lvt, tmp_path, cache="embedding", workers=0, progress=False)
    manifest.write_text("{not json")
    with pytest.raises(FeatureCacheError, match="unreadable .*delete"):
        extract_features(clips.data, clips.lvt, tmp_path, cache="embedding", workers=0, progress=False)
    manifest.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(FeatureCacheError, match="does not hold probe features"):
        extract_features(clips.data, clips.lvt, tmp_path, cache="embedding", workers=0, progress=False)
    manifest.unlink()  # a folder without a manifest is an unfinished creation: made again
    again = extract_features(clips.data, clips.lvt, tmp_path, cache="embedding", workers=0, progress=False)
    assert again.decoded_clips == 5


def test_one_extraction_at_a_time_per_cache_folder(clips, tmp_path):
    import fcntl

    tmp_path.joinpath(".lock").touch()
    with open(tmp_path / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(FeatureCacheError, match="another process is extracting features into .*; wait for it"):
            extract_features(clips.data, clips.lvt, tmp_path, cache="embedding", workers=0, progress=False)
    assert extract_features(clips.data, clips.lvt, tmp_path, cache="embedding", workers=0, progress=False).paths
