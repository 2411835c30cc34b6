"""Bad input, as a hostile or careless user gives it, through the command line and the Python API.

Every case asserts the exit code that `videoprism --help` documents (2 for usage, input and output errors, 1 only when
some videos failed, 130 on Ctrl-C, 141 when the reader of the output goes away) and that the message names the input
(the path, flag or config field) instead of showing a traceback. Classes of input: checkpoints, configs, flags, argv
encoding, labels and templates, videos, stores, output, filesystem. `docs/reliability.md` tabulates them.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from _checkpoints import save_tiny_clip_model
from _videos import make_audio, make_video

from videoprism import cli
from videoprism._text import printable
from videoprism.collection import expand_inputs
from videoprism.collection.decode_pool import one_thread_children
from videoprism.configuration import (
    VideoPrismConfig,
    VideoPrismTextConfig,
    VideoPrismVisionConfig,
    load_config_dict,
    read_config_file,
)
from videoprism.errors import ConfigError, TextInputError, WriteError
from videoprism.store import EmbeddingStore, open_store
from videoprism.video_io import read_video
from videoprism.zero_shot import build_zero_shot_classifier, checked_templates

SPM = Path(__file__).parent / "fixtures" / "tokenizer" / "spm_t5layout.model"
NASTY_NAME = "evil\n\x1b[31mred.mp4"  # a newline and a terminal colour escape


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """`videoprism ARGV` in this process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def run_subprocess(*args: str | bytes, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videoprism.cli", *args], capture_output=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("hostile")
    model = save_tiny_clip_model(root / "model", SPM)
    videos = root / "videos"
    videos.mkdir()
    make_video(videos / "a.mp4", num_frames=12, size=(32, 32))
    make_video(videos / NASTY_NAME, num_frames=12, size=(32, 32))
    (videos / "broken.mp4").write_bytes(b"not a video" * 50)
    store = root / "store"
    code = cli.main(["embed", str(videos), "--out", str(store), "--model", str(model), "--workers", "0", "--quiet"])
    assert code == cli.EXIT_PARTIAL  # broken.mp4 failed, the two others are stored
    return SimpleNamespace(root=root, model=model, videos=videos, store=store)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


def _relabel_first_float(src: Path, dst: Path, dtype: str) -> str:
    """Copies a safetensors file with the header's dtype of its first float32 tensor changed (same byte size)."""
    data = src.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    header[name]["dtype"] = dtype
    text = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])
    return name


