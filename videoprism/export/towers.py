"""Exports the towers of a VideoPrism checkpoint as ONNX graphs or `torch.export` programs, one file per tower.

Each tower is traced with the eager (reference) attention, so the exported graph computes the original's soft-capped
attention step by step. The batch dimension stays dynamic; the frame count, frame size and text length are fixed at
export time (the position embeddings are resized to them once, inside the traced graph). OUT_DIR receives the model
files, the processor's settings and tokenizer files, and `export_manifest.json` describing every file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..collection.embedder import DTYPES
from ..errors import (
    ExportDependencyError,
    ExportDirectoryNotEmptyError,
    ExportError,
    ExportSettingsError,
    TowerNotInCheckpointError,
    UnknownExportFormatError,
    UnknownTowerError,
)
from ..modeling import (
    VideoPrismClipModel,
    VideoPrismForVideoClassification,
    VideoPrismPreTrainedModel,
    VideoPrismTextModel,
    VideoPrismVideoModel,
    VideoPrismVisionModel,
)
from .commands import DEFAULT_OPSET, MANIFEST_NAME

FORMATS = ("onnx", "torch-export")
TOWERS = ("vision", "video", "text")
MIN_OPSET = 17
# ONNX files hold their weights inline up to this size; bigger ones put them in `<file>.data` (protobuf's 2 GB limit).
INLINE_WEIGHTS_BYTES = 1536 * 2**20
# Batch size of the example inputs the graphs are traced with (2: a batch of 1 would be taken for a constant).
TRACE_BATCH = 2
# Largest example video the tracer is given; a bigger frame count or size is refused before anything is allocated.
MAX_EXAMPLE_BYTES = 2 * 2**30
INSTALL_HINT = 'pip install "videoprism[export]"'
_SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2"}


# ----------------------------------------------------------------------------------------------------------------
# The towers as traceable modules: tensors in, named tensors out, every input required


class VisionTower(nn.Module):
    """`VideoPrismVisionModel` tokens: (pixel_values_videos, frame_mask) -> {"last_hidden_state": (B, T*N, D)}."""

    output_names = ("last_hidden_state",)

    def __init__(self, model: VideoPrismVisionModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values_videos: torch.Tensor, frame_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(pixel_values_videos, frame_mask, interpolate_pos_encoding=True)
        return {"last_hidden_state": out.last_hidden_state}


class VideoTower(nn.Module):
    """The LvT video tower: -> {"video_embeds": (B, D), "frame_embeds": (B, T, D)}."""

    output_names = ("video_embeds", "frame_embeds")

    def __init__(self, model: VideoPrismVideoModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values_videos: torch.Tensor, frame_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(pixel_values_videos, frame_mask, interpolate_pos_encoding=True, return_frame_embeds=True)
        return {"video_embeds": out.pooler_output, "frame_embeds": out.frame_embeds}


class TextTower(nn.Module):
    """The LvT text tower: (input_ids, attention_mask) -> {"text_embeds": (B, D)}."""

    output_names = ("text_embeds",)

    def __init__(self, model: VideoPrismTextModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"text_embeds": self.model(input_ids, attention_mask).pooler_output}


def available_towers(model: VideoPrismPreTrainedModel) -> dict[str, VideoPrismPreTrainedModel]:
    """The towers a loaded model holds, by name: an LvT model has all three, a video-only encoder only "vision"."""
    if isinstance(model, VideoPrismClipModel):
        video = model.video_model
        return {"vision": video.vision_model, "video": video, "text": model.text_model}
    if isinstance(model, VideoPrismVideoModel):
        return {"vision": model.vision_model, "video": model}
    if isinstance(model, VideoPrismForVideoClassification):
        return {"vision": model.vision_model}
    if isinstance(model, VideoPrismVisionModel):
        return {"vision": model}
    if isinstance(model, VideoPrismTextModel):
        return {"text": model}
    raise ExportError(f"cannot export a {type(model).__name__}; pass a VideoPrism model or checkpoint")


# ----------------------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class ExportShapes:
    """What the exported graphs are fixed to (the batch stays free)."""

    num_frames: int
    image_size: int
    text_length: int


def _check_choice(value: str, choices, what: str, error: type[ExportError], hint: str = "") -> str:
    if value not in choices:
        raise error(f"unknown {what} {value!r}; choose one of {', '.join(choices)}{hint}")
    return value


def _check_positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExportSettingsError(f"{what} must be a positive integer, got {value!r}")
    return value


def resolve_towers(tower: str, available: dict[str, Any], source: str) -> list[str]:
    """The tower names `tower` asks for ("all": every tower the checkpoint has), checked against `available`."""
    _check_choice(tower, (*TOWERS, "all"), "tower", UnknownTowerError)
    if tower == "all":
        return [name for name in TOWERS if name in available]
    if tower not in available:
        kinds = {"text": "a video-only checkpoint", "video": "a checkpoint without the LvT video head (pooler)"}
        raise TowerNotInCheckpointError(
            f"{source!r} has no {tower} tower ({kinds.get(tower, 'a text-only checkpoint')}); it holds "
            f"{', '.join(available)}: pass --tower {' or '.join(available)} (or all), or export an LvT checkpoint "
            "(videoprism-lvt-*) for the text and video towers"
        )
    return [tower]


def resolve_shapes(
    towers: dict[str, VideoPrismPreTrainedModel],
    num_frames: int | None,
    size: int | None,
    text_length: int | None,
    tokenizer_max_length: int | None,
) -> ExportShapes:
    """Frame count and size (default: the model's own, so no interpolation) and text length, validated."""
    video = next((towers[name] for name in ("vision", "video") if name in towers), None)
    frames = image = 0
    if video is not None:
        config = video.config
        frames = _check_positive(config.num_frames if num_frames is None else num_frames, "num_frames")
        image = _check_positive(config.image_size if size is None else size, "size")
        if image % config.patch_size:
            raise ExportSettingsError(
                f"size {image} is not a multiple of the patch size {config.patch_size}; pick e.g. "
                f"{max(1, image // config.patch_size) * config.patch_size}"
            )
        example_bytes = TRACE_BATCH * frames * config.num_channels * image * image * 4
        if example_bytes > MAX_EXAMPLE_BYTES:
            raise ExportSettingsError(
                f"{frames} frames of {image}x{image} pixels make a {example_bytes / 2**30:.1f} GiB example input to "
                f"trace (limit {MAX_EXAMPLE_BYTES / 2**30:.0f} GiB); export fewer frames or smaller frames"
            )
    length = 0
    text = towers.get("text")
    if text is not None:
        limit = text.config.max_position_embeddings
        default = min(limit, tokenizer_max_length) if tokenizer_max_length else limit
        length = _check_positive(default if text_length is None else text_length, "text_length")
        if length > limit:
            raise ExportSettingsError(
                f"text_length {length} exceeds the text tower's {limit} positions; pass <= {limit}"
            )
    return ExportShapes(frames, image, length)


# ----------------------------------------------------------------------------------------------------------------
# Inputs and outputs of each tower


def example_inputs(tower: str, model: VideoPrismPreTrainedModel, shapes: ExportShapes, batch: int = TRACE_BATCH):
    """Example inputs (random pixels / ids, all-real masks) in the order the tower takes them."""
    generator = torch.Generator().manual_seed(0)
    if tower == "text":
        ids = torch.randint(1, model.config.vocab_size, (batch, shapes.text_length), generator=generator)
        return ids, torch.ones(batch, shapes.text_length, dtype=torch.int64)
    size = shapes.image_size
    pixels = torch.rand(batch, shapes.num_frames, model.config.num_channels, size, size, generator=generator)
    return pixels, torch.ones(batch, shapes.num_frames, dtype=torch.int64)


def input_specs(tower: str, model: VideoPrismPreTrainedModel, shapes: ExportShapes) -> list[dict[str, Any]]:
    if tower == "text":
        return [
            {"name": "input_ids", "shape": ["batch", shapes.text_length], "dtype": "int64",
             "meaning": "token ids, right-padded with 0 (the tokenizer's input_ids)"},
            {"name": "attention_mask", "shape": ["batch", shapes.text_length], "dtype": "int64",
             "meaning": "1 = real token, 0 = padding (the tokenizer's attention_mask)"},
        ]  # fmt: skip
    size, frames = shapes.image_size, shapes.num_frames
    return [
        {"name": "pixel_values_videos", "shape": ["batch", frames, model.config.num_channels, size, size],
         "dtype": "float32", "meaning": "RGB in [0, 1], (B, T, C, H, W): the video processor's pixel_values_videos"},
        {"name": "frame_mask", "shape": ["batch", frames], "dtype": "int64",
         "meaning": "1 = real frame, 0 = padded frame; all ones for full clips"},
    ]  # fmt: skip


def output_specs(tower: str, model: VideoPrismPreTrainedModel, shapes: ExportShapes, dtype: str):
    width = model.config.hidden_size
    if tower == "text":
        shape = {"text_embeds": ["batch", width]}
    elif tower == "video":
        shape = {"video_embeds": ["batch", width], "frame_embeds": ["batch", shapes.num_frames, width]}
    else:
        tokens = shapes.num_frames * (shapes.image_size // model.config.patch_size) ** 2
        shape = {"last_hidden_state": ["batch", tokens, width]}
    return [{"name": name, "shape": dims, "dtype": dtype} for name, dims in shape.items()]


def tower_module(tower: str, model: VideoPrismPreTrainedModel) -> nn.Module:
    wrapper = {"vision": VisionTower, "video": VideoTower, "text": TextTower}[tower]
    return wrapper(model).eval()


def _dynamic_batch(tower: str) -> dict[str, dict[int, Any]]:
    batch = torch.export.Dim("batch", min=1, max=2**20)
    names = ("input_ids", "attention_mask") if tower == "text" else ("pixel_values_videos", "frame_mask")
    return {name: {0: batch} for name in names}


# ----------------------------------------------------------------------------------------------------------------
# Writing


def require_onnx() -> None:
    """Raises ExportDependencyError, with the install command, when the ONNX exporter's packages are missing."""
    missing = []
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportDependencyError(
            f"exporting to ONNX needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed: {INSTALL_HINT} (or use --format torch-export)"
        )


def trace(tower: str, model: VideoPrismPreTrainedModel, shapes: ExportShapes) -> torch.export.ExportedProgram:
    """The tower as a `torch.export` program with a dynamic batch dimension."""
    module = tower_module(tower, model)
    with torch.no_grad():
        return torch.export.export(module, example_inputs(tower, model, shapes), dynamic_shapes=_dynamic_batch(tower))


def write_onnx(tower: str, model: VideoPrismPreTrainedModel, shapes: ExportShapes, path: Path, opset: int) -> list[str]:
    """Writes the tower as ONNX (torch.export based exporter); returns the files written (graph, then weights if
    they do not fit inline)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    external = weights > INLINE_WEIGHTS_BYTES
    inputs = input_specs(tower, model, shapes)
    outputs = output_specs(tower, model, shapes, "")
    with torch.no_grad(), warnings.catch_warnings():
        # One batch Dim shared by both inputs: the exporter notes that it names the axis once.
        warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints.*")
        # torch's own exporter still calls a pytree check it deprecates; nothing for a user to act on.
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)", category=FutureWarning)
        onnx_program = torch.onnx.export(
            tower_module(tower, model),
            example_inputs(tower, model, shapes),
            input_names=[i["name"] for i in inputs],
            output_names=[o["name"] for o in outputs],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=_dynamic_batch(tower),
            external_data=external,
            verbose=False,
        )
    onnx_program.save(str(path), external_data=external)
    return sorted((p.name for p in path.parent.iterdir() if p.name.startswith(path.name)), key=len)


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportDirectoryNotEmptyError(f"{str(out_dir)!r} exists and is not a folder; choose another OUT_DIR")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ExportDirectoryNotEmptyError(
            f"{str(out_dir)!r} is not empty; choose a new folder, or pass --overwrite (overwrite=True) to replace the "
            "files this export writes"
        )


def _load(model, config, dtype: torch.dtype) -> tuple[VideoPrismPreTrainedModel, str]:
    if isinstance(model, VideoPrismPreTrainedModel):
        source = getattr(model, "name_or_path", type(model).__name__)
        if model.dtype != dtype:
            import copy

            model = copy.deepcopy(model).to(dtype)
        return model, str(source)
    from ..auto import load_model

    return load_model(model, config=config, dtype=dtype), str(model)


def _source_processor(source: Any, processor: Any):
    """The processor given, else the checkpoint's own (video settings and tokenizer), else the default one."""
    from ..processing import VideoPrismProcessor

    if processor is not None:
        return processor
    if isinstance(source, (str, os.PathLike)):
        return VideoPrismProcessor.from_pretrained(source)
    return VideoPrismProcessor()


def _fitted_processor(processor: Any, shapes: ExportShapes, has_video: bool):
    """`processor` with its video settings set to the exported frame count and size."""
    from ..processing import VideoPrismProcessor
    from ..video_processing import VideoPrismVideoProcessor

    if not has_video:
        return processor
    settings = processor.video_processor.to_dict() | {"num_frames": shapes.num_frames, "size": shapes.image_size}
    return VideoPrismProcessor(VideoPrismVideoProcessor.from_dict(settings), processor.tokenizer)


def export_model(
    model: str | os.PathLike | VideoPrismPreTrainedModel,
    out_dir: str | os.PathLike,
    format: str = "onnx",
    tower: str = "all",
    dtype: str = "float32",
    num_frames: int | None = None,
    size: int | None = None,
    text_length: int | None = None,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    config: Any = None,
    processor: Any = None,
) -> dict[str, Any]:
    """Exports the towers of `model` into `out_dir`, self-contained (graphs, processor, tokenizer, manifest).

    Args:
        model: A checkpoint (preset, hub repo id, folder, `.npz` / `.safetensors` file) or a loaded model.
        out_dir: Folder to write; must be new or empty unless `overwrite`.
        format: "onnx" (`<tower>.onnx`) or "torch-export" (`<tower>.pt2`, for `torch.export.load`).
        tower: "vision" (encoder tokens), "video" (LvT video embedding), "text" (LvT text embedding) or "all" (every
            tower the checkpoint holds).
        dtype: Weight dtype of the exported graphs: "float32", "bfloat16" or "float16".
        num_frames: Frames per clip the graphs take (default: the model's); fixed in the graph.
        size: Frame side in pixels (default: the model's); fixed in the graph.
        text_length: Token ids per text (default: the tokenizer's max length, 64); fixed in the graph.
        opset: ONNX opset (>= 17).
        overwrite: Write into a non-empty `out_dir`, replacing files of the same names.
        config: Config for a checkpoint that carries none (a preset name or config object).
        processor: A `VideoPrismProcessor` to save beside the graphs (default: the checkpoint's own).

    Returns:
        The manifest written to `out_dir/export_manifest.json`.
    """
    _check_choice(format, FORMATS, "format", UnknownExportFormatError)
    _check_choice(tower, (*TOWERS, "all"), "tower", UnknownTowerError)
    _check_choice(dtype, DTYPES, "dtype", ExportSettingsError)
    if format == "onnx":
        if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
            raise ExportSettingsError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r}")
        require_onnx()
    for value, what in ((num_frames, "num_frames"), (size, "size"), (text_length, "text_length")):
        if value is not None:
            _check_positive(value, what)
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)

    loaded, source = _load(model, config, DTYPES[dtype])
    available = available_towers(loaded)
    names = resolve_towers(tower, available, source)
    towers = {name: available[name] for name in names}
    processor = _source_processor(model, processor)
    tokenizer = processor.tokenizer
    shapes = resolve_shapes(towers, num_frames, size, text_length, tokenizer.model_max_length if tokenizer else None)
    processor = _fitted_processor(processor, shapes, shapes.num_frames > 0)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    files = []
    with tempfile.TemporaryDirectory(prefix=".videoprism-export-", dir=out_dir.parent) as tmp:
        staging = Path(tmp)
        for name, tower_model in towers.items():
            previous = tower_model.attn_implementation
            tower_model.set_attn_implementation("eager")  # the reference arithmetic, traceable op by op
            path = staging / f"{name}{_SUFFIX[format]}"
            try:
                if format == "onnx":
                    written = write_onnx(name, tower_model, shapes, path, opset)
                else:
                    torch.export.save(trace(name, tower_model, shapes), str(path))
                    written = [path.name]
            finally:
                tower_model.set_attn_implementation(previous)
            inputs = input_specs(name, tower_model, shapes)
            outputs = output_specs(name, tower_model, shapes, dtype)
            files.append({"file": path.name, "tower": name, "data_files": written[1:], "inputs": inputs,
                          "outputs": outputs})  # fmt: skip
        processor_files = [Path(p).name for p in processor.save_pretrained(staging)]
        manifest = _manifest(format, source, loaded, towers, shapes, dtype, opset, files, processor_files, tokenizer)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            target = out_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    return manifest


