"""Videos of coloured shapes moving over coloured backgrounds (H.264 in MP4, playable by browsers), for the serve tests
and the docs screenshot. Nothing here is part of the package."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

# (name, background RGB, shape RGB, shape: "square" | "disc" | "bar")
SCENES = [
    ("red_square_on_blue", (30, 60, 160), (230, 40, 40), "square"),
    ("yellow_disc_on_green", (30, 120, 50), (250, 220, 40), "disc"),
    ("white_bar_on_black", (10, 10, 10), (245, 245, 245), "bar"),
    ("orange_square_on_teal", (20, 130, 140), (250, 140, 20), "square"),
    ("purple_disc_on_sand", (215, 190, 140), (120, 40, 160), "disc"),
    ("cyan_bar_on_maroon", (110, 20, 40), (40, 220, 230), "bar"),
]


def shape_frame(i: int, num_frames: int, size: tuple[int, int], background, colour, shape: str) -> np.ndarray:
    """Frame ``i``: the shape moves from left to right (and bobs up and down) over the clip."""
    width, height = size
    image = np.empty((height, width, 3), np.uint8)
    image[:] = background
    t = i / max(1, num_frames - 1)
    r = height // 5
    cx = int(r + t * (width - 2 * r))
    cy = int(height / 2 + (height / 4) * np.sin(2 * np.pi * t))
    y, x = np.mgrid[0:height, 0:width]
    if shape == "disc":
        mask = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    elif shape == "bar":
        mask = (abs(x - cx) <= r // 3) & (abs(y - height // 2) <= height // 3)
    else:
        mask = (abs(x - cx) <= r) & (abs(y - cy) <= r)
    image[mask] = colour
    return image


def make_shape_video(path: Path, background, colour, shape: str, seconds: float = 4.0, fps: int = 12,
                     size: tuple[int, int] = (192, 128)) -> Path:  # fmt: skip
    """Writes an H.264 MP4 (yuv420p, faststart) of a moving shape; returns ``path``."""
    num_frames = int(seconds * fps)
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.gop_size = fps
        for i in range(num_frames):
            frame = shape_frame(i, num_frames, size, background, colour, shape)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def make_shape_videos(folder: Path, count: int = len(SCENES), seconds: float = 4.0) -> list[Path]:
    """``count`` videos (cycling through `SCENES`) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        name, background, colour, shape = SCENES[i % len(SCENES)]
        suffix = "" if i < len(SCENES) else f"_{i // len(SCENES)}"
        paths.append(make_shape_video(folder / f"{name}{suffix}.mp4", background, colour, shape, seconds))
    return paths


SPM = Path(__file__).parent / "fixtures" / "tokenizer" / "spm_t5layout.model"


def build_store(root: Path, count: int = len(SCENES), window: float | None = 2.0, **embed: object) -> tuple[Path, Path]:
    """A tiny LvT model (with tokenizer) and a store of `count` shape videos embedded with it (decoded in this
    process); returns ``(model folder, store folder)``. The videos are in ``root / "videos"``."""
    from _checkpoints import save_tiny_clip_model

    from videoprism.collection import embed_videos

    model = save_tiny_clip_model(root / "model", SPM)
    videos = make_shape_videos(root / "videos", count)
    store = root / "store"
    embed_videos(videos, store, model, window=window, workers=0, batch_size=4, progress=False, **embed)
    return model, store