@pytest.mark.parametrize("case", ["truncated_npz", "garbage_npz", "relabelled_int", "relabelled_size"])
def test_damaged_checkpoints(assets, tmp_path, capsys, case):
    if case.endswith("npz"):
        np.savez(tmp_path / "w.npz", **{"params/x": np.ones((64, 64), np.float32)})
        data = (tmp_path / "w.npz").read_bytes()
        source = tmp_path / "ckpt.npz"
        source.write_bytes(data[: len(data) // 2] if case == "truncated_npz" else b"PK\x03\x04" + data[100:])
        argv = ["info", str(source), "--config", "videoprism-base-f16r288"]
        named = str(source)
    else:
        source = tmp_path / "relabelled"
        source.mkdir()
        shutil.copy(assets.model / "config.json", source / "config.json")
        dtype = "I32" if case == "relabelled_int" else "F16"  # F16: the byte size no longer fits the shape
        _relabel_first_float(assets.model / "model.safetensors", source / "model.safetensors", dtype)
        argv = ["convert", str(source), str(tmp_path / "out")]
        named = str(source)
    code, _, err = run(argv, capsys)
    assert code == cli.EXIT_USAGE
    assert named in err
    assert ("integers" in err) if case == "relabelled_int" else ("not a readable" in err)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------------
# Configs


def _vision(**changes) -> dict:
    base = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, image_size=32, tubelet_size=[1, 8, 8])
    return {"model_type": "videoprism_vision_model", **base, **changes}


CONFIG_CASES = {
    "a_list": ([1, 2], "an array"),
    "null": (None, "null"),
    "a_string": ("videoprism", "a string"),
    "string_number": (_vision(hidden_size="32"), "hidden_size must be an integer"),
    "zero_heads": (_vision(num_attention_heads=0), "num_attention_heads must be positive"),
    "negative_layers": (_vision(num_temporal_layers=-1), "num_temporal_layers must not be negative"),
    "bool_size": (_vision(num_frames=True), "num_frames must be an integer"),
    "nan_eps": (_vision(layer_norm_eps=float("nan")), "layer_norm_eps must be a finite number"),
    "tubelet_time": (_vision(tubelet_size=[2, 8, 8]), "tubelet_size must be [1, P, P]"),
    "tubelet_scalar": (_vision(tubelet_size=8), "tubelet_size must be [1, P, P]"),
    "tubelet_strings": (_vision(tubelet_size=["1", "8", "8"]), "tubelet_size must be [1, P, P]"),
    "tubelet_zero": (_vision(tubelet_size=[1, 0, 0]), "tubelet_size must be [1, P, P]"),
    "heads_not_dividing": (_vision(num_attention_heads=3), "multiple of num_attention_heads"),
    "dropout_above_one": (_vision(hidden_dropout_prob=2.0), "hidden_dropout_prob must be between 0 and 1"),
    "text_vocab_string": (
        {"model_type": "videoprism", "vision_config": _vision(), "text_config": {"hidden_size": 32, "vocab_size": "1"}},
        "text_config: vocab_size must be an integer",
    ),
    "vision_config_list": ({"model_type": "videoprism", "vision_config": [1]}, "vision_config must be an object"),
    "unknown_model_type": ({"model_type": "bert"}, "model_type is 'bert'"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_malformed_config_json(assets, tmp_path, capsys, case):
    content, message = CONFIG_CASES[case]
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(assets.model / "model.safetensors", folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(content))
    code, _, err = run(["info", str(folder)], capsys)
    assert code == cli.EXIT_USAGE
    assert str(folder / "config.json") in err and message in err
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as info:  # the same through the API
        read_config_file(folder / "config.json")
    assert str(folder / "config.json") in str(info.value)
    # --config FILE takes the same checks
    code, _, err = run(
        ["info", str(assets.model / "model.safetensors"), "--config", str(folder / "config.json")], capsys
    )
    assert code == cli.EXIT_USAGE and message in err


def test_config_json_not_json(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xff\xfe{not json")
    with pytest.raises(ConfigError, match="not valid UTF-8 JSON") as info:
        read_config_file(path)
    assert str(path) in str(info.value)
    code, _, err = run(["info", "videoprism-base-f16r288", "--config", str(path)], capsys)
    assert code == cli.EXIT_USAGE and str(path) in err


@pytest.mark.parametrize(
    "build",
    [
        lambda: VideoPrismVisionConfig(num_attention_heads=0),
        lambda: VideoPrismVisionConfig(hidden_size="768"),
        lambda: VideoPrismTextConfig(num_hidden_layers=1.5),
        lambda: VideoPrismConfig(text_config={"max_position_embeddings": 0}),
        lambda: VideoPrismVisionConfig().copy(image_size=-288),
        lambda: load_config_dict(["videoprism"]),
    ],
)
def test_config_api_names_the_field(build):
    with pytest.raises(ConfigError) as info:
        build()
    assert isinstance(info.value, ValueError)
    names = ("num_attention_heads", "hidden_size", "num_hidden_layers", "max_position_embeddings", "image_size")
    assert any(name in str(info.value) for name in names) or "JSON object" in str(info.value)


def test_valid_configs_still_load():
    config = VideoPrismVisionConfig(image_size=[64, 64], tubelet_size=(1, 8, 8), hidden_size=32, num_attention_heads=2)
    assert config.image_size == 64 and config.tubelet_size == [1, 8, 8]
    assert (
        load_config_dict(json.loads(json.dumps(VideoPrismConfig().to_dict()))).to_dict() == VideoPrismConfig().to_dict()
    )


# ----------------------------------------------------------------------------------------------------------------
# Flags


DEVICES = ["banana", "meta", "cuda:99", "cpu:x"] + ([] if torch.cuda.is_available() else ["cuda"])


@pytest.mark.parametrize("device", DEVICES)
def test_bad_device(assets, tmp_path, capsys, device):
    out = tmp_path / "s"
    code, _, err = run(["embed", str(assets.videos / "a.mp4"), "--out", str(out), "--model", str(assets.model),
                        "--device", device], capsys)  # fmt: skip
    assert code == cli.EXIT_USAGE and f"--device {device!r}" in err
    assert not out.exists()
    code, _, err = run(
        ["search", str(assets.store), "--video", str(assets.videos / "a.mp4"), "--device", device], capsys
    )
    assert code == cli.EXIT_USAGE and f"--device {device!r}" in err


def test_workers_capped(assets, capsys):
    # Everything is stored already: the run starts no worker, but the flag is still checked and capped.
    code, _, err = run(["embed", str(assets.videos / "a.mp4"), "--out", str(assets.store), "--model", str(assets.model),
                        "--workers", "100000"], capsys)  # fmt: skip
    assert code == cli.EXIT_OK
    assert f"--workers 100000 is more than the {cli.MAX_WORKERS} CPU cores; using {cli.MAX_WORKERS}" in err
    assert cli._workers(cli.MAX_WORKERS) == cli.MAX_WORKERS and cli._workers(None) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["embed", "x.mp4", "--out", "s", "--workers", "-1"],
        ["embed", "x.mp4", "--out", "s", "--workers", "\u00b2"],  # a superscript two: isdigit(), yet int() fails
        ["embed", "x.mp4", "--out", "s", "--batch-size", "0"],
        ["embed", "x.mp4", "--out", "s", "--window", "nan"],
        ["embed", "x.mp4", "--out", "s", "--dtype", "float8"],
        ["search", "s", "q", "-k", "1e9"],
    ],
)
def test_bad_numbers_are_usage_errors(capsys, argv):
    code, _, err = run(argv, capsys)
    assert code == cli.EXIT_USAGE and "error:" in err


# ----------------------------------------------------------------------------------------------------------------
# Argv encoding: bytes that are not UTF-8 arrive as lone surrogates (surrogateescape)


def test_undecodable_argv_through_a_real_process(assets, tmp_path):
    bad = os.fsencode(str(tmp_path)) + b"/clip\xff\n.mp4"
    result = run_subprocess("embed", bad, "--out", str(tmp_path / "s"), "--model", str(assets.model))
    assert result.returncode == cli.EXIT_USAGE
    err = result.stderr.decode()
    assert "Traceback" not in err and "clip\\xff\\n.mp4" in err
    result = run_subprocess("classify", str(assets.videos / "a.mp4"), "--labels", b"dog,ca\xfft", "--model",
                            str(assets.model))  # fmt: skip
    assert result.returncode == cli.EXIT_USAGE
    assert "label ca\\xfft is not valid UTF-8" in result.stderr.decode()


@pytest.mark.parametrize(
    "argv_tail",
    [
        ["search", "STORE", "a dog\udcff"],
        ["classify", "VIDEO", "--labels", "dog,cat\udce9", "--model", "MODEL"],
        ["classify", "VIDEO", "--labels", "dog,cat", "--templates", "a video of {}\udc80", "--model", "MODEL"],
        ["classify", "VIDEO", "--labels", "dog,c\x1bat", "--model", "MODEL"],
    ],
)
def test_lone_surrogates_and_control_characters(assets, capsys, argv_tail):
    argv = [{"STORE": str(assets.store), "VIDEO": str(assets.videos / "a.mp4"), "MODEL": str(assets.model)}.get(a, a)
            for a in argv_tail]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == cli.EXIT_USAGE
    assert ("not valid UTF-8" in err or "control characters" in err) and "\\x" in err


def test_surrogates_through_the_api(assets):
    from videoprism.collection import search_text

    with pytest.raises(TextInputError, match=r"query = a dog\\xff is not valid UTF-8"):
        search_text(assets.store, "a dog\udcff", device="cpu")
    with pytest.raises(TextInputError, match=r"labels\[1\]"):
        build_zero_shot_classifier(None, None, ["dog", "cat\udcff"])


# ----------------------------------------------------------------------------------------------------------------
# Labels and templates


@pytest.mark.parametrize("template", ["{} {}", "a video", "a {x} of {}", "a video of {", "{0} and {1}"])
def test_templates_need_exactly_one_placeholder(assets, capsys, template):
    code, _, err = run(["classify", str(assets.videos / "a.mp4"), "--labels", "dog,cat", "--templates", template,
                        "--model", str(assets.model)], capsys)  # fmt: skip
    assert code == cli.EXIT_USAGE and f"--templates {template!r}" in err
    with pytest.raises(TextInputError, match="templates"):
        checked_templates(template)


def test_template_placeholders_that_work():
    assert checked_templates("a video of {}.") == ["a video of {}."]
    assert checked_templates("{{braces}} around {}") == ["{{braces}} around {}"]
    assert len(checked_templates("ensemble")) > 1


@pytest.mark.parametrize(
    "content", [b"\x00\x01\x02\xff\xfe\x89PNG", b"dog\ncat\x00\n", "d\u00f6g\ncat\n".encode("latin-1")]
)
def test_binary_labels_file(assets, tmp_path, capsys, content):
    path = tmp_path / "labels.bin"
    path.write_bytes(content)
    code, _, err = run(["classify", str(assets.videos / "a.mp4"), "--labels-file", str(path), "--model",
                        str(assets.model)], capsys)  # fmt: skip
    assert code == cli.EXIT_USAGE and f"--labels-file {path}" in err


# ----------------------------------------------------------------------------------------------------------------
# Videos


def test_avi_with_zero_size_chunks_is_not_called_truncated(tmp_path, recwarn):
    path = tmp_path / "gaps.avi"  # a timestamp gap makes the AVI muxer write zero-size chunks (dropped frames)
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        for i, pts in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 12]):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")
            frame.pts = pts
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 13  # the header counts the empty chunks as frames
    video = read_video(path, num_frames=4)
    assert not [w for w in recwarn.list if "truncated" in str(w.message)]
    assert video.num_frames_total == 10 and video.duration == pytest.approx(1.3)


def test_truncated_avi_still_warns(tmp_path):
    data = make_video(tmp_path / "full.avi", num_frames=90, gop=15, codec="mpeg4", size=(32, 32)).read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: int(len(data) * 0.6)])
    with pytest.warns(UserWarning, match="header lists 90 frames"):
        video = read_video(tmp_path / "cut.avi", num_frames=4)
    assert video.num_frames_total < 90


