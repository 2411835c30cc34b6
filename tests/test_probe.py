"""Probe training on frozen features: heads, training, the saved classifier, metrics, the CLI end to end."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from videoprism import (
    VideoPrismForVideoClassification,
    VideoPrismVideoProcessor,
    VideoPrismVisionConfig,
    VideoPrismVisionModel,
)
from videoprism.probe import train as train_module
from videoprism.probe.classifier import build_classifier, load_classifier, save_classifier
from videoprism.probe.features import ProbeFeatures
from videoprism.probe.heads import AttentiveProbe, LinearProbe, build_head
from videoprism.probe.metrics import classification_metrics, confusion_matrix, mean_average_precision
from videoprism.probe.report import draw_confusion_matrix
from videoprism.probe.train import ProbeResumeError, ProbeSettings, ProbeSettingsError, fit_head

sys.path.insert(0, str(Path(__file__).parent))
from _checkpoints import save_tiny_clip_model  # noqa: E402

CONFIG = VideoPrismVisionConfig(
    hidden_size=32, num_attention_heads=2, intermediate_size=128, num_spatial_layers=1, num_temporal_layers=1,
    num_auxiliary_layers=1, image_size=32, tubelet_size=[1, 8, 8], num_frames=4,
)  # fmt: skip
CLASSES = ["archery", "bowling", "cycling"]


def synthetic_features(n: int, seed: int, multi_label: bool = False, pool: int = 2) -> ProbeFeatures:
    """Tokens (n, 4 frames, 4 tokens, 32) around a class centre: linearly separable classes, noisy tokens."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(100).normal(size=(len(CLASSES), 32))
    if multi_label:
        targets = (rng.random((n, len(CLASSES))) < 0.4).astype(np.float32)
        targets[targets.sum(1) == 0, 0] = 1
    else:
        targets = np.eye(len(CLASSES), dtype=np.float32)[rng.integers(0, len(CLASSES), n)]
    tokens = rng.normal(size=(n, 4, 4, 32)) + (targets @ centres)[:, None, None, :] * 0.6
    return ProbeFeatures(
        tokens.astype(np.float16), None, targets, list(CLASSES), multi_label, pool, [f"clip{i}.mp4" for i in range(n)]
    )


def settings(**changes) -> ProbeSettings:
    base = dict(epochs=4, lr=3e-3, batch_size=8, bf16=False, device="cpu")
    return ProbeSettings(**{**base, **changes})


@pytest.mark.parametrize("head", ["attentive", "linear"])
def test_heads_learn_separable_features(head):
    result = fit_head(synthetic_features(48, 1), synthetic_features(24, 2), CONFIG, settings(head=head))
    assert isinstance(result.head, AttentiveProbe if head == "attentive" else LinearProbe)
    assert result.val_metrics["top1"] >= 0.9
    assert result.val_metrics["n"] == 24
    assert len(result.history) == 4
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    best = max(h["val_top1"] for h in result.history)
    assert result.history[result.best_epoch - 1]["val_top1"] == best


def test_multi_label_head_trains_with_bce():
    result = fit_head(
        synthetic_features(64, 3, multi_label=True),
        synthetic_features(32, 4, multi_label=True),
        CONFIG,
        settings(head="linear", epochs=6, lr=1e-2),
    )
    assert result.val_metrics["map"] > 0.8
    assert "val_map" in result.history[0]


def test_same_seed_gives_the_bit_identical_head():
    heads = [fit_head(synthetic_features(24, 1), None, CONFIG, settings(seed=s, epochs=2)).head for s in (7, 7, 8)]
    first, again, other = (h.state_dict() for h in heads)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_early_stopping_keeps_the_best_epoch():
    # A learning rate far too high: validation peaks early, then the patience runs out.
    result = fit_head(
        synthetic_features(48, 1), synthetic_features(24, 2), CONFIG, settings(epochs=30, patience=2, lr=0.5)
    )
    assert len(result.history) < 30
    assert len(result.history) - result.best_epoch == 2
    best = result.history[result.best_epoch - 1]["val_top1"]
    assert result.val_metrics["top1"] == pytest.approx(best)


