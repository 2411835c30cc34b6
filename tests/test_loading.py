"""Loading, saving, conversion, hub resolution (offline cache), dtypes and error messages."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import videoprism
from videoprism import _flax, _loading
from videoprism.errors import CheckpointError, CheckpointNotFoundError
from videoprism.modeling import MODEL_CLASSES

sys.path.insert(0, str(Path(__file__).parent))
from test_golden import FIXTURES, clip_config, fixture, vision_config  # noqa: E402

# The fixtures' pooler width (4 x 32) differs from their MLP width (96): saving them warns about transformers.
pytestmark = pytest.mark.filterwarnings("ignore:pooler width")

LVT_NPZ = FIXTURES / "lvt_small_params.npz"
VIDEO_NPZ = FIXTURES / "video_encoder_small_params.npz"


def lvt_config():
    return clip_config(fixture("lvt_small")[0]["config"])


def video_config():
    return vision_config(fixture("video_encoder_small")[0]["config"])


def clip_inputs():
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(2, 4, 3, 32, 32, generator=gen)
    ids = torch.randint(1, 100, (3, 6), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0
    return video, ids, mask


# ---------------------------------------------------------------------------------------------------------------
# The Flax mapping, checked structurally


def test_flax_mapping_uses_every_tensor_once_and_maps_key_bias():
    arrays = _flax.read_npz(LVT_NPZ)
    state = _flax.flax_to_state_dict(arrays)
    layer_counts = {k: v.shape[0] for k, v in arrays.items() if "/x_layers/" in k}
    expected = sum(layer_counts.values()) + sum(1 for k in arrays if "/x_layers/" not in k)
    assert len(state) == expected == 2 * 16 * 4 + 24 + 16 * 0  # 4 stacks x 2 layers x 16 tensors + 24 singles
    ours = videoprism.VideoPrismClipModel(lvt_config()).state_dict()
    assert set(state) == set(ours) - set(_loading.IGNORED_KEYS)
    stack = "params/auxiliary_encoder/transformers_stack/x_layers/self_attention/"
    for i in range(2):
        prefix = f"video_model.auxiliary_layers.{i}.attention."
        np.testing.assert_array_equal(state[prefix + "k_proj.bias"].numpy(), arrays[stack + "key/b"][i].reshape(-1))
        w = arrays[stack + "key/w"][i]  # (D, N, H), used as '...D,DNH->...NH'
        np.testing.assert_array_equal(state[prefix + "k_proj.weight"].numpy(), w.reshape(w.shape[0], -1).T)
        post = arrays[stack + "post/w"][i]  # (D, N, H), used as '...NH,DNH->...D'
        np.testing.assert_array_equal(state[prefix + "o_proj.weight"].numpy(), post.reshape(post.shape[0], -1))
    pooler = "params/contrastive_vision_pooler/pooling_attention/key/b"
    np.testing.assert_array_equal(state["video_model.head.k_proj.bias"].numpy(), arrays[pooler].reshape(-1))
    kernel = arrays["params/vision_encoder/patch_projection/linear/kernel"]  # rows (p, q, c)
    conv = state["video_model.vision_model.spatial_embeddings.patch_embeddings.projection.weight"]
    np.testing.assert_array_equal(conv[:, 2, 0, 1, 5].numpy(), kernel[(1 * 8 + 5) * 3 + 2])


def test_flax_mapping_rejects_unknown_and_misshaped_tensors():
    arrays = _flax.read_npz(VIDEO_NPZ)
    with pytest.raises(CheckpointError, match="does not know.*params/extra"):
        _flax.flax_to_state_dict({**arrays, "params/extra": np.zeros(3, np.float32)})
    bad = dict(arrays)
    bad["params/spatial_ln/scale"] = np.zeros((2, 2), np.float32)
    with pytest.raises(CheckpointError, match="spatial_ln/scale.*rank-1"):
        _flax.flax_to_state_dict(bad)


def test_preset_names_resolve():
    assert videoprism.configuration.find_preset("google/videoprism-lvt-base-f16r288").name == (
        "videoprism-lvt-base-f16r288"
    )
    assert videoprism.configuration.find_preset("flax_base_f16r288_repeated.npz").name == "videoprism-base-f16r288"
    assert videoprism.configuration.find_preset("/x/flax_lvt_large_f8r288_repeated.npz").is_lvt
    assert videoprism.configuration.find_preset("something-else") is None


# ---------------------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_save_load_round_trip(cls, tmp_path):
    config = lvt_config() if cls is videoprism.VideoPrismClipModel else None
    if cls is videoprism.VideoPrismTextModel:
        config = lvt_config().text_config
    elif config is None:
        config = lvt_config().vision_config.copy(num_labels=3)
    model = cls(config).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == [cls.__name__]
    loaded = cls.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_sharded_folder_loads(tmp_path):
    model = videoprism.VideoPrismClipModel(lvt_config())
    model.save_pretrained(tmp_path, max_shard_size=100_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    loaded = videoprism.VideoPrismClipModel.from_pretrained(tmp_path)
    video, ids, mask = clip_inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(video, ids, mask).logits_per_video, model.eval()(video, ids, mask).logits_per_video
        )


def test_flax_conversion_is_cached(tmp_path, monkeypatch):
    first = videoprism.VideoPrismVideoModel.from_pretrained(LVT_NPZ, config=lvt_config(), cache_dir=tmp_path)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1

    def fail(path):
        raise AssertionError("the second load must come from the cache")

    monkeypatch.setattr(_loading, "read_npz", fail)
    second = videoprism.VideoPrismVideoModel.from_pretrained(LVT_NPZ, config=lvt_config(), cache_dir=tmp_path)
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value)


def test_convert_then_load_gives_original_outputs(tmp_path):
    meta, io, _, params = fixture("lvt_small")
    videoprism.VideoPrismClipModel.from_pretrained(params, config=lvt_config()).save_pretrained(tmp_path)
    model = videoprism.VideoPrismClipModel.from_pretrained(tmp_path)
    video = torch.from_numpy(io["native/input/video"]).permute(0, 1, 4, 2, 3)
    with torch.no_grad():
        embeds = model.get_video_features(video)
    np.testing.assert_allclose(embeds.numpy(), io["native/output/video_embeddings"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_load(dtype):
    ref = videoprism.VideoPrismClipModel.from_pretrained(LVT_NPZ, config=lvt_config())
    low = videoprism.VideoPrismClipModel.from_pretrained(LVT_NPZ, config=lvt_config(), dtype=dtype, device="cpu")
    assert {p.dtype for p in low.parameters()} == {dtype}
    assert low.device == torch.device("cpu")
    video, ids, mask = clip_inputs()
    with torch.no_grad():
        out, expected = low(video, ids, mask), ref(video, ids, mask)
    assert out.video_embeds.dtype == dtype
    cosine = torch.nn.functional.cosine_similarity(out.video_embeds.float(), expected.video_embeds, dim=-1)
    assert cosine.min() > 0.99
    assert torch.isfinite(out.logits_per_video).all()


def test_classifier_head_from_lvt_checkpoint_starts_fresh(caplog):
    model = videoprism.VideoPrismForVideoClassification.from_pretrained(LVT_NPZ, config=lvt_config(), num_labels=5)
    assert model.config.num_labels == 5 and len(model.config.id2label) == 5
    assert "classifier.weight" in caplog.text
    assert model.classifier.weight.abs().sum() > 0
    video = torch.rand(2, 4, 3, 32, 32)
    out = model(video, labels=torch.tensor([1, 4]))
    assert out.logits.shape == (2, 5)
    out.loss.backward()
    assert model.vision_model.spatial_layers[0].attention.q_proj.weight.grad is not None


# ---------------------------------------------------------------------------------------------------------------
# Hub repos, from an offline cache laid out as huggingface_hub writes it


@pytest.fixture
def offline(monkeypatch):
    """huggingface_hub reads HF_HUB_OFFLINE at import, so set its constant too."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def fake_hub_repo(cache: Path, repo_id: str, files: dict[str, Path], revision: str = "main") -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / sha
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        os.symlink(source, snapshot / name)
    ref = root / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(sha)