def test_mpeg_ps_duration_covers_its_last_frame(tmp_path):
    full = make_video(tmp_path / "full.mpg", num_frames=100, fps=25, size=(64, 48), codec="mpeg2video",
                      container="mpeg", bframes=2, gop=12).read_bytes()  # fmt: skip
    packs = [i for i in range(len(full) - 3) if full[i : i + 4] == b"\x00\x00\x01\xba"]
    path = tmp_path / "joined_late.mpg"  # a program stream that starts inside a GOP: timestamps cannot index frames
    path.write_bytes(full[packs[3] :])
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        declared = float(stream.duration * stream.time_base)
        packets = sum(1 for p in container.demux(stream) if p.size)
    video = read_video(path, num_frames=4)
    assert declared < packets / 25  # the container's bitrate estimate falls short of its frames
    assert video.duration == pytest.approx(packets / 25)


def test_folder_scan_takes_decodable_video_formats_and_reports_the_rest(tmp_path):
    make_video(tmp_path / "anim.apng", num_frames=6, size=(32, 32), codec="apng", container="apng", pix_fmt="rgb24",
               gop=None)  # fmt: skip
    make_video(tmp_path / "clip.nut", num_frames=6, size=(32, 32), codec="mpeg4", container="nut")
    make_audio(tmp_path / "song.m4a")
    (tmp_path / "still.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "notes.txt").write_text("text")
    skipped: list[str] = []
    found = expand_inputs(tmp_path, skipped)
    assert [Path(p).name for p in found] == ["anim.apng", "clip.nut"]
    assert sorted(Path(p).name for p in skipped) == ["song.m4a", "still.png"]
    assert read_video(found[0], num_frames=3).frames.shape == (3, 32, 32, 3)
    assert {".fli", ".flc", ".apng", ".nut", ".ivf", ".dv"} <= set(
        __import__("videoprism.collection.inputs", fromlist=["VIDEO_EXTENSIONS"]).VIDEO_EXTENSIONS
    )


def test_warnings_once_per_video_without_the_path_twice(assets, tmp_path, capsys):
    data = make_video(tmp_path / "full.mkv", num_frames=90, gop=15, size=(32, 32)).read_bytes()
    cut = tmp_path / "in" / "cut.mkv"
    cut.parent.mkdir()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    code, _, err = run(["embed", str(cut.parent), "--out", str(tmp_path / "s"), "--model", str(assets.model),
                        "--workers", "0", "--window", "0.5"], capsys)  # fmt: skip
    assert code == cli.EXIT_OK
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].count(str(cut)) == 1 and "truncated" in lines[0]
    rows = open_store(tmp_path / "s").metadata
    assert rows.num_rows > 3  # several windows, each of which read the truncated file


