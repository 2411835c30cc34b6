"""Video pre-processing as in the original VideoPrism demos: sample frames, resize with PIL Lanczos, divide by 255.

The original decodes all frames, keeps `floor(linspace(0, n, T, endpoint=False))` of them, resizes each uint8 frame
to 288x288 with PIL's Lanczos filter (mediapy) and divides by 255: no mean/std normalisation. The settings are
saved as `video_preprocessor_config.json` with transformers' field names.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ._sources import ModelSource, resolve_source
from .encoding import BatchEncoding
from .errors import VideoInputError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

VIDEO_PROCESSOR_CONFIG_NAME = "video_preprocessor_config.json"
_LEGACY_CONFIG_NAME = "preprocessor_config.json"
RESIZE_MODES = ("squash", "center_crop", "pad")
#: Largest accepted frame side and frame count: far above the models' 288 pixels and 16 frames, and below sizes whose
#: pixel arrays alone would fill a machine's memory.
MAX_FRAME_SIDE = 8192
MAX_NUM_FRAMES = 4096
_RESAMPLE_FILTERS = {int(f) for f in Image.Resampling}


@dataclass
class _Video:
    """One video of a batch, before sampling: `frames` is a (T, H, W, 3) array, a (T, 3, H, W) tensor or a list."""

    frames: Any
    kind: str  # "hwc" (numpy channels-last), "chw" (torch channels-first) or "pil"
    where: str

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, i: int) -> Image.Image | np.ndarray:
        """Frame `i` as a PIL image or a (H, W, 3) uint8 array."""
        frame = self.frames[i]
        if self.kind == "pil":
            return frame if frame.mode == "RGB" else frame.convert("RGB")
        if self.kind == "chw":
            frame = frame.detach()
            frame = (frame.float() if frame.is_floating_point() else frame).permute(1, 2, 0).cpu().numpy()
        if frame.dtype != np.uint8:
            frame = _float_to_uint8(frame, f"{self.where} frame {i}")
        return np.ascontiguousarray(frame)


def _float_to_uint8(frame: np.ndarray, where: str) -> np.ndarray:
    """Float pixels in [0, 1] -> uint8 as round(x * 255): the original resizes uint8 frames."""
    if frame.dtype.itemsize < 4:  # x * 255 in float16 would round before rint does
        frame = frame.astype(np.float32)
    if not np.isfinite(frame).all():
        raise VideoInputError(f"{where} holds NaN or infinite values")
    low, high = float(frame.min()), float(frame.max())
    if low < -1e-3 or high > 1 + 1e-3:
        hint = " (it looks like 0..255: pass uint8, or divide by 255)" if high > 1.5 else ""
        raise VideoInputError(
            f"{where} has float values in [{low:.4g}, {high:.4g}]; float pixels must lie in [0, 1]{hint}"
        )
    return np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)


def _is_decoded_video(obj: Any) -> bool:
    # Duck-typed so that video_io (and PyAV) is imported only for paths.
    return isinstance(getattr(obj, "frames", None), np.ndarray) and hasattr(obj, "num_frames_total")


def _loaded_torch() -> Any:
    """torch when this process has imported it, else None. Only then can an input be a torch tensor, and decoding
    processes, which pre-process frames with numpy and PIL alone, never import it (seconds and hundreds of MB)."""
    return sys.modules.get("torch")


def _is_tensor(obj: Any) -> bool:
    torch = _loaded_torch()
    return torch is not None and isinstance(obj, torch.Tensor)


def _describe(obj: Any) -> str:
    if isinstance(obj, np.ndarray) or _is_tensor(obj):
        return f"{type(obj).__name__} of shape {tuple(obj.shape)} and dtype {obj.dtype}"
    return type(obj).__name__


class VideoPrismVideoProcessor:
    """Turns videos into the `pixel_values_videos` (B, T, 3, H, W) float32 in [0, 1] that VideoPrism takes.

    Accepted videos: a file path, URL or encoded bytes (decoded with `videoprism.video_io.read_video`, only the
    needed frames), a `DecodedVideo`, a numpy array (T, H, W, 3) of uint8 or floats in [0, 1], a torch tensor
    (T, 3, H, W) of uint8 or floats in [0, 1], or a list of PIL images (one video). A list of any of these (or a
    5-D array/tensor) is a batch.

    Args:
        num_frames: Frames per video, sampled as `floor(linspace(0, n, num_frames, endpoint=False))` (a short video
            repeats frames).
        size: Output frame size, `{"height": H, "width": W}` (or an int for a square).
        do_resize: Resize the frames (without it all frames must already share one size).
        resample: PIL resampling filter (an `Image.Resampling` value; LANCZOS = 1 is the original's).
        do_rescale: Multiply by `rescale_factor`.
        rescale_factor: 1/255 maps uint8 to [0, 1].
        do_normalize: Subtract `image_mean` and divide by `image_std` per channel (VideoPrism does not).
        image_mean: Per-channel mean (3 values) when `do_normalize`.
        image_std: Per-channel std (3 values) when `do_normalize`.
        resize_mode: "squash" resizes to `size` ignoring the aspect ratio (the original demos); "center_crop"
            resizes the short side and crops the centre (the original classification demo); "pad" resizes the
            long side and pads with black, centred.
    """

    model_input_names = ("pixel_values_videos",)

    def __init__(
        self,
        num_frames: int = 16,
        size: dict[str, int] | int | Sequence[int] | None = None,
        do_resize: bool = True,
        resample: int = int(Image.Resampling.LANCZOS),
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = False,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        resize_mode: str = "squash",
    ):
        self.num_frames = _check_num_frames(num_frames)
        self.size = _check_size(size if size is not None else {"height": 288, "width": 288})
        self.do_resize = bool(do_resize)
        self.resample = _check_resample(resample)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        if self.do_rescale and not self.rescale_factor > 0:
            raise ValueError(f"rescale_factor must be positive, got {rescale_factor!r}")
        self.do_normalize = bool(do_normalize)
        self.image_mean = None if image_mean is None else [float(v) for v in image_mean]
        self.image_std = None if image_std is None else [float(v) for v in image_std]
        if self.do_normalize:
            for name, value in (("image_mean", self.image_mean), ("image_std", self.image_std)):
                if value is None or len(value) != 3:
                    raise ValueError(f"do_normalize=True needs {name} with 3 values (one per channel), got {value}")
            if any(v == 0 for v in self.image_std):
                raise ValueError(f"image_std must not contain 0, got {self.image_std}")
        self.resize_mode = _check_resize_mode(resize_mode)

    # ------------------------------------------------------------------------------------------------------------
    # Settings

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_frames": self.num_frames,
            "size": dict(self.size),
            "do_resize": self.do_resize,
            "resample": self.resample,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "resize_mode": self.resize_mode,
            "do_sample_frames": True,  # transformers' flag for "sample num_frames frames"; we always do
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> VideoPrismVideoProcessor:
        """Builds a processor from a config dict (ours or transformers'; keys that do not apply are ignored)."""
        names = (
            "num_frames",
            "size",
            "do_resize",
            "resample",
            "do_rescale",
            "rescale_factor",
            "do_normalize",
            "image_mean",
            "image_std",
            "resize_mode",
        )
        kwargs = {k: data[k] for k in names if k in data and data[k] is not None}
        kwargs.update(overrides)
        return cls(**kwargs)

    def save_pretrained(self, folder: str | os.PathLike) -> str:
        """Writes `video_preprocessor_config.json` into `folder`; returns its path."""
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(os.fspath(folder), VIDEO_PROCESSOR_CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        return path

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike | ModelSource,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        **overrides: Any,
    ) -> VideoPrismVideoProcessor:
        """Loads the settings of a folder, hub repo or `.json` file; without a config file, the original's defaults.

        Without a config, a released checkpoint's preset sets `num_frames` (8 for the large models, 16 otherwise).

        Args:
            source: A folder, a hub repo id, a preset name, a checkpoint file (its folder is searched), or a
                `video_preprocessor_config.json` path, or a `ModelSource` from `resolve_source`.
            revision: Hub branch, tag, commit or ref such as `refs/pr/4`.
            cache_dir: Hub cache folder.
            overrides: Settings replacing the loaded ones, e.g. `num_frames=8`.
        """
        from .configuration import PRESETS

        resolved = resolve_source(source, revision, cache_dir)
        config_file = resolved.find_file(
            [VIDEO_PROCESSOR_CONFIG_NAME, _LEGACY_CONFIG_NAME], lambda path: path.endswith(".json")
        )
        if config_file is None:
            preset = PRESETS.get(resolved.preset) if resolved.preset else None
            data = {"num_frames": preset.vision["num_frames"]} if preset is not None else {}
            logger.info("%s has no %s; using the original pre-processing", resolved, VIDEO_PROCESSOR_CONFIG_NAME)
        else:
            try:
                with open(config_file, encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(f"{config_file} is not a readable JSON file ({err})") from err
            if not isinstance(data, dict):
                raise ValueError(f"{config_file} holds a {type(data).__name__}; expected a JSON object")
        try:
            return cls.from_dict(data, **overrides)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{config_file or resolved}: invalid video processor settings ({err})") from err

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "do_sample_frames")
        return f"{type(self).__name__}({settings})"

    # ------------------------------------------------------------------------------------------------------------
    # Processing

    def __call__(
        self,
        videos: Any,
        return_tensors: str | None = None,
        num_frames: int | None = None,
        size: dict[str, int] | int | Sequence[int] | None = None,
        resize_mode: str | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
        do_sample_frames: bool = True,
    ) -> BatchEncoding:
        """Samples, resizes and rescales a video or a batch of videos.

        Args:
            videos: A video or a list of videos (see the class docstring for the accepted forms).
            return_tensors: "pt" for a torch tensor; None or "np" for a numpy array.
            num_frames: Frames per video (default: the processor's).
            size: Output frame size (default: the processor's).
            resize_mode: "squash", "center_crop" or "pad" (default: the processor's).
            start_time: Seconds; for paths only, decode from here.
            end_time: Seconds; for paths only, decode up to here.
            do_sample_frames: Sample `num_frames` frames from each video; False takes every frame as given (for
                clips already sampled, e.g. by `read_video`: every video must then hold `num_frames` frames).

        Returns:
            A `BatchEncoding` with `pixel_values_videos` of shape (B, T, 3, H, W), float32.
        """
        if return_tensors not in (None, "np", "pt"):
            raise ValueError(f"return_tensors={return_tensors!r}; use None, 'np' or 'pt'")
        num_frames = self.num_frames if num_frames is None else _check_num_frames(num_frames)
        size = self.size if size is None else _check_size(size)
        resize_mode = self.resize_mode if resize_mode is None else _check_resize_mode(resize_mode)
        items = _split_batch(videos)
        if (start_time is not None or end_time is not None) and not all(_is_path(v) for v in items):
            raise VideoInputError("start_time/end_time apply to video files only; slice arrays before passing them")

        tasks = []  # (batch index, time index, video, frame index)
        for b, item in enumerate(items):
            where = "video" if len(items) == 1 and not isinstance(videos, (list, tuple)) else f"videos[{b}]"
            video = _as_video(item, where, num_frames, start_time, end_time)
            if do_sample_frames:
                indices = _sample_indices(len(video), num_frames)
            elif len(video) == num_frames:
                indices = np.arange(num_frames)
            else:
                raise VideoInputError(
                    f"{where} holds {len(video)} frames, not num_frames={num_frames}; pass do_sample_frames=True to "
                    "sample them"
                )
            tasks += [(b, t, video, int(i)) for t, i in enumerate(indices)]
        if self.do_resize:
            height, width = size["height"], size["width"]
        else:
            height, width = _frame_hw(tasks[0][2].frame(tasks[0][3]))
        # uint8 until every frame is resized: float work happens once, on the small output.
        pixels = np.zeros((len(items), num_frames, height, width, 3), dtype=np.uint8)

        def put(task: tuple[int, int, _Video, int]) -> None:
            b, t, video, index = task
            self._put_frame(pixels[b, t], video.frame(index), resize_mode, f"{video.where} frame {index}")

        pool = _thread_pool() if len(tasks) > 1 else None
        for _ in pool.map(put, tasks) if pool is not None else map(put, tasks):
            pass  # consuming the results re-raises a frame's error here
        return BatchEncoding(pixel_values_videos=self._to_float(pixels, return_tensors))

    def preprocess(self, videos: Any, **kwargs: Any) -> BatchEncoding:
        """Same as calling the processor."""
        return self(videos, **kwargs)

    def _put_frame(self, out: np.ndarray, frame: Image.Image | np.ndarray, mode: str, where: str) -> None:
        """Resizes `frame` as `mode` says and writes it into `out` (H, W, 3), which is zero (black) on entry."""
        height, width = out.shape[:2]
        if not self.do_resize:
            if _frame_hw(frame) != (height, width):
                raise VideoInputError(
                    f"{where} is {_frame_hw(frame)}, unlike the first frame {(height, width)}; with do_resize=False "
                    "all frames of a batch must share one size"
                )
            out[...] = np.asarray(frame)
            return
        image = frame if isinstance(frame, Image.Image) else Image.fromarray(frame)
        w, h = image.size
        if mode == "squash":
            out[...] = np.asarray(image.resize((width, height), self.resample))
        elif mode == "center_crop":
            scale = max(width / w, height / h)
            new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
            resized = np.asarray(image.resize((new_w, new_h), self.resample))
            top, left = (new_h - height) // 2, (new_w - width) // 2
            out[...] = resized[top : top + height, left : left + width]
        else:  # pad
            scale = min(width / w, height / h)
            new_w, new_h = min(width, max(1, round(w * scale))), min(height, max(1, round(h * scale)))
            top, left = (height - new_h) // 2, (width - new_w) // 2
            out[top : top + new_h, left : left + new_w] = np.asarray(image.resize((new_w, new_h), self.resample))

    def _to_float(self, pixels: np.ndarray, return_tensors: str | None) -> np.ndarray | torch.Tensor:
        """uint8 (B, T, H, W, 3) -> float32 (B, T, 3, H, W), rescaled and normalised."""
        channels_first = np.ascontiguousarray(pixels.transpose(0, 1, 4, 2, 3))
        if not self.do_rescale:
            out = channels_first.astype(np.float32)
        elif abs(1 / self.rescale_factor - round(1 / self.rescale_factor)) < 1e-9:
            # Dividing by 255 (as the original does) rounds exactly; multiplying by float32(1/255) is 1 ulp off.
            out = np.divide(channels_first, np.float32(round(1 / self.rescale_factor)), dtype=np.float32)
        else:
            out = np.multiply(channels_first, np.float32(self.rescale_factor), dtype=np.float32)
        if self.do_normalize:
            mean = np.asarray(self.image_mean, np.float32).reshape(3, 1, 1)
            std = np.asarray(self.image_std, np.float32).reshape(3, 1, 1)
            out = (out - mean) / std
        if return_tensors != "pt":
            return out
        import torch

        return torch.from_numpy(out)


# ----------------------------------------------------------------------------------------------------------------
# Inputs


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, workers, pool)
_RESIZE_HERE = threading.local()  # `resize_in_this_thread` sets ``on`` in the threads it marks
_RESIZE_THREADS: int | None = None  # set by `set_resize_threads`


def set_resize_threads(count: int | None) -> None:
    """Resizes frames in up to ``count`` threads in this process (at most 4), whatever torch's thread count; None:
    torch's count again. Decoding processes, which do not import torch, say so here."""
    global _RESIZE_THREADS
    _RESIZE_THREADS = count


def resize_in_this_thread() -> None:
    """Makes the calling thread resize its frames itself, not in the shared resize threads: a decoding thread that
    runs at low priority beside the model keeps all its work at that priority."""
    _RESIZE_HERE.on = True


def _thread_pool() -> ThreadPoolExecutor | None:
    """Threads for the per-frame resizes (PIL releases the GIL while resizing); None when torch uses one thread (or
    `set_resize_threads` said one), or in a thread marked by `resize_in_this_thread`.

    torch.get_num_threads() is 1 inside DataLoader workers, so workers stay single-threaded. The pool is made
    again after a fork, whose child would inherit a pool without threads.
    """
    global _POOL
    if getattr(_RESIZE_HERE, "on", False):
        return None
    torch = _loaded_torch()
    threads = _RESIZE_THREADS or (torch.get_num_threads() if torch is not None else os.cpu_count() or 1)
    workers = min(4, threads, os.cpu_count() or 1)
    if workers < 2:
        return None
    if _POOL is None or _POOL[:2] != (os.getpid(), workers):
        _POOL = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="videoprism-resize"))
    return _POOL[2]


