"""VideoPrismVideoProcessor: PIL-Lanczos parity, input forms, resize modes, frame sampling, settings, errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from _videos import frame_index_of, make_video
from PIL import Image

from videoprism.video_processing import VideoInputError, VideoPrismVideoProcessor


def _random_video(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth structure plus noise: exercises the filter on edges and flat areas alike.
    yy, xx = np.mgrid[0:h, 0:w]
    base = (
        (xx[None, :, :, None] * 3 + yy[None, :, :, None] * 2 + np.arange(t)[:, None, None, None] * 17) % 256
    ).astype(np.int64)
    noise = rng.integers(-40, 40, size=(t, h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _pil_reference(frames: np.ndarray, indices, height: int = 288, width: int = 288) -> np.ndarray:
    """The original: PIL Lanczos on uint8 frames (mediapy), then / 255, channels first."""
    out = [np.asarray(Image.fromarray(frames[i]).resize((width, height), Image.LANCZOS)) for i in indices]
    return (np.stack(out) / 255.0).astype(np.float32).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def processor() -> VideoPrismVideoProcessor:
    return VideoPrismVideoProcessor()


@pytest.mark.parametrize("shape", [(20, 360, 640), (16, 288, 288), (5, 100, 130), (3, 500, 301)])
def test_pil_lanczos_parity(processor, shape):
    frames = _random_video(*shape)
    out = processor(frames)["pixel_values_videos"]
    assert out.shape == (1, 16, 3, 288, 288) and out.dtype == np.float32
    expected = _pil_reference(frames, np.linspace(0, shape[0], 16, endpoint=False).astype(np.int32))
    assert np.abs(out[0] - expected).max() <= 1 / 255
    np.testing.assert_array_equal(out[0], expected)  # in fact bit-exact: the same PIL filter, x / 255 in fp32


def test_every_input_form_gives_the_same_tensor(processor):
    frames = _random_video(12, 90, 160)
    chw = torch.from_numpy(frames).permute(0, 3, 1, 2)
    forms = {
        "uint8 array": frames,
        "float32 array": frames.astype(np.float32) / 255,
        "float64 array": frames / 255.0,
        "float16 array": (frames / 255.0).astype(np.float16),
        "uint8 tensor": chw,
        "float tensor": chw.float() / 255,
        "bfloat16 tensor": (chw.float() / 255).to(torch.bfloat16),
        "PIL list": [Image.fromarray(f) for f in frames],
        "PIL list (RGBA)": [Image.fromarray(f).convert("RGBA") for f in frames],
        "batch list": [frames],
        "5-D array": frames[None],
        "5-D tensor": chw[None],
    }
    reference = processor(frames, return_tensors="pt")["pixel_values_videos"]
    for name, video in forms.items():
        out = processor(video, return_tensors="pt")["pixel_values_videos"]
        if name in ("float16 array", "bfloat16 tensor"):  # these dtypes cannot hold every k/255 exactly
            assert (out - reference).abs().max() <= 1 / 255 + 1e-6, name
        else:
            torch.testing.assert_close(out, reference, rtol=0, atol=0, msg=name)


def test_decoded_video_and_path(processor, tmp_path):
    from videoprism.video_io import read_video

    path = make_video(tmp_path / "clip.mp4", num_frames=30, size=(128, 96))
    decoded = read_video(path, num_frames=16)
    assert [frame_index_of(f) for f in decoded.frames] == np.linspace(0, 30, 16, endpoint=False).astype(int).tolist()
    from_path = processor(str(path), return_tensors="pt")["pixel_values_videos"]
    torch.testing.assert_close(from_path, processor(decoded, return_tensors="pt")["pixel_values_videos"])
    torch.testing.assert_close(from_path, processor(decoded.frames, return_tensors="pt")["pixel_values_videos"])
    torch.testing.assert_close(processor(path, return_tensors="pt")["pixel_values_videos"], from_path)  # pathlib
    # Only the sampled frames are decoded, and they are the demo's linspace frames of the whole video.
    full = read_video(path)
    np.testing.assert_array_equal(decoded.frames, full.frames[np.linspace(0, 30, 16, endpoint=False).astype(int)])
    # A batch of a path and an array.
    batch = processor([str(path), decoded.frames], return_tensors="pt")["pixel_values_videos"]
    assert batch.shape == (2, 16, 3, 288, 288)
    torch.testing.assert_close(batch[0], batch[1])


def test_batch_and_num_frames(processor):
    a, b = _random_video(10, 60, 80, seed=1), _random_video(40, 120, 90, seed=2)
    out = processor([a, b], num_frames=8)["pixel_values_videos"]
    assert out.shape == (2, 8, 3, 288, 288)
    np.testing.assert_array_equal(out[0], processor(a, num_frames=8)["pixel_values_videos"][0])
    np.testing.assert_array_equal(out[1], processor(b, num_frames=8)["pixel_values_videos"][0])
    assert processor(a, size=64)["pixel_values_videos"].shape == (1, 16, 3, 64, 64)


def test_short_video_repeats_frames_by_linspace(processor):
    frames = np.stack([np.full((40, 40, 3), 10 * i, np.uint8) for i in range(5)])
    out = processor(frames)["pixel_values_videos"][0]
    got = np.rint(out[:, 0, 0, 0] * 255).astype(int)
    expected = np.floor(np.linspace(0, 5, 16, endpoint=False)).astype(int)
    np.testing.assert_array_equal(got, 10 * expected)
    from videoprism.video_io import sample_frame_indices

    np.testing.assert_array_equal(sample_frame_indices(5, 16), expected)
    one = processor(frames[:1])["pixel_values_videos"]
    assert one.shape == (1, 16, 3, 288, 288) and np.all(one == one[:, :1])


def test_without_sampling_frames_are_taken_as_given():
    """A clip already sampled (by `read_video`) keeps its frames in order; a clip of another length is refused."""
    frames = np.stack([np.full((40, 40, 3), 10 * i, np.uint8) for i in range(4)])
    processor = VideoPrismVideoProcessor(num_frames=4, size=8)
    out = processor(frames[::-1], do_sample_frames=False)["pixel_values_videos"][0]
    np.testing.assert_array_equal(np.rint(out[:, 0, 0, 0] * 255).astype(int), [30, 20, 10, 0])
    with pytest.raises(VideoInputError, match="holds 3 frames, not num_frames=4"):
        processor(frames[:3], do_sample_frames=False)


def _banded_frame() -> np.ndarray:
    """360x640: a 100 px red band left, a 100 px blue band right, green in between."""
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[:, :100] = (255, 0, 0)
    frame[:, 100:540] = (0, 255, 0)
    frame[:, 540:] = (0, 0, 255)
    return frame


def test_center_crop_drops_side_bands():
    frames = np.stack([_banded_frame()] * 2)
    out = VideoPrismVideoProcessor(resize_mode="center_crop")(frames)["pixel_values_videos"][0, 0]
    assert out.shape == (3, 288, 288)
    # Short side 360 -> 288 makes the frame 512 wide; the 288 centre holds only green (bands end at 80 / 432).
    np.testing.assert_allclose(out[1], 1.0, atol=1 / 255)
    np.testing.assert_allclose(out[[0, 2]], 0.0, atol=1 / 255)
    # Same as PIL's resize-then-crop.
    resized = np.asarray(Image.fromarray(frames[0]).resize((512, 288), Image.LANCZOS))[:, 112:400]
    np.testing.assert_array_equal(out, (resized / 255.0).astype(np.float32).transpose(2, 0, 1))
    # Squash keeps the bands.
    squashed = VideoPrismVideoProcessor()(frames)["pixel_values_videos"][0, 0]
    assert squashed[0, :, :30].mean() > 0.9 and squashed[2, :, -30:].mean() > 0.9


def test_pad_letterboxes():
    frames = np.stack([_banded_frame()] * 2)
    out = VideoPrismVideoProcessor(resize_mode="pad")(frames)["pixel_values_videos"][0, 0]
    # 640x360 -> 288x162, centred: 63 black rows above and below.
    assert np.all(out[:, :63] == 0) and np.all(out[:, 63 + 162 :] == 0)
    inner = np.asarray(Image.fromarray(frames[0]).resize((288, 162), Image.LANCZOS))
    np.testing.assert_array_equal(out[:, 63 : 63 + 162], (inner / 255.0).astype(np.float32).transpose(2, 0, 1))
    tall = VideoPrismVideoProcessor(resize_mode="pad")(np.full((2, 200, 100, 3), 255, np.uint8))
    tall = tall["pixel_values_videos"][0, 0]
    assert np.all(tall[:, :, :72] == 0) and np.all(tall[:, :, 72 + 144 :] == 0) and np.all(tall[:, :, 72:216] == 1)


def test_resize_mode_per_call(processor):
    frames = np.stack([_banded_frame()] * 2)
    per_call = processor(frames, resize_mode="center_crop")["pixel_values_videos"]
    np.testing.assert_array_equal(
        per_call, VideoPrismVideoProcessor(resize_mode="center_crop")(frames)["pixel_values_videos"]
    )


def test_save_load_round_trip(tmp_path):
    custom = VideoPrismVideoProcessor(num_frames=8, size={"height": 144, "width": 160}, resize_mode="center_crop")
    path = custom.save_pretrained(tmp_path)
    data = json.loads(open(path).read())
    assert path.endswith("video_preprocessor_config.json")
    assert data["size"] == {"height": 144, "width": 160} and data["num_frames"] == 8
    assert data["resample"] == 1 and data["do_rescale"] is True and abs(data["rescale_factor"] - 1 / 255) < 1e-15
    assert data["do_normalize"] is False and data["image_mean"] is None and data["resize_mode"] == "center_crop"
    loaded = VideoPrismVideoProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == custom.to_dict()
    frames = _random_video(9, 70, 90)
    np.testing.assert_array_equal(loaded(frames)["pixel_values_videos"], custom(frames)["pixel_values_videos"])
    assert VideoPrismVideoProcessor.from_pretrained(path).to_dict() == custom.to_dict()  # the json file itself
    assert VideoPrismVideoProcessor.from_pretrained(tmp_path, num_frames=4).num_frames == 4


def test_defaults_and_presets(tmp_path):
    defaults = VideoPrismVideoProcessor()
    assert defaults.num_frames == 16 and defaults.size == {"height": 288, "width": 288}
    assert defaults.resample == int(Image.Resampling.LANCZOS) and defaults.do_normalize is False
    # A folder without a config (an original Flax checkpoint) gets the defaults; the large presets use 8 frames.
    assert VideoPrismVideoProcessor.from_pretrained(tmp_path).to_dict() == defaults.to_dict()
    large = tmp_path / "videoprism-large-f8r288"
    large.mkdir()
    assert VideoPrismVideoProcessor.from_pretrained(large).num_frames == 8


def test_reads_transformers_style_config(tmp_path):
    config = {
        "video_processor_type": "LlavaOnevisionVideoProcessor",
        "size": {"height": 288, "width": 288},
        "resample": 3,
        "do_normalize": False,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_center_crop": None,
        "do_sample_frames": True,
        "num_frames": 16,
    }
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(config))
    loaded = VideoPrismVideoProcessor.from_pretrained(tmp_path)
    assert loaded.resample == 3 and loaded.num_frames == 16 and loaded.do_normalize is False


def test_normalize_and_no_rescale():
    frames = _random_video(4, 30, 30)
    base = VideoPrismVideoProcessor(num_frames=4, size=30)(frames)["pixel_values_videos"]
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    norm = VideoPrismVideoProcessor(num_frames=4, size=30, do_normalize=True, image_mean=mean, image_std=std)
    expected = (base - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    np.testing.assert_allclose(norm(frames)["pixel_values_videos"], expected, rtol=1e-6, atol=1e-6)
    raw = VideoPrismVideoProcessor(num_frames=4, do_resize=False, do_rescale=False)(frames)["pixel_values_videos"]
    np.testing.assert_array_equal(raw[0], frames.transpose(0, 3, 1, 2).astype(np.float32))


@pytest.mark.parametrize(
    ("video", "match"),
    [
        (np.zeros((4, 32, 32), np.uint8), r"video is a ndarray of shape \(4, 32, 32\)"),
        (np.zeros((4, 32, 32, 4), np.uint8), "RGBA"),
        (np.zeros((4, 3, 32, 32), np.uint8), "channels-first"),
        (np.zeros((32, 32, 3), np.uint8), "np.stack"),
        (np.zeros((4, 32, 32, 3), np.int32), "uint8"),
        (np.zeros((4, 32, 32, 3), bool), "uint8"),
        (np.zeros((0, 32, 32, 3), np.uint8), "empty"),
        (np.zeros((4, 0, 32, 3), np.uint8), "empty"),
        (np.full((4, 8, 8, 3), np.nan, np.float32), "NaN"),
        (np.full((4, 8, 8, 3), 200.0, np.float32), "0..255"),
        (np.full((4, 8, 8, 3), -0.5, np.float32), r"\[0, 1\]"),
        (torch.zeros(4, 32, 32, 3), "channels-last"),
        (torch.zeros(4, 3, 8, 8, dtype=torch.int64), "uint8"),
        (Image.new("RGB", (8, 8)), "single PIL image"),
        ([], "empty list"),
        ([[]], r"videos\[0\] is empty"),
        ([Image.new("RGB", (8, 8)), np.zeros((8, 8, 3), np.uint8)], "mixes PIL images"),
        ({"frames": 1}, "expected a path"),
        (3, "expected a path"),
    ],
)
def test_errors(processor, video, match):
    with pytest.raises(VideoInputError, match=match):
        processor(video)


def test_error_names_batch_index(processor):
    good = np.zeros((4, 16, 16, 3), np.uint8)
    with pytest.raises(VideoInputError, match=r"videos\[1\]"):
        processor([good, np.zeros((4, 16, 16), np.uint8)])
    with pytest.raises(VideoInputError, match=r"videos\[2\] frame 0 holds NaN"):
        processor([good, good, np.full((4, 16, 16, 3), np.nan, np.float32)])
    with pytest.raises(VideoInputError, match="start_time"):
        processor(good, start_time=1.0)


def test_missing_file(processor, tmp_path):
    from videoprism.video_io import VideoDecodeError

    with pytest.raises(VideoDecodeError):
        processor(str(tmp_path / "missing.mp4"))


def test_bad_settings():
    with pytest.raises(ValueError, match="resize_mode"):
        VideoPrismVideoProcessor(resize_mode="stretch")
    with pytest.raises(ValueError, match="num_frames"):
        VideoPrismVideoProcessor(num_frames=0)
    with pytest.raises(ValueError, match="resample"):
        VideoPrismVideoProcessor(resample=42)
    with pytest.raises(ValueError, match="image_mean"):
        VideoPrismVideoProcessor(do_normalize=True)
    with pytest.raises(ValueError, match="size"):
        VideoPrismVideoProcessor(size={"shortest_edge": 288})
    with pytest.raises(ValueError, match="return_tensors"):
        VideoPrismVideoProcessor()(np.zeros((1, 8, 8, 3), np.uint8), return_tensors="tf")


def test_speed_16_frames_640x360(processor):
    frames = _random_video(16, 360, 640)
    processor(frames)
    start = time.perf_counter()
    processor(frames, return_tensors="pt")
    # ~30-50 ms on the 2-core development machine; generous bound against slow CI machines.
    assert time.perf_counter() - start < 1.0