def test_hub_repo_with_only_a_flax_file(tmp_path, offline):
    fake_hub_repo(tmp_path / "hub", "someone/videoprism-tiny", {"flax_tiny_repeated.npz": LVT_NPZ})
    model = videoprism.VideoPrismClipModel.from_pretrained(
        "someone/videoprism-tiny", config=lvt_config(), cache_dir=tmp_path / "hub"
    )
    io = fixture("lvt_small")[1]
    video = torch.from_numpy(io["native/input/video"]).permute(0, 1, 4, 2, 3)
    with torch.no_grad():
        np.testing.assert_allclose(
            model.get_video_features(video).numpy(), io["native/output/video_embeddings"], atol=1e-5, rtol=0
        )


def test_hub_repo_in_transformers_format_at_a_pr_ref(tmp_path, offline):
    folder = tmp_path / "saved"
    model = videoprism.VideoPrismVideoModel(lvt_config().vision_config).eval()
    model.save_pretrained(folder)
    files = {name: folder / name for name in ("config.json", "model.safetensors")}
    fake_hub_repo(tmp_path / "hub", "google/videoprism-tiny", files, revision="refs/pr/4")
    loaded = videoprism.VideoPrismVideoModel.from_pretrained(
        "google/videoprism-tiny", revision="refs/pr/4", cache_dir=tmp_path / "hub"
    )
    assert torch.equal(loaded.head.q_proj.weight, model.head.q_proj.weight)
    with pytest.raises(CheckpointNotFoundError, match="google/videoprism-tiny.*HF_HUB_OFFLINE"):
        videoprism.VideoPrismVideoModel.from_pretrained("google/videoprism-tiny", cache_dir=tmp_path / "hub")


# ---------------------------------------------------------------------------------------------------------------
# Errors