# ----------------------------------------------------------------------------------------------------------------
# Output


def test_each_failure_printed_once(assets, tmp_path, capsys):
    for extra in ([], ["--quiet"]):
        out = tmp_path / f"s{len(extra)}"
        code, _, err = run(["embed", str(assets.videos / "broken.mp4"), str(assets.videos / "a.mp4"), "--out",
                            str(out), "--model", str(assets.model), "--workers", "0", *extra], capsys)  # fmt: skip
        assert code == cli.EXIT_PARTIAL
        assert err.count(f"failed: {assets.videos / 'broken.mp4'}") == 1, err


def test_paths_with_control_characters_are_escaped(assets, capsys):
    code, out, err = run(["search", str(assets.store), "--video", str(assets.videos / "a.mp4"), "-k", "5"], capsys)
    assert code == cli.EXIT_OK
    assert "\x1b" not in out and printable(NASTY_NAME) in out and "evil\\n\\x1b[31mred.mp4" in out
    code, out, _ = run(["search", str(assets.store), "--video", str(assets.videos / "a.mp4"), "--json"], capsys)
    assert NASTY_NAME in [Path(row["path"]).name for row in json.loads(out)]  # JSON escapes on its own


def test_printable():
    assert printable("plain name.mp4") == "plain name.mp4"
    assert printable("caf\u00e9 \u6f22\u5b57.mp4") == "caf\u00e9 \u6f22\u5b57.mp4"
    assert printable("a\nb\tc\x1b[2J\x7f") == "a\\nb\\tc\\x1b[2J\\x7f"
    assert printable(os.fsdecode(b"x\xff.mp4")) == "x\\xff.mp4"
    assert printable(b"y\xfe") == "y\\xfe"
    assert printable("back\\slash\n") == "back\\\\slash\\n"  # unambiguous once anything is escaped