def _sample_indices(available: int, num_frames: int) -> np.ndarray:
    """The original's `linspace(0, n, T, endpoint=False)` cast to int (floor); repeats frames when n < T.

    Kept here (equal to `video_io.sample_frame_indices`) so that array inputs never import PyAV.
    """
    return np.linspace(0, available, num_frames, endpoint=False).astype(np.int64)


def _is_path(obj: Any) -> bool:
    """A file path or URL, or an encoded video (bytes): what `read_video` decodes."""
    return isinstance(obj, (str, os.PathLike, bytes, bytearray, memoryview))


def _frame_hw(frame: Image.Image | np.ndarray) -> tuple[int, int]:
    return (frame.size[1], frame.size[0]) if isinstance(frame, Image.Image) else tuple(frame.shape[:2])


def _split_batch(videos: Any) -> list[Any]:
    """The videos of a batch. A list of PIL images is ONE video; a list of anything else is a batch."""
    if isinstance(videos, Image.Image):
        raise VideoInputError("got a single PIL image; a video is a list of frames: pass [image] for one frame")
    if (isinstance(videos, np.ndarray) or _is_tensor(videos)) and videos.ndim == 5:
        if len(videos) == 0:
            raise VideoInputError(f"videos is an empty batch ({_describe(videos)})")
        return list(videos)
    if isinstance(videos, (list, tuple)):
        if len(videos) == 0:
            raise VideoInputError("videos is an empty list; pass at least one video")
        images = [isinstance(v, Image.Image) for v in videos]
        if all(images):
            return [list(videos)]
        if any(images):
            i = images.index(False)
            raise VideoInputError(
                f"videos mixes PIL images with a {_describe(videos[i])} at index {i}; a list of PIL images is one "
                "video, a list of other things is a batch"
            )
        return list(videos)
    return [videos]


