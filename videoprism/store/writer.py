"""Writing a store: ``EmbeddingStore`` (durable batches, the writer lock, resume state and compaction)."""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import StoreCorruptedError, StoreError, StoreLockedError, StoreMismatchError
from .format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    KINDS,
    KV_COMPACTED,
    KV_NEXT_ID,
    KV_REPLACES,
    LOCK_NAME,
    META_DIR,
    METADATA_SCHEMA,
    RECORD_KEYS,
    SHARDS_DIR,
    TMP_PREFIX,
    atomic_write,
    check_compatible,
    fsync_dir,
    manifest_path,
    read_manifest,
    read_npy_header,
    save_npy,
    save_npy_streaming,
    write_error,
    write_part,
)
from .live import Snapshot, load_snapshot
from .reader import StoreReader, open_store
from .rows import copy_rows

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; the single-writer rule is then up to the user.
    fcntl = None


@dataclass
class _VideoRecord:
    """Resume state of one path: its current key and how much of it is stored."""

    size: int
    mtime_ns: int
    ok_rows: int = 0
    expected: int = 0  # max video_rows seen (0: unknown)
    failed: bool = False
    clips: set[tuple[Any, ...]] | None = None  # clip keys, kept only while the video is incomplete

    @property
    def done(self) -> bool:
        return self.failed or (self.ok_rows > 0 and self.ok_rows >= self.expected)


def _nan_none(x: float) -> float | None:
    return None if x is None or x != x else float(x)


