"""Labelled sets for `videoprism probe` (folders, CSV, JSONL), their splits and shots, and the cached features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

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
    load_labelled_set,
)

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