def test_missing_file_and_wrong_format(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no/such/file.npz"):
        videoprism.VideoPrismVisionModel.from_pretrained("no/such/file.npz")
    with pytest.raises(FileNotFoundError, match="not-here"):
        videoprism.VideoPrismVisionModel.from_pretrained(tmp_path / "not-here")
    text = tmp_path / "weights.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        videoprism.VideoPrismVisionModel.from_pretrained(text)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="garbage.npz is not a readable .npz"):
        videoprism.VideoPrismVisionModel.from_pretrained(garbage, config=video_config())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="bad.safetensors is not a readable safetensors"):
        videoprism.VideoPrismVisionModel.from_pretrained(bad, config=video_config())
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a VideoPrism Flax checkpoint"):
        videoprism.VideoPrismVisionModel.from_pretrained(other, config=video_config())
    with pytest.raises(CheckpointError, match="carries no config"):
        videoprism.VideoPrismVisionModel.from_pretrained(VIDEO_NPZ)


def test_missing_keys_are_named():
    with pytest.raises(CheckpointError, match=r"lacks weights of VideoPrismVideoModel.*head.k_proj.bias.*more"):
        videoprism.VideoPrismVideoModel.from_pretrained(VIDEO_NPZ, config=video_config())
    with pytest.raises(CheckpointError, match=r"lacks weights of VideoPrismTextModel"):
        videoprism.VideoPrismTextModel.from_pretrained(VIDEO_NPZ, config=lvt_config())


def test_config_sizes_that_disagree_with_the_tensors_are_refused_by_field(tmp_path):
    with pytest.raises(CheckpointError, match=r"image_size is 48.*spatial_embeddings.position_embeddings"):
        videoprism.VideoPrismVisionModel.from_pretrained(VIDEO_NPZ, config=video_config().copy(image_size=48))
    shallower = video_config().copy(num_spatial_layers=1)
    with pytest.raises(CheckpointError, match=r"num_spatial_layers is 1, but the checkpoint's tensors hold 2 layers"):
        videoprism.VideoPrismVisionModel.from_pretrained(VIDEO_NPZ, config=shallower)


@pytest.fixture(scope="module")
def vision_model():
    return videoprism.VideoPrismVisionModel.from_pretrained(VIDEO_NPZ, config=video_config())


@pytest.mark.parametrize(
    "shape, kwargs, message",
    [
        ((4, 3, 32, 32), {}, r"shape \(batch, frames, 3, height, width\)"),
        ((1, 4, 32, 32, 3), {}, "has 32 channels in dim 2"),
        ((1, 4, 3, 32, 24), {"interpolate_pos_encoding": True}, "must be square"),
        ((1, 4, 3, 24, 24), {}, "pass interpolate_pos_encoding=True"),
        ((1, 6, 3, 32, 32), {}, "got 6 frames.*interpolate_pos_encoding=True"),
        ((1, 4, 3, 36, 36), {"interpolate_pos_encoding": True}, "multiple of the patch size 8"),
        ((2, 4, 3, 32, 32), {"frame_mask": torch.ones(2, 3)}, r"frame_mask must have shape .*\(2, 4\)"),
        ((2, 4, 3, 32, 32), {"frame_mask": torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]])}, r"video\(s\) \[1\]"),
    ],
)
def test_input_errors(vision_model, shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        vision_model(torch.rand(shape), **kwargs)


def test_uint8_input_is_refused(vision_model):
    with pytest.raises(TypeError, match="divide uint8 frames by 255"):
        vision_model(torch.zeros(1, 4, 3, 32, 32, dtype=torch.uint8))


def test_text_and_clip_errors():
    model = videoprism.VideoPrismClipModel(lvt_config())
    video, ids, mask = clip_inputs()
    with pytest.raises(ValueError, match="at most 64"):
        model.text_model(torch.ones(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 100\)"):
        model.text_model(torch.full((1, 3), 100))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model.text_model(ids, mask[:, :2])
    with pytest.raises(ValueError, match="one text per video"):
        model(video, ids, mask, return_loss=True)
    with pytest.raises(ValueError, match="temperature must be positive"):
        model(video, ids, mask, temperature=0)


# ---------------------------------------------------------------------------------------------------------------
# Command line


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "videoprism.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_info_and_convert(tmp_path):
    config_path = tmp_path / "tiny_config.json"
    config_path.write_text(lvt_config().to_json_string())
    info = run_cli("info", str(LVT_NPZ), "--config", str(config_path), "--json")
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    expected = videoprism.VideoPrismClipModel(lvt_config()).num_parameters()
    assert described["model_class"] == "VideoPrismClipModel" and described["num_parameters"] == expected
    out = tmp_path / "converted"
    done = run_cli("convert", str(LVT_NPZ), str(out), "--config", str(config_path))
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    direct = videoprism.VideoPrismClipModel.from_pretrained(LVT_NPZ, config=lvt_config())
    converted = videoprism.VideoPrismClipModel.from_pretrained(out)
    for key, value in direct.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    missing = run_cli("info", str(tmp_path / "nothing.npz"))
    assert missing.returncode == 2 and "nothing.npz" in missing.stderr
    usage = run_cli("info", str(LVT_NPZ), "--config", str(tmp_path / "no.json"))
    assert usage.returncode == 2 and "--config" in usage.stderr