def _manifest(format, source, loaded, towers, shapes, dtype, opset, files, processor_files, tokenizer) -> dict:
    from .. import __version__

    fixed = []
    if "vision" in towers or "video" in towers:
        vision = next(towers[name] for name in ("vision", "video") if name in towers).config
        fixed.append(
            f"{shapes.num_frames} frames of {shapes.image_size}x{shapes.image_size} pixels: the position embeddings "
            f"(trained for {vision.num_frames} frames of {vision.image_size}x{vision.image_size}) are resized to them "
            "inside the graph; other frame counts or sizes need a new export"
        )
    if "text" in towers:
        fixed.append(f"{shapes.text_length} tokens per text: pad or truncate to exactly that (the tokenizer does)")
    return {
        "format": format,
        "source": source,
        "model_class": type(loaded).__name__,
        "towers": list(towers),
        "dtype": dtype,
        "opset": opset if format == "onnx" else None,
        "num_frames": shapes.num_frames or None,
        "image_size": shapes.image_size or None,
        "text_length": shapes.text_length or None,
        "dynamic_axes": ["batch"],
        "fixed_at_export": fixed,
        "attention": "eager reference arithmetic (soft-capped logits, masked fill, fp32 softmax), no fused kernels",
        "files": files,
        "processor_files": processor_files,
        "tokenizer": tokenizer is not None,
        "torch_version": torch.__version__,
        "videoprism_version": __version__,
    }


# ----------------------------------------------------------------------------------------------------------------
# Command line