def _as_video(item: Any, where: str, num_frames: int, start_time: float | None, end_time: float | None) -> _Video:
    """Checks one video and wraps it for sampling; files are decoded here (only the frames that are needed)."""
    if _is_path(item):
        from .video_io import read_video

        item = read_video(item, num_frames=num_frames, start_time=start_time, end_time=end_time)
    if _is_decoded_video(item):
        item = item.frames
        where = f"{where} (decoded)"
    if isinstance(item, np.ndarray):
        if item.ndim != 4 or item.shape[-1] != 3:
            hint = ""
            if item.ndim == 3 and item.shape[-1] == 3:
                hint = "; for one frame use array[None], for a list of frames np.stack(frames)"
            elif item.ndim == 4 and item.shape[1] == 3:
                hint = "; it looks channels-first: use array.transpose(0, 2, 3, 1)"
            elif item.ndim == 4 and item.shape[-1] in (1, 4):
                hint = "; convert to RGB (e.g. array[..., :3] for RGBA)"
            raise VideoInputError(f"{where} is a {_describe(item)}; expected (T, H, W, 3) RGB frames{hint}")
        _check_dtype(item.dtype, where, item)
        kind = "hwc"
    elif _is_tensor(item):
        if item.ndim != 4 or item.shape[1] != 3:
            hint = ""
            if item.ndim == 4 and item.shape[-1] == 3:
                hint = "; it looks channels-last: use tensor.permute(0, 3, 1, 2) or pass a numpy array"
            raise VideoInputError(f"{where} is a {_describe(item)}; expected (T, 3, H, W) RGB frames{hint}")
        _check_dtype(item.dtype, where, item)
        kind = "chw"
    elif isinstance(item, (list, tuple)):
        bad = [i for i, f in enumerate(item) if not isinstance(f, Image.Image)]
        if bad or not item:
            what = "is empty" if not item else f"holds a {_describe(item[bad[0]])} at index {bad[0]}"
            raise VideoInputError(f"{where} {what}; a video given as a list must be a non-empty list of PIL images")
        kind = "pil"
    else:
        raise VideoInputError(
            f"{where} is a {_describe(item)}; expected a path or URL, a DecodedVideo, a (T, H, W, 3) numpy array, "
            "a (T, 3, H, W) torch tensor or a list of PIL images"
        )
    if kind != "pil" and min(item.shape[:3] if kind == "hwc" else (item.shape[0], *item.shape[2:])) == 0:
        raise VideoInputError(f"{where} is empty ({_describe(item)}); a video needs at least one frame of pixels")
    return _Video(item, kind, where)