def test_killed_training_resumes_to_the_same_head(tmp_path, monkeypatch):
    train, val = synthetic_features(24, 1), synthetic_features(12, 2)
    uninterrupted = fit_head(train, val, CONFIG, settings(epochs=4), checkpoint_dir=tmp_path / "a").head

    save = train_module.save_checkpoint
    calls = []

    def killed_after_two_epochs(path, state):
        save(path, state)
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", killed_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        fit_head(train, val, CONFIG, settings(epochs=4), checkpoint_dir=tmp_path / "b")
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    resumed = fit_head(train, val, CONFIG, settings(epochs=4), checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from == 2
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    expected = uninterrupted.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in resumed.head.state_dict().items())

    with pytest.raises(ProbeResumeError, match="another run"):
        fit_head(train, val, CONFIG, settings(epochs=4, lr=1e-2), checkpoint_dir=tmp_path / "b")


def test_bad_settings_and_features_are_named():
    with pytest.raises(ProbeSettingsError, match="lr"):
        ProbeSettings(lr=-1.0)
    with pytest.raises(ProbeSettingsError, match="head"):
        ProbeSettings(head="mlp")
    with pytest.raises(ProbeSettingsError, match="warmup"):
        ProbeSettings(warmup=1.5)
    features = synthetic_features(8, 1)
    features.tokens = None
    features.embeddings = np.zeros((8, 32), np.float32)
    with pytest.raises(ProbeSettingsError, match="token cache"):
        fit_head(features, None, CONFIG, settings(head="linear"))
    wide = synthetic_features(8, 1)
    wide.tokens = np.zeros((8, 4, 4, 64), np.float16)
    with pytest.raises(ProbeSettingsError, match="hidden size"):
        fit_head(wide, None, CONFIG, settings())


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> tuple[VideoPrismVisionModel, Path]:
    folder = save_tiny_clip_model(tmp_path_factory.mktemp("probe-model") / "model")
    return VideoPrismVisionModel.from_pretrained(folder), folder


@torch.no_grad()
def trained_head(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    head = build_head(kind, CONFIG, len(CLASSES)).eval()
    for p in head.parameters():
        p.add_(0.3 * torch.randn_like(p))
    return head


@pytest.mark.parametrize("kind", ["attentive", "linear"])
def test_saved_classifier_computes_the_head_on_full_tokens(kind, encoder, tmp_path):
    model, source = encoder
    head = trained_head(kind)
    classifier = build_classifier(model, head, CLASSES, multi_label=False)
    x = torch.rand(3, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = model(x).last_hidden_state
        expected = head(tokens.mean(dim=1) if kind == "linear" else tokens)
        # The linear head's exact mapping: a zero query (uniform attention), identity value/output projections.
        torch.testing.assert_close(classifier(x).logits, expected, rtol=0, atol=1e-5)

    processor = VideoPrismVideoProcessor.from_pretrained(source)
    save_classifier(classifier, tmp_path, processor, {"note": "test"}, np.array([[2, 1, 0], [0, 3, 0], [1, 0, 2]]))
    ours, processor = load_classifier(tmp_path)
    assert ours.config.id2label == dict(enumerate(CLASSES)) and ours.config.num_labels == 3
    assert processor.num_frames == 4
    hf, info = transformers.VideoPrismForVideoClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.id2label == dict(enumerate(CLASSES))
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(hf.eval()(pixel_values_videos=x).logits.reshape(3, -1), expected, rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"note": "test"}
    assert (tmp_path / "video_preprocessor_config.json").is_file()
    assert isinstance(VideoPrismForVideoClassification.from_pretrained(tmp_path), VideoPrismForVideoClassification)


def test_metrics_values():
    logits = np.array([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0], [1.0, 3.0, 2.0], [2.0, 1.0, 0.0]])
    targets = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    m = classification_metrics(logits, targets, multi_label=False)
    assert m == {"top1": 0.5, "top5": 1.0, "mean_class_accuracy": pytest.approx(1 / 3), "n": 4}
    assert confusion_matrix(logits, targets).tolist() == [[2, 0, 0], [0, 0, 1], [0, 1, 0]]
    # Ranked by score (ties in clip order): class 0: clips 0+, 3+ -> AP 1; class 1: 2-, 0-, 1+ -> 1/3; class 2:
    # 1-, 2+ -> 1/2.
    assert mean_average_precision(logits, targets > 0) == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    multi = classification_metrics(logits, np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]]), True)
    assert multi["top1"] == 0.5 and multi["map"] > 0


