"""Every exception the package raises on purpose, in one place; each is also importable from `videoprism`.

All of them derive from a built-in exception (ValueError, FileNotFoundError, ...), so code that catches those keeps
working. The command line maps them to exit codes in one table (`videoprism.cli.EXIT_CODES`).
"""

from __future__ import annotations

# Checkpoints, configs, tokenizer, processors


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


class SourceNotFoundError(FileNotFoundError):
    """The source is neither an existing local path nor a hub repo that can be reached."""


class ConfigError(CheckpointError):
    """A model config (``config.json`` or a config dict) that is not an object of fields of the right types and
    ranges; the message names the field."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint source names nothing that exists (locally or on the hub)."""


class TokenizerNotFoundError(FileNotFoundError):
    """A checkpoint source holds no tokenizer files (`spiece.model` / `tokenizer.json`)."""


class VideoInputError(ValueError):
    """A video given to the processor has the wrong type, shape, dtype or values."""


class TextInputError(ValueError):
    """A text input (query, label, prompt template) that cannot be used: not valid Unicode, or a template without
    exactly one ``{}``."""


class DeviceError(ValueError):
    """A device that does not exist on this machine or cannot run the model (``cuda`` without CUDA, ``meta``)."""


class WriteError(OSError):
    """A file or folder could not be written (disk full, read-only folder, a file in the way); what was written
    before is kept."""


class UsageError(Exception):
    """A command-line mistake: printed with exit code 2."""


# Embedding store


class StoreError(ValueError):
    """Base class of the errors raised by the embedding store."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """There is no embedding store at the given path."""


class StoreCorruptedError(StoreError):
    """The store's files are unreadable or inconsistent."""


class StoreMismatchError(StoreError):
    """The store holds embeddings of another model, dimension or frame count than requested."""


class StoreLockedError(StoreError):
    """Another process holds the store's writer lock."""


class EmptyStoreError(StoreError):
    """The store has no embeddings to search."""


# Collection tools and decoding


class VideoInputNotFoundError(FileNotFoundError):
    """An input names no existing file or folder, a glob matches nothing, or an ``@list`` file is unreadable."""


class NoVideosFoundError(ValueError):
    """The inputs hold no video files."""


class EmbedSettingsError(ValueError):
    """Invalid embedding settings, or settings that differ from those the store was written with."""


class DecodingWorkerError(RuntimeError):
    """The decoding worker processes keep exiting before they read any video."""


class RayNotInstalledError(ImportError):
    """Ray (with Ray Data) is not installed, and the Ray engine needs it."""


class VideoDecodeError(ValueError):
    """A video could not be opened or decoded. The message names the source and the cause."""


# Serving


class ItemNotFoundError(LookupError):
    """No live row of the store has the requested id (or its file is gone)."""


class QueryError(ValueError):
    """A query the store's model cannot answer (e.g. text against a video-only model) or malformed labels."""


# Probes and classifiers trained on frozen features


class LabelledSetError(ValueError):
    """A labelled video set that cannot be used as it is."""


class LabelledSetNotFoundError(FileNotFoundError):
    """The labelled set names no existing folder or file."""


class EmptyClassError(LabelledSetError):
    """A class folder holds no video file."""


class LabelColumnsError(LabelledSetError):
    """A list file lacks a required column or has an unknown one."""


class EmptyLabelledSetError(LabelledSetError):
    """The set holds no labelled video: an empty file, a header without rows, a folder without class folders."""


class SingleClassError(LabelledSetError):
    """The set has only one class: nothing to tell apart."""


class TimeRangeError(LabelledSetError):
    """A ``start`` / ``end`` that is not a number, is negative, or does not have ``end > start``."""


class EmptyLabelError(LabelledSetError):
    """A row whose label (or one of its ``|``-separated labels) is empty."""


class UnknownLabelError(LabelledSetError):
    """A label that is not among the classes the set is scored against."""


class SplitError(LabelledSetError):
    """Split or few-shot settings the set cannot satisfy."""


class FeatureSettingsError(ValueError):
    """Invalid feature extraction settings (cache kind, batch size, a grid the pooling does not divide)."""


class FeatureCacheError(ValueError):
    """A feature cache folder that is damaged, was written by something else, or is in use by another process."""


class FeatureExtractionError(RuntimeError):
    """No clip of the set could be decoded."""


class NotAClassifierError(ValueError):
    """A model folder that holds no trained classifier (no `id2label`)."""


class ProbeSettingsError(ValueError):
    """Training settings or features a probe cannot train with (named, with what to change)."""


class ProbeResumeError(ValueError):
    """An output folder holds a checkpoint of a different training run."""


# Export of the towers (ONNX, torch.export)


class ExportError(ValueError):
    """An export that cannot run as asked; the message says what to change."""


class UnknownExportFormatError(ExportError):
    """The format is neither "onnx" nor "torch-export"."""


class UnknownTowerError(ExportError):
    """The tower is none of vision, video, text, all."""


class TowerNotInCheckpointError(ExportError):
    """The checkpoint does not hold the tower asked for (e.g. a text tower of a video-only checkpoint)."""


class ExportDirectoryNotEmptyError(ExportError):
    """OUT_DIR exists and holds files, and overwriting was not asked for."""


class ExportDependencyError(ExportError):
    """onnx / onnxscript (needed to write ONNX) are not installed."""


class ExportSettingsError(ExportError):
    """A frame count, frame size, text length, dtype or opset the export cannot use."""
