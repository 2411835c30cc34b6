"""The released checkpoints against the original release's published values (needs network: VIDEOPRISM_ONLINE=1).

The reference values come from running the original Flax release on its demo video with the original
preprocessing (uniform frame sampling over the whole video, Lanczos 288 x 288, /255). CI runs offline, where this
module is skipped with that reason; run it with `VIDEOPRISM_ONLINE=1 python -m pytest -q tests/test_online.py`.
"""

import os
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from videoprism import (
    VideoPrismClipModel,
    VideoPrismTokenizer,
    VideoPrismVideoProcessor,
    VideoPrismVisionModel,
)

pytestmark = pytest.mark.skipif(
    os.environ.get("VIDEOPRISM_ONLINE") != "1",
    reason="downloads the released checkpoints (about 3 GB) and the demo video: set VIDEOPRISM_ONLINE=1",
)

DEMO_VIDEO_URL = "https://github.com/google-deepmind/videoprism/raw/main/videoprism/assets/water_bottle_drumming.mp4"
# The released Flax repos carry no vocabulary; this transformers-format repo holds the same SentencePiece model.
TOKENIZER_REPO = "MHRDYN7/videoprism-lvt-base-f16r288"

# last_hidden_state[0, :3, :3] of the vision encoders (16 frames base, 8 frames large).
VISION_TOKENS = {
    "google/videoprism-base-f16r288": [
        [0.11648951, 0.4568253, 0.19288044],
        [0.28420594, -0.04224018, 0.377879],
        [0.24594213, -0.3914095, -0.30516925],
    ],
    "google/videoprism-large-f8r288": [
        [0.39503154, 0.07308281, 0.21407786],
        [0.4963156, -0.02489206, 0.49198192],
        [-0.41461205, 0.24869855, 0.25285226],
    ],
}
LVT_BASE_VIDEO_EMBEDS = [
    -0.01940615, -0.04830061, 0.0069022, 0.02915299, -0.05897291, 0.02168823, -0.01471708, -0.00971614, -0.00220576,
]  # fmt: skip
PROMPT_IDS = {
    "a video of playing drums.": [262, 266, 768, 267, 1376, 14293, 259],
    "a video of sitting.": [262, 266, 768, 267, 2865, 259],
}
# Real weights run through 12-24 layers: allow for float32 summation order across BLAS builds.
TOKEN_ATOL = 1e-4
EMBED_ATOL = 1e-5


@pytest.fixture(scope="module")
def demo_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "water_bottle_drumming.mp4"
    with urllib.request.urlopen(DEMO_VIDEO_URL, timeout=60) as response:
        path.write_bytes(response.read())
    return path


@pytest.mark.parametrize("repo", sorted(VISION_TOKENS))
def test_vision_encoder_tokens(repo, demo_video):
    processor = VideoPrismVideoProcessor.from_pretrained(repo)  # the preset sets 16 or 8 frames
    model = VideoPrismVisionModel.from_pretrained(repo).eval()
    pixels = processor(str(demo_video), return_tensors="pt")["pixel_values_videos"]
    with torch.no_grad():
        tokens = model(pixels).last_hidden_state
    np.testing.assert_allclose(tokens[0, :3, :3].numpy(), np.array(VISION_TOKENS[repo]), atol=TOKEN_ATOL, rtol=0)


def test_lvt_base_video_embedding_and_prompt_ids(demo_video):
    repo = "google/videoprism-lvt-base-f16r288"
    processor = VideoPrismVideoProcessor.from_pretrained(repo)
    model = VideoPrismClipModel.from_pretrained(repo).eval()
    pixels = processor(str(demo_video), return_tensors="pt")["pixel_values_videos"]
    with torch.no_grad():
        embeds = model.get_video_features(pixels)
    np.testing.assert_allclose(embeds[0, :9].numpy(), np.array(LVT_BASE_VIDEO_EMBEDS), atol=EMBED_ATOL, rtol=0)

    tokenizer = VideoPrismTokenizer.from_pretrained(TOKENIZER_REPO)
    for prompt, ids in PROMPT_IDS.items():
        encoded = tokenizer([prompt], return_tensors="pt")
        length = int(encoded["attention_mask"][0].sum())
        assert encoded["input_ids"][0, :length].tolist() == ids, prompt
