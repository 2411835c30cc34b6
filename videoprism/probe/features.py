"""Frozen-encoder features of a labelled video set, computed once and cached on disk.

`extract_features` runs the clips of a `LabelledSet` through a frozen VideoPrism encoder with the embedding pipeline
of ``videoprism embed`` (the same decoding workers, frame sampling, ``start``/``end`` spans and progress report) and
keeps, per clip, the encoder's token sequence (optionally average-pooled over each frame's patch grid) and its pooled
embedding. The tokens are the vision encoder's output (``last_hidden_state``, for an LvT checkpoint its vision tower's,
before the auxiliary layers); the embedding is the LvT video embedding, a classifier checkpoint's pooler output, or
else the mean of the tokens, L2-normalised as ``videoprism embed`` stores it.

The cache. Each (model, frames, size, weights dtype, cache kind, clips) combination gets a folder in ``cache_dir``
named after a digest of them, holding ``manifest.json`` (the settings, the token grid, and each clip's key: path,
size, mtime, start, end), ``tokens.npy`` (n, T, S, D) float16 (absent for the ``"embedding"`` kind),
``embeddings.npy`` (n, D) float32, ``done.npy`` (n,) uint8 (1: row written, 2: the clip failed) and
``failures.jsonl``. The arrays are preallocated ``.npy`` files written in place, batch by batch, through memory maps,
so memory stays bounded; a row is marked done only after it is flushed to disk, so a killed extraction resumes
where it stopped. A folder whose clips are all done is reused without decoding anything, and rows of other folders
with the same settings (another split of the same videos) are copied instead of computed. When some clips fail to
decode, the rows of the others are copied once into ``tokens-valid.npy`` / ``embeddings-valid.npy``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._sources import resolve_source
from ..collection.clips import ClipSettings
from ..collection.decode_pool import model_decode_pool
from ..collection.embedder import VideoEmbedder, load_processor, load_video_embedder, resolve_dtype
from ..collection.inputs import resume_key
from ..collection.progress import Progress
from ..errors import FeatureCacheError, FeatureExtractionError, FeatureSettingsError
from .data import LabelledItem, LabelledSet, shown

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; one extraction per cache folder is then up to the user
    fcntl = None

__all__ = [
    "CACHE_KINDS",
    "FeatureCacheError",
    "FeatureExtractionError",
    "FeatureSettingsError",
    "ProbeFeatures",
    "clip_features",
    "extract_features",
]

#: Cache kinds and the spatial pooling factor of their tokens (0: no tokens, only the pooled embeddings).
CACHE_KINDS = {"tokens": 1, "pooled2": 2, "pooled4": 4, "embedding": 0}
MANIFEST = "manifest.json"
LOCK_NAME = ".lock"
_FORMAT = "videoprism-probe-features"
_VERSION = 1
_COPY_ROWS = 64  # rows per chunk when copying between caches


@dataclass
class ProbeFeatures:
    """The features a probe head trains on; arrays may be ``np.memmap`` views of the on-disk cache.

    Attributes:
        tokens: (n, T, S, D) float16 token sequence of each clip (S tokens per frame: the full patch grid, or the
            grid average-pooled by ``pool``), or None when only pooled embeddings were cached.
        embeddings: (n, D) float32 pooled embedding of each clip (the LvT video embedding, or the mean of the
            tokens), or None.
        targets: (n, C) float32 multi-hot targets (one-hot for single-label sets).
        class_names: the C class names, in target column order.
        multi_label: whether a clip may have several labels.
        pool: spatial pooling factor of ``tokens`` (1: full grid; 2: 2x2 average pooling of each frame's grid;
            0: no tokens).
        paths: the source video of each clip (for error messages and reports).
        items: the labelled clip of each row.
        grid: (T, h, w) of ``tokens`` after pooling (S = h * w); (0, 0, 0) without tokens.
        model_id: the encoder, as `ModelSource.model_id` names it.
        num_frames: frames per clip fed to the encoder.
        size: (height, width) of the frames fed to the encoder.
        cache: the cache kind (a key of `CACHE_KINDS`).
        cache_path: the cache folder the arrays live in.
        failures: ``(path, error)`` of each clip left out because it could not be decoded.
        decoded_clips: clips this call decoded and encoded (0 when everything came from the cache).
    """

    tokens: np.ndarray | None
    embeddings: np.ndarray | None
    targets: np.ndarray
    class_names: list[str]
    multi_label: bool
    pool: int
    paths: list[str]
    items: list[LabelledItem] = field(default_factory=list)
    grid: tuple[int, int, int] = (0, 0, 0)
    model_id: str = ""
    num_frames: int = 0
    size: tuple[int, int] = (0, 0)
    cache: str = ""
    cache_path: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)
    decoded_clips: int = 0


# ----------------------------------------------------------------------------------------------------------------
# The encoder


@torch.inference_mode()
def clip_features(embedder: VideoEmbedder, pixels: torch.Tensor | np.ndarray, pool: int) -> tuple:
    """The probe features of a batch of pre-processed clips.

    Args:
        embedder: The frozen encoder (from `videoprism.collection.load_video_embedder`).
        pixels: (B, T, 3, H, W) pixel values in [0, 1] (``pixel_values_videos``).
        pool: Spatial pooling factor of the tokens (a value of `CACHE_KINDS`); 0 returns no tokens.

    Returns:
        ``(tokens (B, T, S, D) float16 or None, embeddings (B, D) float32 L2-normalised)`` as numpy arrays.
    """
    from ..modeling import l2_normalize

    model = embedder.video_model
    param = next(model.parameters())
    pixels = torch.as_tensor(pixels).to(device=param.device, dtype=param.dtype)
    batch, frames, _, height, width = pixels.shape
    if embedder.kind == "pooler":
        out = model(pixels, interpolate_pos_encoding=embedder.interpolate)
        tokens, embeds = out.vision_model_output.last_hidden_state, out.pooler_output
    else:
        vision = model.vision_model if embedder.kind == "classifier" else model
        tokens = vision(pixels, interpolate_pos_encoding=embedder.interpolate).last_hidden_state  # (B, T*N, D)
        if embedder.kind == "mean":
            embeds = tokens.float().mean(dim=1)
        else:
            embeds = model.head_layernorm(model.head(tokens)[0])
    embeds = l2_normalize(embeds.float()).cpu().numpy()
    if not pool:
        return None, embeds
    patch = model.config.patch_size
    dim = tokens.shape[-1]
    grid = tokens.float().reshape(batch * frames, height // patch, width // patch, dim).permute(0, 3, 1, 2)
    if pool > 1:
        grid = torch.nn.functional.avg_pool2d(grid, pool)
    pooled = grid.permute(0, 2, 3, 1).reshape(batch, frames, -1, dim)
    return pooled.to(torch.float16).cpu().numpy(), embeds


# ----------------------------------------------------------------------------------------------------------------
# The cache folder


def _item_key(item: LabelledItem) -> dict[str, Any]:
    path, size, mtime = resume_key(item.path)
    return {"path": path, "size": size, "mtime_ns": mtime, "start": item.start, "end": item.end}


def _key_tuple(key: dict[str, Any]) -> tuple:
    return key["path"], key["size"], key["mtime_ns"], key["start"], key["end"]


class _Cache:
    """One cache folder: the manifest and the memory-mapped arrays."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder, self.manifest = folder, manifest
        self.n = len(manifest["items"])
        self.has_tokens = manifest["pool"] > 0
        self.done = np.load(folder / "done.npy", mmap_mode="r+")
        self.embeddings = np.load(folder / "embeddings.npy", mmap_mode="r+")
        self.tokens = np.load(folder / "tokens.npy", mmap_mode="r+") if self.has_tokens else None
        grid_t, grid_h, grid_w = manifest["grid"]
        expected = {"done": (self.n,), "embeddings": (self.n, manifest["dim"])}
        if self.has_tokens:
            expected["tokens"] = (self.n, grid_t, grid_h * grid_w, manifest["dim"])
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise FeatureCacheError(
                    f"{shown(str(folder))}: {name}.npy has shape {getattr(self, name).shape}, the manifest says "
                    f"{shape}; delete this folder to extract the features again"
                )

    @classmethod
    def create(cls, folder: Path, manifest: dict[str, Any]) -> _Cache:
        """Allocates the arrays, then writes the manifest: a folder without a manifest is an unfinished creation."""
        if folder.exists():
            shutil.rmtree(folder)
        tmp = folder.with_name(folder.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        n, dim = len(manifest["items"]), manifest["dim"]
        np.lib.format.open_memmap(tmp / "done.npy", mode="w+", dtype=np.uint8, shape=(n,)).flush()
        np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, dim)).flush()
        if manifest["pool"] > 0:
            grid_t, grid_h, grid_w = manifest["grid"]
            shape = (n, grid_t, grid_h * grid_w, dim)
            np.lib.format.open_memmap(tmp / "tokens.npy", mode="w+", dtype=np.float16, shape=shape).flush()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, folder)
        return cls(folder, manifest)

    @classmethod
    def open(cls, folder: Path) -> _Cache | None:
        """The cache in ``folder``; None when there is none (or only an unfinished creation)."""
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise FeatureCacheError(
                f"{shown(str(folder / MANIFEST))} is unreadable ({err}); delete {shown(str(folder))} to extract the "
                f"features again"
            ) from err
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT or manifest.get("version") != _VERSION:
            raise FeatureCacheError(
                f"{shown(str(folder))} does not hold probe features of this version; delete it or pick another cache "
                f"folder"
            )
        try:
            return cls(folder, manifest)
        except FeatureCacheError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise FeatureCacheError(
                f"{shown(str(folder))} is damaged ({type(err).__name__}: {err}); delete it to extract the features "
                f"again"
            ) from err

    def write(self, rows: list[int], tokens: np.ndarray | None, embeddings: np.ndarray) -> None:
        """Writes rows, flushes them, then marks them done (so a crash in between only costs recomputing them)."""
        order = np.argsort(rows)
        index = np.asarray(rows)[order]
        if self.tokens is not None:
            self.tokens[index] = tokens[order]
            self.tokens.flush()
        self.embeddings[index] = embeddings[order]
        self.embeddings.flush()
        self.done[index] = 1
        self.done.flush()

    def fail(self, row: int, error: str) -> None:
        key = self.manifest["items"][row]
        with open(self.folder / "failures.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"row": row, "path": key["path"], "error": error}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[row] = 2
        self.done.flush()

    def failures(self) -> dict[int, str]:
        path = self.folder / "failures.jsonl"
        if not path.exists():
            return {}
        out = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill: its row is not marked failed, so it is retried
            out[int(record["row"])] = str(record["error"])
        return {row: error for row, error in out.items() if self.done[row] == 2}


@contextlib.contextmanager
def _locked(cache_root: Path) -> Iterator[None]:
    """Holds the cache folder's lock: one extraction at a time writes to a cache folder."""
    cache_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache_root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FeatureCacheError(
                    f"another process is extracting features into {shown(str(cache_root))}; wait for it to finish "
                    f"or give another cache folder"
                ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _settings(model_id: str, num_frames: int, size: tuple[int, int], weights: str, cache: str) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "num_frames": num_frames,
        "size": list(size),
        "weights_dtype": weights,
        "cache": cache,
        "pool": CACHE_KINDS[cache],
    }


def _folder_name(settings: dict[str, Any], keys: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256(json.dumps([settings, keys], sort_keys=True).encode()).hexdigest()[:16]
    return f"{settings['cache']}-{digest}"


def _siblings(cache_dir: Path, settings: dict[str, Any], exclude: Path) -> list[_Cache]:
    """Other cache folders of ``cache_dir`` made with the same settings, whose rows can be copied."""
    found = []
    for folder in sorted(cache_dir.glob(f"{settings['cache']}-*")):
        if folder == exclude or not folder.is_dir() or folder.name.endswith(".partial"):
            continue
        try:
            other = _Cache.open(folder)
        except (FeatureCacheError, OSError, ValueError):
            continue  # a damaged neighbour is simply not used
        if other is not None and all(other.manifest.get(k) == v for k, v in settings.items()):
            found.append(other)
    return found


def _copy_from_siblings(cache: _Cache, siblings: list[_Cache], todo: list[int]) -> list[int]:
    """Copies the rows that other folders hold, in bounded chunks; returns the rows still to compute."""
    wanted = {_key_tuple(cache.manifest["items"][row]): row for row in todo}
    for other in siblings:
        pairs = []
        for src, key in enumerate(other.manifest["items"]):
            row = wanted.get(_key_tuple(key))
            if row is not None and other.done[src] == 1:
                pairs.append((src, row))
                del wanted[_key_tuple(key)]
        for i in range(0, len(pairs), _COPY_ROWS):
            src, dst = zip(*pairs[i : i + _COPY_ROWS], strict=True)
            tokens = other.tokens[list(src)] if cache.tokens is not None else None
            cache.write(list(dst), tokens, np.asarray(other.embeddings[list(src)]))
    return sorted(wanted.values())


# ----------------------------------------------------------------------------------------------------------------
# extract_features


def extract_features(
    data: LabelledSet,
    model: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    cache: str = "pooled2",
    num_frames: int | None = None,
    batch_size: int = 8,
    workers: int | None = None,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    progress: bool | str = "auto",
    progress_interval: float = 10.0,
) -> ProbeFeatures:
    """The frozen-encoder features of every clip of ``data``, computed once and cached in ``cache_dir``.

    See the module docstring for what is cached and how the cache is reused and resumed. The model is loaded only
    when some clip is not cached yet.

    Args:
        data: The labelled clips.
        model: A preset name, hub repo id, local folder, ``.npz`` or ``.safetensors`` file (any video checkpoint).
        cache_dir: Folder of the cache (created if needed; several sets and settings may share it).
        cache: ``"tokens"`` (every patch token), ``"pooled2"`` / ``"pooled4"`` (each frame's patch grid
            average-pooled 2x2 / 4x4) or ``"embedding"`` (only the pooled embeddings, for a linear probe).
        num_frames: Frames per clip; default: the model's video processor's.
        batch_size: Clips per forward pass (and per cache write).
        workers: Decoding processes; 0 decodes in a thread of this process; None picks a default.
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        dtype: Weights dtype ("bfloat16", "float16", "float32" or a torch dtype); None keeps float32.
        progress: "auto" (a bar on a terminal, periodic lines otherwise; also True), "bar", "lines" or False.
        progress_interval: Seconds between progress lines.

    Returns:
        `ProbeFeatures` of the clips that could be decoded, in the set's order; ``failures`` lists the others.

    Raises:
        FeatureSettingsError: Invalid settings, or a token grid the pooling factor does not divide.
        FeatureCacheError: A damaged cache folder.
        FeatureExtractionError: No clip could be decoded.
    """
    if cache not in CACHE_KINDS:
        raise FeatureSettingsError(f"cache={cache!r}; use one of {', '.join(CACHE_KINDS)}")
    for name, value in (("batch_size", batch_size), ("num_frames", num_frames)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise FeatureSettingsError(f"{name} must be a positive integer, got {value!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise FeatureSettingsError(f"workers must be a non-negative integer, got {workers!r}")
    weights = str(resolve_dtype(dtype) or torch.float32).removeprefix("torch.")

    failures: dict[int, str] = {}
    keyed: list[tuple[int, dict[str, Any]]] = []
    for i, item in enumerate(data.items):
        try:
            keyed.append((i, _item_key(item)))
        except OSError as err:  # vanished or unreadable since the set was read
            failures[i] = f"cannot stat the file ({err})"
    model = resolve_source(model)  # once: the processor, the encoder and the cache's model id all use it
    processor = load_processor(model, num_frames)
    size = (int(processor.size["height"]), int(processor.size["width"]))
    settings = _settings(model.model_id, int(processor.num_frames), size, weights, cache)
    cache_root = Path(cache_dir).expanduser()
    keys = [key for _, key in keyed]
    folder = cache_root / _folder_name(settings, keys)

    run = _Run(model, processor, device, dtype, batch_size, workers, progress, progress_interval)
    with _locked(cache_root):
        store, decoded = _fill(cache_root, folder, settings, keys, run)
    rows = [i for i, _ in keyed]  # cache row r holds data item rows[r]
    if store is not None:
        failures.update({rows[r]: error for r, error in store.failures().items()})
    return _result(data, store, rows, failures, decoded, settings)


@dataclass
class _Run:
    """How to compute missing rows: the model source, its processor, and the pipeline settings."""

    model: str | os.PathLike[str]
    processor: Any
    device: str | torch.device | None
    dtype: str | torch.dtype | None
    batch_size: int
    workers: int | None
    progress: bool | str
    progress_interval: float

    def embedder(self) -> VideoEmbedder:
        num_frames = self.processor.num_frames
        return load_video_embedder(self.model, device=self.device, dtype=self.dtype, num_frames=num_frames)[0]


def _fill(
    cache_root: Path, folder: Path, settings: dict[str, Any], keys: list[dict[str, Any]], run: _Run
) -> tuple[_Cache | None, int]:
    """Opens (or creates) the cache folder of ``keys`` and fills its missing rows; returns it and the clips decoded."""
    embedder = store = None
    todo: list[int] = []
    if keys:
        store = _Cache.open(folder)
        if store is not None and store.manifest["items"] != keys:
            raise FeatureCacheError(
                f"{shown(str(folder))} lists other clips than its name says; delete it to extract the features again"
            )
        if store is None:
            siblings = _siblings(cache_root, settings, folder)
            if siblings:
                geometry = {k: siblings[0].manifest[k] for k in ("grid", "dim")}
            else:
                embedder = run.embedder()
                geometry = _geometry(embedder, tuple(settings["size"]), settings["pool"])
            manifest = {"format": _FORMAT, "version": _VERSION, **settings, **geometry, "dtype": "float16"}
            store = _Cache.create(folder, {**manifest, "items": keys})
        todo = [row for row in range(store.n) if store.done[row] == 0]
        if todo:
            todo = _copy_from_siblings(store, _siblings(cache_root, settings, folder), todo)

    decoded = 0
    if todo:
        decoded = _extract(store, todo, embedder or run.embedder(), run)
    return store, decoded


def _geometry(embedder: VideoEmbedder, size: tuple[int, int], pool: int) -> dict[str, Any]:
    """The token grid (T, h, w) after pooling, and the width; checks that the pooling divides the grid."""
    patch = embedder.video_model.config.patch_size
    grid_h, grid_w = size[0] // patch, size[1] // patch
    if pool > 1 and (grid_h % pool or grid_w % pool):
        raise FeatureSettingsError(
            f"{pool}x{pool} pooling does not divide the {grid_h}x{grid_w} patch grid of {size[0]}x{size[1]} frames; "
            f"use cache='tokens' or a pooling factor that divides {grid_h} and {grid_w}"
        )
    if not pool:
        return {"grid": [0, 0, 0], "dim": embedder.dim}
    return {"grid": [embedder.num_frames, grid_h // pool, grid_w // pool], "dim": embedder.dim}


def _extract(store: _Cache, todo: list[int], embedder: VideoEmbedder, run: _Run) -> int:
    """Decodes and encodes the rows ``todo`` into the cache; returns the number of clips decoded."""
    items = store.manifest["items"]
    spans = [(items[row]["path"], items[row]["start"], items[row]["end"]) for row in todo]
    settings = ClipSettings(run.processor.to_dict(), embedder.num_frames, None, None)
    pool_factor = store.manifest["pool"]
    pending: list[tuple[int, np.ndarray]] = []
    counts = {"decoded": 0, "finished": 0, "failed": 0}
    bar = Progress(len(todo), run.progress, run.progress_interval, name="probe features")

    def flush() -> None:
        if pending:
            pixels = torch.from_numpy(np.stack([p for _, p in pending]))
            with pool.paused():  # see `decode_between_batches`
                tokens, embeds = clip_features(embedder, pixels, pool_factor)
            store.write([todo[idx] for idx, _ in pending], tokens, embeds)
            counts["finished"] += len(pending)
            pending.clear()
        bar.update(counts["finished"] + counts["failed"], counts["decoded"], counts["failed"])

    try:
        with model_decode_pool(spans, settings, run.workers, 2 * run.batch_size, embedder.device) as pool:
            for event in pool.events():
                kind, idx = event[:2]
                if kind == "clip":
                    counts["decoded"] += 1
                    pending.append((idx, event[3]))
                    if len(pending) >= run.batch_size:
                        flush()
                elif kind == "fail":
                    counts["failed"] += 1
                    path = shown(items[todo[idx]]["path"])
                    bar.write(f"failed: {path}: {event[2]}")
                    store.fail(todo[idx], event[2])
            flush()
    finally:
        bar.update(counts["finished"] + counts["failed"], counts["decoded"], counts["failed"], final=True)
        bar.close()
    return counts["decoded"]


def _result(
    data: LabelledSet,
    store: _Cache | None,
    rows: list[int],
    failures: dict[int, str],
    decoded: int,
    settings: dict[str, Any],
) -> ProbeFeatures:
    """The features of the clips that did not fail, in the set's order."""
    if store is None or len(failures) == len(data.items):
        first = next(iter(failures.items()), None)
        detail = f"; the first: {shown(data.items[first[0]].path)}: {first[1]}" if first else ""
        raise FeatureExtractionError(
            f"none of the {len(data.items)} videos of {data.source or 'the set'} could be decoded{detail}"
        )
    valid = [r for r, i in enumerate(rows) if i not in failures]
    tokens, embeddings = _valid_arrays(store, valid)
    kept = [rows[r] for r in valid]
    items = [data.items[i] for i in kept]
    manifest = store.manifest
    return ProbeFeatures(
        tokens=tokens,
        embeddings=embeddings,
        targets=data.targets()[kept],
        class_names=list(data.class_names),
        multi_label=data.multi_label,
        pool=manifest["pool"],
        paths=[item.path for item in items],
        items=items,
        grid=tuple(manifest["grid"]),
        model_id=manifest["model_id"],
        num_frames=manifest["num_frames"],
        size=tuple(manifest["size"]),
        cache=manifest["cache"],
        cache_path=str(store.folder),
        failures=[(data.items[i].path, error) for i, error in sorted(failures.items())],
        decoded_clips=decoded,
    )


def _valid_arrays(store: _Cache, valid: list[int]) -> tuple[np.ndarray | None, np.ndarray]:
    """Read-only memory maps of the rows ``valid``: the cache's own arrays, or (some rows failed) compact copies."""
    folder = store.folder
    if len(valid) == store.n:
        tokens = np.load(folder / "tokens.npy", mmap_mode="r") if store.has_tokens else None
        return tokens, np.load(folder / "embeddings.npy", mmap_mode="r")
    names = ["embeddings"] + (["tokens"] if store.has_tokens else [])
    marker = folder / "valid.json"
    if not marker.exists() or json.loads(marker.read_text()) != valid:
        for name in names:
            source = getattr(store, name)
            out = np.lib.format.open_memmap(
                folder / f"{name}-valid.npy", mode="w+", dtype=source.dtype, shape=(len(valid), *source.shape[1:])
            )
            for i in range(0, len(valid), _COPY_ROWS):
                out[i : i + _COPY_ROWS] = source[valid[i : i + _COPY_ROWS]]
            out.flush()
            del out
        marker.write_text(json.dumps(valid))
    tokens = np.load(folder / "tokens-valid.npy", mmap_mode="r") if store.has_tokens else None
    return tokens, np.load(folder / "embeddings-valid.npy", mmap_mode="r")