def _check_dtype(dtype: np.dtype | torch.dtype, where: str, item: Any) -> None:
    torch = _loaded_torch()
    if torch is not None and isinstance(dtype, torch.dtype):
        if dtype == torch.uint8 or dtype.is_floating_point:
            return
    elif dtype == np.uint8 or np.issubdtype(dtype, np.floating):
        return
    raise VideoInputError(f"{where} is a {_describe(item)}; pixels must be uint8 (0..255) or floats in [0, 1]")


def _check_num_frames(num_frames: Any) -> int:
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if num_frames > MAX_NUM_FRAMES:
        raise ValueError(f"num_frames {num_frames} is over {MAX_NUM_FRAMES}; the models take 8 or 16")
    return int(num_frames)


def _check_size(size: Any) -> dict[str, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        height = width = int(size)
    elif isinstance(size, dict) and "height" in size and "width" in size:
        height, width = int(size["height"]), int(size["width"])
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        height, width = int(size[0]), int(size[1])
    else:
        raise ValueError(f"size must be {{'height': H, 'width': W}}, an int or (H, W); got {size!r}")
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    if max(height, width) > MAX_FRAME_SIDE:
        raise ValueError(f"size {height}x{width} is over {MAX_FRAME_SIDE} pixels a side; the models take 288x288")
    return {"height": height, "width": width}


def _check_resample(resample: Any) -> int:
    if int(resample) not in _RESAMPLE_FILTERS:
        raise ValueError(
            f"resample={resample!r} is not a PIL resampling filter; use one of {sorted(_RESAMPLE_FILTERS)}"
        )
    return int(resample)


def _check_resize_mode(mode: Any) -> str:
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode={mode!r}; use one of {RESIZE_MODES}")
    return mode
