"""VideoPrismProcessor: text and videos together, optional parts, and one folder for both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from videoprism.processing import VideoPrismProcessor
from videoprism.tokenization import BatchEncoding, TokenizerNotFoundError, VideoPrismTokenizer
from videoprism.video_processing import VideoPrismVideoProcessor

SPM = Path(__file__).parent / "fixtures" / "tokenizer" / "spm_t5layout.model"
TEXTS = ["a video of playing drums.", "A video of playing FLUTE"]


@pytest.fixture(scope="module")
def processor() -> VideoPrismProcessor:
    return VideoPrismProcessor(
        VideoPrismVideoProcessor(num_frames=4, size=36), VideoPrismTokenizer.from_pretrained(SPM)
    )


def _video(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(6, 40, 50, 3), dtype=np.uint8)


def test_text_and_videos(processor):
    out = processor(text=TEXTS, videos=[_video(0), _video(1)], return_tensors="pt")
    assert isinstance(out, BatchEncoding)
    assert set(out) == {"input_ids", "attention_mask", "pixel_values_videos"}
    assert out["pixel_values_videos"].shape == (2, 4, 3, 36, 36) and out["pixel_values_videos"].dtype == torch.float32
    assert out["input_ids"].shape == (2, 64) and out["input_ids"].dtype == torch.int64
    torch.testing.assert_close(out["input_ids"], processor.tokenizer(TEXTS, return_tensors="pt")["input_ids"])
    torch.testing.assert_close(
        out["pixel_values_videos"],
        processor.video_processor([_video(0), _video(1)], return_tensors="pt")["pixel_values_videos"],
    )
    moved = out.to("cpu")
    assert moved.pixel_values_videos.device.type == "cpu"
    cast = out.to(torch.bfloat16)
    assert cast["pixel_values_videos"].dtype == torch.bfloat16 and cast["input_ids"].dtype == torch.int64


def test_either_part_is_optional(processor):
    text_only = processor(text="hello", return_tensors="np")
    assert set(text_only) == {"input_ids", "attention_mask"} and text_only["input_ids"].shape == (1, 64)
    video_only = processor(videos=_video(), return_tensors="np")
    assert set(video_only) == {"pixel_values_videos"}
    assert isinstance(video_only["pixel_values_videos"], np.ndarray)
    with pytest.raises(ValueError, match="text=..., videos=..."):
        processor()


def test_options_are_routed(processor):
    out = processor(text=TEXTS, videos=_video(), max_length=8, canonicalize=False, num_frames=2, size=18)
    assert np.asarray(out["input_ids"]).shape == (2, 8)
    assert out["input_ids"][1] == processor.tokenizer(TEXTS[1], max_length=8, canonicalize=False)["input_ids"][0]
    assert out["pixel_values_videos"].shape == (1, 2, 3, 18, 18)
    with pytest.raises(TypeError, match="unknown options"):
        processor(text="hello", fps=3)


def test_save_load_round_trip(processor, tmp_path):
    written = processor.save_pretrained(tmp_path)
    names = sorted(Path(p).name for p in written)
    assert names == ["processor_config.json", "spiece.model", "tokenizer_config.json", "video_preprocessor_config.json"]
    assert json.loads((tmp_path / "processor_config.json").read_text())["processor_class"] == "VideoPrismProcessor"
    loaded = VideoPrismProcessor.from_pretrained(tmp_path)
    assert loaded.video_processor.to_dict() == processor.video_processor.to_dict()
    a = processor(text=TEXTS, videos=_video(), return_tensors="pt")
    b = loaded(text=TEXTS, videos=_video(), return_tensors="pt")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert loaded.batch_decode(b["input_ids"]) == ["a video of playing drums.", "a video of playing flute."]


def test_checkpoint_without_tokenizer(tmp_path):
    (tmp_path / "flax_lvt_base_f16r288_repeated.npz").write_bytes(b"placeholder")
    processor = VideoPrismProcessor.from_pretrained(tmp_path)
    assert processor.tokenizer is None
    assert processor(videos=_video(), return_tensors="pt")["pixel_values_videos"].shape == (1, 16, 3, 288, 288)
    with pytest.raises(TokenizerNotFoundError, match="MHRDYN7/videoprism-lvt-base-f16r288"):
        processor(text="hello")
    # An explicit tokenizer (object or source) fills the gap.
    with_tokenizer = VideoPrismProcessor.from_pretrained(tmp_path, tokenizer=str(SPM))
    assert with_tokenizer(text="hello")["input_ids"] == VideoPrismTokenizer.from_pretrained(SPM)("hello")["input_ids"]
    tok = VideoPrismTokenizer.from_pretrained(SPM)
    assert VideoPrismProcessor.from_pretrained(tmp_path, tokenizer=tok).tokenizer is tok


def test_video_overrides_and_defaults(tmp_path):
    shutil.copy(SPM, tmp_path / "spiece.model")
    processor = VideoPrismProcessor.from_pretrained(tmp_path, num_frames=8)
    assert processor.video_processor.num_frames == 8 and processor.tokenizer is not None
    assert VideoPrismProcessor().video_processor.to_dict() == VideoPrismVideoProcessor().to_dict()
    assert "VideoPrismProcessor" in repr(processor)