def test_confusion_matrix_png(tmp_path):
    matrix = np.array([[5, 1, 0], [0, 6, 0], [2, 0, 4]])
    path = draw_confusion_matrix(matrix, ["archery", "bowling", "cycling\n"], tmp_path / "cm.png")
    image = Image.open(path).convert("RGB")
    assert image.format is None or image.size[0] > 3 * 28
    pixels = np.asarray(image)
    assert pixels.min() < 50  # dark cells, text
    assert (pixels == 255).all(axis=-1).mean() > 0.3  # mostly white background


# ----------------------------------------------------------------------------------------------------------------
# End to end, through the CLI, on generated videos

PATTERNS = ("rows", "columns", "checks")


def make_class_video(path: Path, pattern: str, seed: int) -> Path:
    """8 frames 32x32 of a class's pattern (red rows, green columns, blue checks), moving, with per-video jitter."""
    import av

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32]
    colour = {"rows": (230, 40, 40), "columns": (40, 210, 60), "checks": (50, 70, 230)}[pattern]
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        phase = int(rng.integers(0, 8))
        for t in range(8):
            if pattern == "rows":
                mask = ((y + t + phase) // 4) % 2
            elif pattern == "columns":
                mask = ((x + t + phase) // 4) % 2
            else:
                mask = ((x // 8) + (y // 8) + (t + phase) // 4) % 2
            image = mask[..., None] * np.array(colour) * rng.uniform(0.8, 1.0) + rng.normal(0, 8, (32, 32, 3)) + 10
            frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def video_set(tmp_path_factory) -> Path:
    """A class-per-folder set: 3 classes of 6 videos."""
    root = tmp_path_factory.mktemp("probe-videos") / "data"
    for c, pattern in enumerate(PATTERNS):
        (root / pattern).mkdir(parents=True)
        for i in range(6):
            make_class_video(root / pattern / f"{pattern}{i}.mp4", pattern, seed=100 * c + i)
    return root


def cli(*argv: str) -> int:
    from videoprism.cli import main

    return main([str(a) for a in argv])


TRAIN_FLAGS = ("--epochs", "6", "--lr", "3e-3", "--batch-size", "4", "--val-split", "0.34", "--workers", "0",
               "--device", "cpu", "--quiet")  # fmt: skip


@pytest.mark.parametrize("head", ["attentive", "linear"])
def test_cli_train_eval_classify(head, video_set, encoder, tmp_path, capsys):
    _, source = encoder
    out = tmp_path / "classifier"
    assert cli("probe", "train", video_set, "--model", source, "--out", out, "--head", head, *TRAIN_FLAGS) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == sorted(PATTERNS) and metrics["n_train"] == 12 and metrics["n_val"] == 6
    # The saved model on the held-out videos (full tokens from pixels), well above chance (1/3).
    assert metrics["val"]["n"] == 6 and metrics["val"]["top1"] >= 0.8
    assert metrics["settings"]["head"] == head and len(metrics["history"]) >= 1
    assert Image.open(out / "confusion_matrix.png").size[0] > 100
    capsys.readouterr()

    assert cli("probe", "eval", out, video_set, "--json", "--device", "cpu") == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert set(evaluated) == {"top1", "top5", "mean_class_accuracy", "n"}
    assert evaluated["n"] == 18 and evaluated["top1"] >= 0.8 and evaluated["top5"] == 1.0

    unknown = tmp_path / "unknown.csv"
    unknown.write_text(f"path,label\n{video_set / 'rows' / 'rows0.mp4'},swimming\n")
    assert cli("probe", "eval", out, unknown, "--device", "cpu") == 2
    assert "swimming" in capsys.readouterr().err

    video = video_set / "checks" / "checks0.mp4"
    assert cli("classify", video, "--model", out, "--json", "--workers", "0", "--device", "cpu") == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["video"] == str(video)
    assert sorted(row["label"] for row in result["labels"]) == sorted(PATTERNS)
    assert result["labels"][0]["label"] == "checks"
    assert sum(row["probability"] for row in result["labels"]) == pytest.approx(1.0, abs=1e-5)


def test_second_run_reuses_the_cached_features(video_set, encoder, tmp_path, monkeypatch):
    import videoprism.video_io as video_io

    _, source = encoder
    cache = tmp_path / "cache"
    flags = ("--model", source, "--cache-dir", cache, "--epochs", "1", *TRAIN_FLAGS[2:])
    assert cli("probe", "train", video_set, "--out", tmp_path / "a", *flags) == 0
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert first["settings"]["decoded_clips"] == 18

    calls = []
    read_video = video_io.read_video

    def counted(*args, **kwargs):
        calls.append(args[0])
        return read_video(*args, **kwargs)

    monkeypatch.setattr(video_io, "read_video", counted)
    assert cli("probe", "train", video_set, "--out", tmp_path / "b", *flags) == 0
    second = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert second["settings"]["decoded_clips"] == 0
    assert len(calls) == second["n_val"]  # only the saved model's check on the held-out videos decodes


def test_unfreeze_fine_tunes_the_last_layers(video_set, encoder, tmp_path):
    model, source = encoder
    out = tmp_path / "finetuned"
    flags = ("--unfreeze", "1", "--grad-accum", "2", "--epochs", "2", *TRAIN_FLAGS[2:])
    assert cli("probe", "train", video_set, "--model", source, "--out", out, *flags) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["unfreeze"] == 1 and metrics["val"]["n"] == 6
    tuned = VideoPrismForVideoClassification.from_pretrained(out).vision_model.state_dict()
    original = model.state_dict()
    # One layer unfrozen: the (only) temporal layer and the final LayerNorm moved, the spatial layer did not.
    assert not torch.equal(tuned["temporal_layers.0.mlp.fc1.weight"], original["temporal_layers.0.mlp.fc1.weight"])
    assert torch.equal(tuned["spatial_layers.0.mlp.fc1.weight"], original["spatial_layers.0.mlp.fc1.weight"])
    assert torch.equal(tuned["spatial_embeddings.patch_embeddings.projection.weight"],
                       original["spatial_embeddings.patch_embeddings.projection.weight"])  # fmt: skip


def test_bad_data_sets_exit_with_code_2(video_set, encoder, tmp_path, capsys):
    _, source = encoder
    one_class = tmp_path / "one"
    (one_class / "rows").mkdir(parents=True)
    make_class_video(one_class / "rows" / "a.mp4", "rows", 0)
    no_label = tmp_path / "list.csv"
    no_label.write_text(f"path\n{video_set / 'rows' / 'rows0.mp4'}\n")
    for data in (one_class, no_label, tmp_path / "missing", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert cli("probe", "train", data, "--model", source, "--out", tmp_path / "out", *TRAIN_FLAGS) == 2
        err = capsys.readouterr().err
        assert "videoprism probe train: error:" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exited:  # a usage error: no labels, and the model is no classifier
        cli("classify", video_set, "--model", source, "--workers", "0")
    assert exited.value.code == 2
    assert "classifier folder" in capsys.readouterr().err


def test_eval_probe_benchmark_runs_the_colab_protocol(video_set, encoder, tmp_path):
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("eval_probe", Path(__file__).parents[1] / "benchmarks/eval_probe.py")
    eval_probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_probe)
    _, source = encoder
    videos = tmp_path / "videos"
    videos.mkdir()
    rows = ["youtube_id,time_start,time_end,label,split"]
    for pattern in PATTERNS:
        for i in range(6):
            vid = f"{pattern}{i}"
            # Trimmed clips (<id>_<start>_<end>.mp4) and full videos (<id>.mp4, windowed) both resolve.
            name = f"{vid}_000000_000001.mp4" if i % 2 else f"{vid}.mp4"
            shutil.copy(video_set / pattern / f"{vid}.mp4", videos / name)
            rows.append(f"{vid},0,1,{pattern},{'train' if i < 4 else 'val'}")
    rows.append("notdownloaded,0,10,rows,train")
    (tmp_path / "k.csv").write_text("\n".join(rows) + "\n")
    report = eval_probe.main([str(tmp_path / "k.csv"), str(videos), "--model", str(source), "--workers", "0",
                              "--device", "cpu", "--out", str(tmp_path / "out")])  # fmt: skip
    assert report["clips"] == {"train": 12, "val": 6, "skipped": 1}
    assert report["val"]["n"] == 6 and set(report["val"]) == {"top1", "top5", "mean_class_accuracy", "n"}
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["settings"]["lr"] == 1e-4 and metrics["settings"]["epochs"] == 5
    assert metrics["settings"]["cache"] == "tokens" and len(metrics["history"]) == 5


def test_bf16_autocast_trains_and_the_head_stays_float32():
    result = fit_head(synthetic_features(48, 1), synthetic_features(24, 2), CONFIG, settings(head="linear", bf16=True))
    assert result.val_metrics["top1"] >= 0.9
    assert all(p.dtype == torch.float32 for p in result.head.parameters())
