"""Exported towers (ONNX through onnxruntime, torch.export through torch.export.load) against the golden fixtures."""

import json
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from _checkpoints import save_tiny_clip_model
from test_golden import clip_config, fixture, text_input, video_input, vision_config

from videoprism import (
    VideoPrismClipModel,
    VideoPrismProcessor,
    VideoPrismVideoModel,
    VideoPrismVisionModel,
    cli,
)
from videoprism.export import (
    MANIFEST_NAME,
    ExportDependencyError,
    ExportDirectoryNotEmptyError,
    ExportSettingsError,
    TowerNotInCheckpointError,
    UnknownExportFormatError,
    UnknownTowerError,
    export_model,
)

FORMATS = ("onnx", "torch-export")
SPM = "tests/fixtures/tokenizer/spm_t5layout.model"
EMBED_ATOL, TOKEN_ATOL = 1e-5, 2e-5


def load_tower(folder, tower):
    """A callable running the exported `tower` of `folder` on numpy inputs, returning {output name: numpy}."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    entry = next(f for f in manifest["files"] if f["tower"] == tower)
    names = [i["name"] for i in entry["inputs"]]
    path = folder / entry["file"]
    if manifest["format"] == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == names
        outputs = [o.name for o in session.get_outputs()]
        return lambda *arrays: dict(zip(outputs, session.run(None, dict(zip(names, arrays, strict=True))), strict=True))
    module = torch.export.load(str(path)).module()

    def run(*arrays):
        with torch.no_grad():
            out = module(*(torch.from_numpy(a) for a in arrays))
        return {k: v.float().numpy() for k, v in out.items()}

    return run


def video_batch(io, cases_rows):
    """Videos (B, T, 3, H, W) and int64 frame masks stacked from (case, rows) pairs (no mask: all frames real)."""
    videos, masks = [], []
    for case, rows in cases_rows:
        video, mask = video_input(io, case)
        videos.append(video[rows].numpy())
        masks.append(np.ones(video.shape[:2], np.int64)[rows] if mask is None else mask[rows].long().numpy())
    return np.concatenate(videos), np.concatenate(masks)


def expected(io, cases_rows, key):
    return np.concatenate([io[f"{case}/output/{key}"][rows] for case, rows in cases_rows])


# Batch 3 and batch 1 from one export: clips without padding and with padded frames mixed.
BATCHES = ([("native", slice(0, 2)), ("frame_paddings", slice(0, 1))], [("frame_paddings", slice(1, 2))])


@pytest.fixture(scope="module")
def encoder():
    meta, io, _, params = fixture("video_encoder_small")
    return VideoPrismVisionModel.from_pretrained(params, config=vision_config(meta["config"])), io


@pytest.fixture(scope="module")
def lvt():
    meta, io, _, params = fixture("lvt_small")
    return VideoPrismClipModel.from_pretrained(params, config=clip_config(meta["config"])), io


@pytest.fixture(scope="module", params=FORMATS)
def encoder_export(request, encoder, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"encoder-{request.param}")
    export_model(encoder[0], folder, format=request.param)
    return folder


@pytest.fixture(scope="module", params=FORMATS)
def lvt_export(request, lvt, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"lvt-{request.param}")
    export_model(lvt[0], folder, format=request.param, text_length=8)
    return folder


def test_video_only_encoder_tokens(encoder, encoder_export):
    model, io = encoder
    manifest = json.loads((encoder_export / MANIFEST_NAME).read_text())
    assert manifest["towers"] == ["vision"] and manifest["model_class"] == "VideoPrismVisionModel"
    assert model.attn_implementation == "auto"  # the export traced "eager" and put the model's choice back
    run = load_tower(encoder_export, "vision")
    for batch in BATCHES:
        tokens = run(*video_batch(io, batch))["last_hidden_state"]
        np.testing.assert_allclose(tokens, expected(io, batch, "embeddings"), rtol=0, atol=TOKEN_ATOL)


def test_lvt_vision_tokens(lvt, lvt_export):
    _, io = lvt
    run = load_tower(lvt_export, "vision")
    for batch in BATCHES:
        tokens = run(*video_batch(io, batch))["last_hidden_state"]
        np.testing.assert_allclose(tokens, expected(io, batch, "spatiotemporal_features"), rtol=0, atol=TOKEN_ATOL)


def test_lvt_video_tower(lvt, lvt_export):
    _, io = lvt
    run = load_tower(lvt_export, "video")
    for batch in BATCHES:
        out = run(*video_batch(io, batch))
        assert list(out) == ["video_embeds", "frame_embeds"]
        np.testing.assert_allclose(
            out["video_embeds"], expected(io, batch, "video_embeddings"), rtol=0, atol=EMBED_ATOL
        )
        np.testing.assert_allclose(
            out["frame_embeds"], expected(io, batch, "frame_embeddings"), rtol=0, atol=EMBED_ATOL
        )


def test_lvt_text_tower(lvt, lvt_export):
    _, io = lvt
    run = load_tower(lvt_export, "text")
    for case, rows in (("native", slice(0, 3)), ("frame_paddings", slice(1, 2))):
        ids, mask = text_input(io, case)
        out = run(ids[rows].numpy(), mask[rows].numpy())
        np.testing.assert_allclose(
            out["text_embeds"], io[f"{case}/output/text_embeddings"][rows], rtol=0, atol=EMBED_ATOL
        )


def test_lvt_manifest(lvt, lvt_export):
    manifest = json.loads((lvt_export / MANIFEST_NAME).read_text())
    fmt = manifest["format"]
    suffix = ".onnx" if fmt == "onnx" else ".pt2"
    assert [(f["tower"], f["file"]) for f in manifest["files"]] == [
        (t, t + suffix) for t in ("vision", "video", "text")
    ]
    assert (manifest["num_frames"], manifest["image_size"], manifest["text_length"]) == (4, 32, 8)
    assert manifest["opset"] == (18 if fmt == "onnx" else None)
    video = manifest["files"][1]
    assert video["inputs"][0] == {
        "name": "pixel_values_videos",
        "shape": ["batch", 4, 3, 32, 32],
        "dtype": "float32",
        "meaning": video["inputs"][0]["meaning"],
    }
    assert [(o["name"], o["shape"]) for o in video["outputs"]] == [
        ("video_embeds", ["batch", 32]),
        ("frame_embeds", ["batch", 4, 32]),
    ]
    assert manifest["files"][0]["outputs"][0]["shape"] == ["batch", 64, 32]
    assert manifest["files"][2]["inputs"][1]["shape"] == ["batch", 8]
    assert "video_preprocessor_config.json" in manifest["processor_files"]
    settings = json.loads((lvt_export / "video_preprocessor_config.json").read_text())
    assert settings["num_frames"] == 4 and settings["size"] == {"height": 32, "width": 32}
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(lvt_export / "video.onnx"))
        assert graph.opset_import[0].version == 18
        assert [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim][:1] == ["batch"]
        ops = {node.op_type for node in graph.graph.node}
        assert "Tanh" in ops and "Softmax" in ops  # the soft cap and the reference softmax, no fused attention
        assert "Attention" not in ops and "MultiHeadAttention" not in ops


@pytest.mark.parametrize("fmt", FORMATS)
def test_frames_and_size_fixed_at_export(encoder, fmt, tmp_path):
    """Another frame count and size: the resized position embeddings are baked into the graph (6 frames, 48x48)."""
    model, io = encoder
    manifest = export_model(model, tmp_path, format=fmt, num_frames=6, size=48)
    assert (manifest["num_frames"], manifest["image_size"]) == (6, 48)
    assert "resized" in manifest["fixed_at_export"][0]
    run = load_tower(tmp_path, "vision")
    video, mask = video_batch(io, [("interp_up", slice(0, 1))])
    tokens = run(np.concatenate([video] * 3), np.concatenate([mask] * 3))["last_hidden_state"]
    np.testing.assert_allclose(tokens, np.concatenate([io["interp_up/output/embeddings"]] * 3), rtol=0, atol=TOKEN_ATOL)
    if fmt == "onnx":  # a clip of another length is refused by the runtime, not silently mis-embedded
        with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="frame_mask|pixel_values"):
            run(video[:, :4], mask[:, :4])


@pytest.mark.parametrize("fmt, dtype", [("onnx", "float16"), ("torch-export", "bfloat16")])
def test_low_precision_video_tower(lvt, fmt, dtype, tmp_path):
    """The video tower alone, in half precision: within cosine 0.999 of the original's fp32 embeddings; the user's
    fp32 model is left as it was."""
    model, io = lvt
    manifest = export_model(model, tmp_path, format=fmt, tower="video", dtype=dtype)
    assert manifest["towers"] == ["video"] and manifest["num_frames"] == 4 and manifest["dtype"] == dtype
    assert model.dtype == torch.float32
    batch = BATCHES[0]
    out = load_tower(tmp_path, "video")(*video_batch(io, batch))["video_embeds"].astype(np.float32)
    want = expected(io, batch, "video_embeddings")
    cosine = (out * want).sum(-1) / np.linalg.norm(out, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cosine.min() > 0.999 and np.abs(out - want).max() > 1e-6  # close, and really computed in low precision


def test_cli_export_is_self_contained(tmp_path, capsys):
    """A checkpoint folder with a tokenizer, exported by the CLI: the folder's processor feeds the graph directly."""
    source = save_tiny_clip_model(tmp_path / "model", spm_model=SPM)
    out = tmp_path / "export"
    assert cli.main(["export", str(source), str(out), "--format", "torch-export", "--num-frames", "2"]) == 0
    assert "wrote text.pt2 (text tower -> text_embeds)" in capsys.readouterr().out
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["towers"] == ["vision", "video", "text"] and manifest["tokenizer"] is True
    assert manifest["text_length"] == 64 and manifest["num_frames"] == 2
    assert {"spiece.model", "tokenizer_config.json"} <= set(manifest["processor_files"])

    processor = VideoPrismProcessor.from_pretrained(out)
    texts = ["a dog catching a frisbee", "cooking"]
    videos = [np.random.default_rng(i).integers(0, 256, (5, 40, 48, 3), dtype=np.uint8) for i in range(3)]
    inputs = processor(text=texts, videos=videos, return_tensors="np")
    assert inputs["pixel_values_videos"].shape == (3, 2, 3, 32, 32)
    model = VideoPrismClipModel.from_pretrained(source)
    with torch.no_grad():
        pixels = torch.from_numpy(inputs["pixel_values_videos"])
        want_video = model.video_model(pixels, interpolate_pos_encoding=True).pooler_output.numpy()
        want_text = model.text_model(torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"]))
    frame_mask = np.ones((3, 2), np.int64)
    got = load_tower(out, "video")(inputs["pixel_values_videos"], frame_mask)["video_embeds"]
    np.testing.assert_allclose(got, want_video, rtol=0, atol=EMBED_ATOL)
    got = load_tower(out, "text")(inputs["input_ids"], inputs["attention_mask"])["text_embeds"]
    np.testing.assert_allclose(got, want_text.pooler_output.numpy(), rtol=0, atol=EMBED_ATOL)


def test_text_tower_of_a_video_only_checkpoint(encoder, tmp_path):
    with pytest.raises(TowerNotInCheckpointError, match="no text tower.*video-only.*--tower vision"):
        export_model(encoder[0], tmp_path, tower="text")
    video_model = VideoPrismVideoModel(encoder[0].config.copy(num_auxiliary_layers=0))
    with pytest.raises(TowerNotInCheckpointError, match="no text tower"):
        export_model(video_model, tmp_path / "video", tower="text", format="torch-export")
    assert not any(tmp_path.iterdir())


def test_settings_are_checked_before_anything_is_written(encoder, tmp_path):
    model = encoder[0]
    with pytest.raises(UnknownExportFormatError, match="'tflite'.*onnx, torch-export"):
        export_model(model, tmp_path, format="tflite")
    with pytest.raises(UnknownTowerError, match="'audio'"):
        export_model(model, tmp_path, tower="audio")
    with pytest.raises(ExportSettingsError, match="opset must be an integer >= 17"):
        export_model(model, tmp_path, opset=16)
    with pytest.raises(ExportSettingsError, match="size 36 is not a multiple of the patch size 8; pick e.g. 32"):
        export_model(model, tmp_path, size=36)
    with pytest.raises(ExportSettingsError, match="num_frames must be a positive integer"):
        export_model(model, tmp_path, num_frames=0)
    with pytest.raises(ExportSettingsError, match="10000 frames of 4096x4096 pixels make a 3750.0 GiB example"):
        export_model(model, tmp_path, num_frames=10_000, size=4096)
    with pytest.raises(ExportSettingsError, match="unknown dtype 'int8'"):
        export_model(model, tmp_path, dtype="int8")
    assert not any(tmp_path.iterdir())


def test_text_length_beyond_the_tower(lvt, tmp_path):
    with pytest.raises(ExportSettingsError, match="text_length 65 exceeds the text tower's 64 positions"):
        export_model(lvt[0], tmp_path, tower="text", text_length=65)


def test_non_empty_out_dir_needs_overwrite(lvt, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ExportDirectoryNotEmptyError, match="is not empty.*--overwrite"):
        export_model(lvt[0], tmp_path, tower="text", format="torch-export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    export_model(lvt[0], tmp_path, tower="text", format="torch-export", text_length=8, overwrite=True)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"notes.txt", "text.pt2", MANIFEST_NAME} <= names and (tmp_path / "notes.txt").read_text() == "keep me"


def test_onnx_not_installed(encoder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` raise ImportError
    with pytest.raises(ExportDependencyError, match=r'needs onnxscript.*pip install "videoprism\[export\]"'):
        export_model(encoder[0], tmp_path)


def test_cli_errors_are_named(tmp_path, capsys):
    source = save_tiny_clip_model(tmp_path / "model")
    assert cli.main(["export", str(source), str(tmp_path / "a"), "--format", "tflite"]) != 0
    assert "unknown format 'tflite'; choose one of onnx, torch-export" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert cli.main(["export", str(source), str(tmp_path / "full")]) != 0
    assert "is not empty" in capsys.readouterr().err