def test_scores_are_cosines_never_above_one(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(3000, 48))
    with EmbeddingStore.open(tmp_path / "s", model_id="m", dim=48) as store:
        store.write_batch([dict(path=f"/v/{i}.mp4", size=1, mtime_ns=1) for i in range(len(rows))], rows)
    reader = open_store(tmp_path / "s")
    stored = np.asarray(reader.embeddings, np.float32)
    assert np.abs(np.linalg.norm(stored, axis=1) - 1).max() > 1e-4  # fp16 rounding: norms are not exactly 1
    for kernel in ("numpy", "torch"):
        for block_rows in (7, 8192):
            scores, found = reader.topk(stored, 3, kernel=kernel, block_rows=block_rows)  # each row finds itself
            assert scores.max() <= 1.0 and scores.min() >= -1.0
            np.testing.assert_array_equal(found[:, 0], np.arange(len(rows)))
            np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-6)
            scores, _ = reader.topk(-stored[:50], 2, kernel=kernel, block_rows=block_rows)
            assert scores.min() >= -1.0


def test_broken_pipe_exits_quietly(assets):
    proc = subprocess.Popen([sys.executable, "-m", "videoprism.cli", "search", str(assets.store), "--video",
                             str(assets.videos / "a.mp4"), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()  # the reader is gone before anything is printed (`| head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == cli.EXIT_BROKEN_PIPE
    assert "Traceback" not in err and "Exception ignored" not in err


def test_ctrl_c_before_the_pipeline(assets, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("videoprism.collection.local.load_video_embedder", interrupted)
    code, _, err = run(["embed", str(assets.videos / "a.mp4"), "--out", str(tmp_path / "s"), "--model",
                        str(assets.model)], capsys)  # fmt: skip
    assert code == cli.EXIT_INTERRUPTED and "videoprism embed: interrupted" in err
    monkeypatch.setattr(cli, "build_parser", interrupted)  # Ctrl-C while the parser imports its defaults
    code, _, err = run(["search", "s", "q"], capsys)
    assert code == cli.EXIT_INTERRUPTED and "videoprism: interrupted" in err


def test_startup_imports_no_torch_before_main():
    # What runs before `main` can catch Ctrl-C must be quick: the package root and the CLI module import no torch.
    code = "import sys, videoprism.cli; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_decoding_workers_start_with_ctrl_c_ignored():
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under a runner started in background
    with one_thread_children():
        child = subprocess.run([sys.executable, "-c", "import signal; print(int(signal.getsignal(signal.SIGINT)))"],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
    assert child.stdout.strip() == str(int(signal.SIG_IGN))
    assert signal.getsignal(signal.SIGINT) is before  # restored here


# ----------------------------------------------------------------------------------------------------------------
# Stores and the filesystem


def test_disk_full_keeps_what_was_written(assets, tmp_path, capsys, monkeypatch):
    real_save = np.save
    calls = []

    def save(file, array, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # the first batch fits, the second hits a full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(file, array, *args, **kwargs)

    videos = tmp_path / "v"
    videos.mkdir()
    for i in range(2):
        shutil.copy(assets.videos / "a.mp4", videos / f"{i}.mp4")
    monkeypatch.setattr(np, "save", save)
    store = tmp_path / "s"
    code, _, err = run(["embed", str(videos), "--out", str(store), "--model", str(assets.model), "--workers", "0",
                        "--batch-size", "1"], capsys)  # fmt: skip
    monkeypatch.undo()
    assert code == cli.EXIT_USAGE
    assert "the disk is full" in err and str(store / "shards") in err
    reader = open_store(store)
    assert len(reader) == 1  # the batch written before the disk filled up is kept
    assert not [p for p in (store / "shards").iterdir() if p.name.startswith(".tmp")]
    code, _, _ = run(
        ["embed", str(videos), "--out", str(store), "--model", str(assets.model), "--workers", "0"], capsys
    )
    assert code == cli.EXIT_OK and len(open_store(store)) == 2  # a re-run resumes


@pytest.mark.parametrize("err_no", [errno.EROFS, errno.EACCES])
def test_read_only_store_folder(assets, tmp_path, capsys, monkeypatch, err_no):
    store = tmp_path / "ro"
    store.mkdir()
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if str(path).startswith(str(store)):
            raise OSError(err_no, os.strerror(err_no), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    code, _, err = run(["embed", str(assets.videos / "a.mp4"), "--out", str(store), "--model", str(assets.model),
                        "--workers", "0"], capsys)  # fmt: skip
    assert code == cli.EXIT_USAGE and f"cannot write {store}" in err and "read-only" in err
    with pytest.raises(WriteError):
        EmbeddingStore.open(store, model_id="m", dim=4)


def test_convert_onto_a_file_or_an_unwritable_folder(assets, tmp_path, capsys, monkeypatch):
    existing = tmp_path / "model.bin"
    existing.write_bytes(b"keep me")
    code, _, err = run(["convert", str(assets.model), str(existing)], capsys)
    assert code == cli.EXIT_USAGE and str(existing) in err and "not a folder" in err
    assert existing.read_bytes() == b"keep me"
    code, _, err = run(["convert", str(assets.model), str(existing / "sub")], capsys)  # a file in the way
    assert code == cli.EXIT_USAGE and str(existing / "sub") in err

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("videoprism.modeling.VideoPrismClipModel.save_pretrained", full)
    code, _, err = run(["convert", str(assets.model), str(tmp_path / "out")], capsys)
    assert code == cli.EXIT_USAGE and "the disk is full" in err and str(tmp_path / "out") in err