def _clip_key(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    return (rec["kind"], _nan_none(rec["start"]), _nan_none(rec["end"]), tuple(rec["frame_indices"]))


class EmbeddingStore:
    """Writer of a store: appends batches durably and tells a resumable pipeline which videos are done.

    Only one ``EmbeddingStore`` may be open on a store at a time (an OS file lock enforces it; it is released on
    ``close()`` or when the process dies). Readers (``open_store``) may run concurrently and see whole batches only.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], lock_fd: int | None) -> None:
        self.path = root
        self.manifest = manifest
        self.model_id: str = manifest["model_id"]
        self.dim: int = manifest["dim"]
        self._lock_fd = lock_fd
        self._videos: dict[str, _VideoRecord] = {}
        self._next_id = 0
        self._frames_shape: tuple[int, ...] | None = None
        self._rows = 0
        self._failures = 0
        self.rows_at_open: pa.Table | None = None  # live embedding rows as listed when opened
        self._recover()

    # ---------------------------------------------------------------------------------------------------------------
    # Opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        model_id: str | None = None,
        dim: int | None = None,
        create: bool = True,
        model_dtype: str | None = None,
    ) -> EmbeddingStore:
        """Opens a store for writing, creating it if needed, and cleans up after any interrupted write.

        Args:
            path: Store folder.
            model_id: Model whose embeddings the store holds; required to create, checked when opening.
            dim: Embedding dimension; required to create, checked when opening.
            create: Create the store if it does not exist.
            model_dtype: Weights dtype the model computes in ("float32", "bfloat16", ...), recorded in the manifest
                of a store this call creates (optional; informational).

        Raises:
            StoreNotFoundError: No store at ``path`` and ``create`` is False.
            StoreMismatchError: The store holds another model's or dimension's embeddings.
            StoreLockedError: Another process is writing to the store.
            StoreCorruptedError: Unreadable manifest or metadata.
            StoreError: ``path`` is a non-empty folder that is not a store, or creation lacks ``model_id``/``dim``.
        """
        root = Path(path)
        if not manifest_path(root).is_file():
            if not create:
                read_manifest(root)  # raises the specific error
            if root.exists() and not root.is_dir():
                raise StoreError(f"{root} exists and is not a folder; choose another store path")
            if root.is_dir() and any(p.name != LOCK_NAME for p in root.iterdir()):
                if (root / META_DIR).is_dir() or (root / SHARDS_DIR).is_dir():
                    # Store folders without a manifest: another process may be creating the store right now (it
                    # holds the lock until its manifest is written); otherwise the store is incomplete.
                    fd = cls._lock(root)  # raises StoreLockedError while the creator holds it
                    if fd is not None:
                        os.close(fd)
                    if manifest_path(root).is_file():  # created in the meantime
                        return cls.open(root, model_id, dim, create)
                    read_manifest(root)  # raises StoreCorruptedError
                raise StoreError(f"{root} is a non-empty folder that is not an embedding store; use an empty folder")
            if model_id is None or dim is None:
                raise StoreError(f"creating a store at {root} needs model_id and dim")
            if not isinstance(dim, int) or dim <= 0:
                raise StoreError(f"dim must be a positive int, got {dim!r}")
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise write_error(err, root) from err
        try:
            lock_fd = cls._lock(root)
        except OSError as err:
            if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC):
                raise
            raise write_error(err, root) from err
        try:
            if not manifest_path(root).is_file():  # still absent under the lock: we create it
                for sub in (SHARDS_DIR, META_DIR):
                    try:
                        (root / sub).mkdir(exist_ok=True)
                    except OSError as err:
                        raise write_error(err, root / sub) from err
                manifest = {
                    "format": FORMAT_NAME,
                    "format_version": FORMAT_VERSION,
                    "model_id": model_id,
                    "dim": dim,
                    "dtype": "float16",
                    "normalized": True,
                    **({"model_dtype": model_dtype} if model_dtype is not None else {}),
                    "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                }
                atomic_write(manifest_path(root), lambda f: f.write(json.dumps(manifest, indent=2).encode() + b"\n"))
            manifest = read_manifest(root)
            check_compatible(root, manifest, model_id, dim)
            for sub in (SHARDS_DIR, META_DIR):
                if not (root / sub).is_dir():
                    raise StoreCorruptedError(f"{root / sub} is missing; the store is incomplete")
            return cls(root, manifest, lock_fd)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    @staticmethod
    def _lock(root: Path) -> int | None:
        if fcntl is None:
            return None
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"another process is writing to {root}; wait for it to finish (read-only access: open_store)"
            ) from None
        return fd

    def close(self) -> None:
        """Releases the writer lock. Everything written is already durable."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._rows

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}, model_id={self.model_id!r}, dim={self.dim}, rows={self._rows})"

    @property
    def num_failures(self) -> int:
        """Number of videos recorded as failed (live failure rows)."""
        return self._failures

    def _check_open(self) -> None:
        if self._lock_fd is None and fcntl is not None:
            raise StoreError(f"store {self.path} was closed; reopen it with EmbeddingStore.open")

    def _recover(self) -> None:
        """Finishes an interrupted compaction, removes temporaries and orphan shards, and loads the resume state."""
        for sub in (SHARDS_DIR, META_DIR):
            for p in (self.path / sub).glob(f"{TMP_PREFIX}*"):
                p.unlink(missing_ok=True)
        snap = load_snapshot(self.path, self.manifest)
        for name in snap.replaced:
            (self.path / META_DIR / name).unlink(missing_ok=True)
        for p in (self.path / SHARDS_DIR).glob("*.npy"):
            if f"{SHARDS_DIR}/{p.name}" not in snap.referenced_shards:
                p.unlink(missing_ok=True)  # written by a batch whose metadata never committed
        fsync_dir(self.path / SHARDS_DIR)
        fsync_dir(self.path / META_DIR)
        self.rows_at_open = snap.ok
        self._load_state(snap)

    def _load_state(self, snap: Snapshot) -> None:
        self._next_id = snap.next_id
        self._rows = snap.ok.num_rows
        self._failures = snap.failures.num_rows
        self._frames_shape = None
        for name in snap.referenced_shards:
            if name.endswith(".frames.npy"):
                with contextlib.suppress(OSError, ValueError):
                    self._frames_shape = tuple(read_npy_header(self.path / name)[0][1:])
                    break
        videos: dict[str, _VideoRecord] = {}
        ok = snap.ok
        if ok.num_rows:
            grouped = ok.group_by("path").aggregate(
                [("size", "max"), ("mtime_ns", "max"), ("id", "count"), ("video_rows", "max")]
            )
            cols = [grouped[c].to_pylist() for c in ("path", "size_max", "mtime_ns_max", "id_count", "video_rows_max")]
            for path, size, mtime, count, expected in zip(*cols, strict=True):
                videos[path] = _VideoRecord(size, mtime, count, expected or 0)
        for path, size, mtime in zip(
            *(snap.failures[c].to_pylist() for c in ("path", "size", "mtime_ns")), strict=True
        ):
            videos.setdefault(path, _VideoRecord(size, mtime)).failed = True
        incomplete = [p for p, v in videos.items() if not v.done and v.ok_rows]
        if incomplete:
            sub = ok.filter(pc.is_in(ok["path"], value_set=pa.array(incomplete)))
            for rec in sub.to_pylist():
                v = videos[rec["path"]]
                v.clips = v.clips or set()
                v.clips.add(_clip_key(rec))
        self._videos = videos

    # ---------------------------------------------------------------------------------------------------------------
    # Resume API

    def is_done(self, path: str, size: int, mtime_ns: int) -> bool:
        """Whether this version of a video needs no more work: fully embedded, or recorded as failed.

        A video is fully embedded when it has at least one embedding row and as many as the largest ``video_rows``
        among them. A file with another size or mtime than the stored rows is not done; writing it supersedes them.

        Args:
            path: Video path, exactly as passed to ``write_batch`` (see ``file_key``).
            size: File size in bytes.
            mtime_ns: File modification time in nanoseconds.
        """
        v = self._videos.get(os.fspath(path))
        return v is not None and v.size == size and v.mtime_ns == mtime_ns and v.done

    def status(self, path: str) -> dict[str, Any] | None:
        """The stored state of a path (key, rows stored and expected, failed), or None if it has no live rows.

        Args:
            path: Video path as written.
        """
        v = self._videos.get(os.fspath(path))
        if v is None:
            return None
        return {
            "size": v.size,
            "mtime_ns": v.mtime_ns,
            "rows": v.ok_rows,
            "expected_rows": v.expected or None,
            "failed": v.failed,
            "done": v.done,
        }

    # ---------------------------------------------------------------------------------------------------------------
    # Writing

    def _normalise_records(self, records: Sequence[Mapping[str, Any]], *, failure: bool) -> list[dict[str, Any]]:
        out = []
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                raise TypeError(f"record {i} is a {type(rec).__name__}, expected a dict")
            unknown = set(rec) - RECORD_KEYS
            if unknown:
                raise ValueError(f"record {i} has unknown keys {sorted(unknown)}; allowed: {sorted(RECORD_KEYS)}")
            missing = {"path", "size", "mtime_ns"} - set(rec)
            if missing:
                raise ValueError(f"record {i} lacks {sorted(missing)}")
            model_id = rec.get("model_id") or self.model_id
            if model_id != self.model_id:
                raise StoreMismatchError(
                    f"record {i} is from model {model_id!r}; store {self.path} holds {self.model_id!r}"
                )
            kind = rec.get("kind") or ("video" if failure else "clip")
            if kind not in KINDS:
                raise ValueError(f"record {i} has kind {kind!r}; expected one of {list(KINDS)}")
            error = rec.get("error")
            if failure and (not isinstance(error, str) or not error):
                raise ValueError(f"failure record {i} needs a non-empty 'error' message")
            if not failure and error is not None:
                raise ValueError(f"record {i} has an error; record failed videos with write_failures")
            path = rec["path"]
            if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
                raise ValueError(f"record {i} has an invalid path {path!r}")

            def opt_float(key: str, rec: Mapping[str, Any] = rec) -> float:
                x = rec.get(key)
                return float("nan") if x is None else float(x)

            def opt_int(key: str, rec: Mapping[str, Any] = rec) -> int | None:
                x = rec.get(key)
                return None if x is None else int(x)

            out.append(
                {
                    "path": os.fspath(path),
                    "size": int(rec["size"]),
                    "mtime_ns": int(rec["mtime_ns"]),
                    "model_id": model_id,
                    "kind": kind,
                    "start": opt_float("start"),
                    "end": opt_float("end"),
                    "frame_indices": [int(x) for x in (rec.get("frame_indices") or [])],
                    "duration": opt_float("duration"),
                    "num_frames_total": opt_int("num_frames_total"),
                    "video_rows": opt_int("video_rows"),
                    "error": error if failure else None,
                }
            )
        return out

    def _table(
        self, rows: list[dict[str, Any]], ids: np.ndarray, shard: str | None, frames_shard: str | None
    ) -> pa.Table:
        n = len(rows)
        cols: dict[str, Any] = {name: [r[name] for r in rows] for name in RECORD_KEYS}
        cols["id"] = ids
        cols["shard"] = [shard] * n
        cols["row"] = np.arange(n, dtype=np.int64) if shard is not None else [None] * n
        cols["frames_shard"] = [frames_shard] * n
        return pa.table({f.name: pa.array(cols[f.name], f.type) for f in METADATA_SCHEMA}, schema=METADATA_SCHEMA)

    def _token(self) -> str:
        return f"{self._next_id:012d}-{uuid.uuid4().hex[:8]}"

    def write_batch(
        self,
        records: Sequence[Mapping[str, Any]],
        embeddings: np.ndarray,
        frame_embeddings: np.ndarray | None = None,
    ) -> np.ndarray:
        """Durably appends embedding rows: one shard (plus frames shard), then its metadata part.

        A crash before the metadata part is renamed into place leaves only an orphan shard, which readers ignore and
        the next writer removes; so each call is all or nothing.

        Args:
            records: One dict per row with ``path``, ``size``, ``mtime_ns`` and optionally ``kind`` (default "clip"),
                ``start``, ``end``, ``frame_indices``, ``duration``, ``num_frames_total``, ``video_rows`` (total rows
                the video will have, when they span several batches) and ``model_id`` (must be the store's).
            embeddings: (n, dim) embeddings; L2-normalised here and stored as float16.
            frame_embeddings: Optional (n, frames, dim) per-frame embeddings, stored as float16 as given.

        Returns:
            The ids assigned to the rows, in order.

        Raises:
            ValueError: Malformed records, shapes, or non-finite / zero embeddings.
            StoreMismatchError: ``dim``, model or frame count differs from the store's.
        """
        self._check_open()
        rows = self._normalise_records(records, failure=False)
        n = len(rows)
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != n:
            raise ValueError(f"embeddings must have shape ({n}, {self.dim}) for {n} records, got {emb.shape}")
        if emb.shape[1] != self.dim:
            raise StoreMismatchError(f"embeddings have dim {emb.shape[1]}; store {self.path} holds dim {self.dim}")
        frames = None
        if frame_embeddings is not None:
            frames = np.asarray(frame_embeddings)
            if frames.ndim != 3 or frames.shape[0] != n or frames.shape[2] != self.dim:
                raise ValueError(f"frame_embeddings must have shape ({n}, frames, {self.dim}), got {frames.shape}")
            if self._frames_shape is not None and tuple(frames.shape[1:]) != self._frames_shape:
                raise StoreMismatchError(
                    f"frame_embeddings have {frames.shape[1]} frames; store {self.path} holds {self._frames_shape[0]}"
                )
            if not np.isfinite(frames).all():
                raise ValueError("frame_embeddings contain NaN or infinite values")
            with np.errstate(over="ignore"):
                frames16 = frames.astype(np.float16)
            if not np.isfinite(frames16).all():
                raise ValueError("frame_embeddings overflow float16 (|x| > 65504)")
            frames = frames16
        if n == 0:
            return np.empty(0, np.int64)
        emb64 = emb.astype(np.float64)
        if not np.isfinite(emb64).all():
            raise ValueError("embeddings contain NaN or infinite values")
        norms = np.linalg.norm(emb64, axis=1, keepdims=True)
        if (norms < 1e-12).any():
            raise ValueError(f"embeddings rows {np.flatnonzero(norms[:, 0] < 1e-12).tolist()[:10]} are zero vectors")
        emb16 = (emb64 / norms).astype(np.float16)

        token = self._token()
        shard = f"{SHARDS_DIR}/{token}.emb.npy"
        frames_shard = f"{SHARDS_DIR}/{token}.frames.npy" if frames is not None else None
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        table = self._table(rows, ids, shard, frames_shard)
        written: list[Path] = []
        try:
            save_npy(self.path / shard, emb16)
            written.append(self.path / shard)
            if frames_shard is not None:
                save_npy(self.path / frames_shard, frames)
                written.append(self.path / frames_shard)
            write_part(self.path / META_DIR / f"{token}.parquet", table, {KV_NEXT_ID: str(ids[-1] + 1).encode()})
        except BaseException:
            for p in written:  # not referenced by any metadata yet; a SIGKILL leaves them to _recover
                with contextlib.suppress(OSError):
                    p.unlink()
            raise
        self._next_id += n
        if frames is not None:
            self._frames_shape = tuple(frames.shape[1:])
        for rec in rows:
            self._account(rec)
        return ids

    def _account(self, rec: dict[str, Any]) -> None:
        v = self._videos.get(rec["path"])
        failure = rec["error"] is not None
        if v is None or (v.size, v.mtime_ns) != (rec["size"], rec["mtime_ns"]):
            if v is not None:  # supersedes the old version's rows
                self._rows -= v.ok_rows
                self._failures -= int(v.failed)
            v = self._videos[rec["path"]] = _VideoRecord(rec["size"], rec["mtime_ns"])
        if failure:
            self._failures += int(not v.failed)
            v.failed = True
            return
        if v.failed:  # a newer embedding row supersedes the recorded failure
            v.failed = False
            self._failures -= 1
        v.expected = max(v.expected, rec["video_rows"] or 0)
        if v.ok_rows == 0 or v.clips is not None:
            v.clips = v.clips if v.clips is not None else set()
            key = _clip_key(rec)
            if key not in v.clips:
                v.clips.add(key)
                v.ok_rows += 1
                self._rows += 1
            if v.done:
                v.clips = None
        else:  # complete videos stop tracking clip keys; a rewrite of a done video is counted as new rows
            v.ok_rows += 1
            self._rows += 1

    def write_failures(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Durably records videos that could not be decoded or embedded; ``is_done`` is then True for them.

        Args:
            records: One dict per video with ``path``, ``size``, ``mtime_ns``, ``error`` (message) and optionally
                ``kind`` (default "video"), ``duration`` and ``num_frames_total``.

        Returns:
            The ids assigned to the failure rows.
        """
        self._check_open()
        rows = self._normalise_records(records, failure=True)
        if not rows:
            return np.empty(0, np.int64)
        ids = np.arange(self._next_id, self._next_id + len(rows), dtype=np.int64)
        token = self._token()
        write_part(
            self.path / META_DIR / f"{token}.parquet",
            self._table(rows, ids, None, None),
            {KV_NEXT_ID: str(ids[-1] + 1).encode()},
        )
        self._next_id += len(rows)
        for rec in rows:
            self._account(rec)
        return ids

    def reader(self) -> StoreReader:
        """A read-only snapshot of everything written so far."""
        return open_store(self.path)

    def compact(self) -> bool:
        """Rewrites the live rows into one shard (plus one frames shard) and one metadata part; drops stale rows.

        Crash-safe: the new shard and part are written first (temp, fsync, rename) and name the parts they replace,
        so readers see either the old parts or the new one; old files are deleted last. Idempotent.

        Returns:
            Whether anything changed (False when the store was already compacted).
        """
        self._check_open()
        snap = load_snapshot(self.path, self.manifest)
        reader = StoreReader(snap)
        stray = {f"{SHARDS_DIR}/{p.name}" for p in (self.path / SHARDS_DIR).glob("*.npy")} - snap.referenced_shards
        if reader.is_compacted and not snap.replaced and not stray:
            return False
        if not snap.parts:
            return False
        token = self._token()
        n = len(reader)
        shard = f"{SHARDS_DIR}/{token}.emb.npy" if n else None
        frames_shard = f"{SHARDS_DIR}/{token}.frames.npy" if n and reader.frame_embeddings is not None else None
        new_files: list[Path] = []
        try:
            if shard is not None:
                save_npy_streaming(self.path / shard, (n, self.dim), lambda out: copy_rows(reader.embeddings, out))
                new_files.append(self.path / shard)
            if frames_shard is not None:
                frames = reader.frame_embeddings  # (n, frames, dim)
                save_npy_streaming(self.path / frames_shard, frames.shape, lambda out: copy_rows(frames, out))
                new_files.append(self.path / frames_shard)
            ok = reader.metadata
            had_frames = ok["frames_shard"].is_valid()
            ok = ok.set_column(ok.schema.get_field_index("shard"), "shard", pa.array([shard] * n, pa.string()))
            ok = ok.set_column(ok.schema.get_field_index("row"), "row", pa.array(np.arange(n, dtype=np.int64)))
            ok = ok.set_column(
                ok.schema.get_field_index("frames_shard"),
                "frames_shard",
                pc.if_else(had_frames, pa.scalar(frames_shard, pa.string()), pa.scalar(None, pa.string())),
            )
            merged = pa.concat_tables([ok.cast(METADATA_SCHEMA), reader.failures])
            merged = merged.take(pc.sort_indices(merged["id"]))
            kv = {
                KV_REPLACES: json.dumps(snap.parts).encode(),
                KV_NEXT_ID: str(self._next_id).encode(),
                KV_COMPACTED: b"1",
            }
            write_part(self.path / META_DIR / f"{token}.parquet", merged, kv)
        except BaseException:
            for p in new_files:
                with contextlib.suppress(OSError):
                    p.unlink()
            raise
        # Committed. Delete metadata before shards so no listed part ever points to a deleted shard.
        for name in snap.parts:
            (self.path / META_DIR / name).unlink(missing_ok=True)
        fsync_dir(self.path / META_DIR)
        keep = {shard, frames_shard}
        for p in (self.path / SHARDS_DIR).glob("*.npy"):
            if f"{SHARDS_DIR}/{p.name}" not in keep:
                p.unlink(missing_ok=True)
        fsync_dir(self.path / SHARDS_DIR)
        self._load_state(load_snapshot(self.path, self.manifest))
        return True
