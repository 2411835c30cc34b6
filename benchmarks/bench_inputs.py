"""Video inputs: decode + sample 16 frames + preprocess, ours against decoding every frame, in one run.

    python benchmarks/bench_inputs.py            # a 10 s and a 3-minute 640x360 H.264 clip (generated once)

Rows: our path (`VideoPrismVideoProcessor` on the file: only the sampled frames are decoded, seeking between
keyframes), the same sampling after decoding every frame with PyAV, and transformers 5.23's video processor on the
16 decoded frames where it runs (it needs torchvision). Medians over repeats, ms per clip.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from videoprism import VideoPrismVideoProcessor
from videoprism.video_io import sample_frame_indices


def make_clip(path: Path, seconds: int, fps: int = 30, size: tuple[int, int] = (640, 360)) -> Path:
    """H.264 with x264's default keyframe interval (250), moving colour gradients."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            frame = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], axis=-1).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def decode_everything(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def transformers_processor():
    try:
        from transformers import VideoPrismVideoProcessor as HFProcessor

        processor = HFProcessor(size={"height": 288, "width": 288}, do_normalize=False)
        processor(videos=[np.zeros((16, 36, 64, 3), np.uint8)], return_tensors="pt")
        return processor, None
    except Exception as err:  # missing torchvision and the like: report why it did not run
        return None, f"{type(err).__name__}: {str(err).splitlines()[0][:80]}"


def main() -> None:
    ours = VideoPrismVideoProcessor(num_frames=16)
    hf, hf_reason = transformers_processor()
    folder = Path(tempfile.mkdtemp(prefix="videoprism-inputs-"))
    print(
        "| clip | our path (decode 16 + preprocess) | decode all + sample + preprocess | ratio | "
        "preprocess only (16 frames) | transformers processor (16 frames) |"
    )
    print("|---|---|---|---|---|---|")
    for name, seconds, repeats in (("10 s 640x360", 10, 5), ("3 min 640x360", 180, 3)):
        path = make_clip(folder / f"{seconds}s.mp4", seconds)

        def full(path=path):
            frames = decode_everything(path)
            return ours(frames[sample_frame_indices(len(frames), 16)], return_tensors="pt")

        everything = decode_everything(path)
        sampled = everything[sample_frame_indices(len(everything), 16)]
        ms_ours = timed(lambda path=path: ours(str(path), return_tensors="pt"), repeats)
        ms_full = timed(full, repeats)
        ms_pre = timed(lambda sampled=sampled: ours(sampled, return_tensors="pt"), repeats)
        if hf is not None:
            ms_hf = f"{timed(lambda sampled=sampled: hf(videos=[sampled], return_tensors='pt'), repeats):.0f} ms"
        else:
            ms_hf = f"n/a ({hf_reason})"
        print(
            f"| {name} | {ms_ours:.0f} ms | {ms_full:.0f} ms | {ms_full / ms_ours:.1f}x | {ms_pre:.0f} ms | {ms_hf} |"
        )


if __name__ == "__main__":
    main()
