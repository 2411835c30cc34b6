"""The store's on-disk format: layout names, metadata schema, manifest, and durable (crash-safe) file writes.

Every file is written under a temporary name, fsynced and renamed into place, and never modified afterwards. The
layout is described in ``docs/store-format.md``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._text import printable
from ..errors import StoreCorruptedError, StoreError, StoreMismatchError, StoreNotFoundError, WriteError

FORMAT_NAME = "videoprism-embedding-store"
FORMAT_VERSION = 1
MANIFEST_NAME = "store.json"
SHARDS_DIR = "shards"
META_DIR = "meta"
LANCE_DIR = "lance"
LOCK_NAME = ".lock"
KINDS = ("clip", "window", "video")

TMP_PREFIX = ".tmp-"  # temporaries of an interrupted write; ignored by readers, removed by writers
KV_REPLACES = b"videoprism.replaces"  # Parquet key-value metadata of a part: see docs/store-format.md
KV_NEXT_ID = b"videoprism.next_id"
KV_COMPACTED = b"videoprism.compacted"
SHARD_NAME_RE = re.compile(r"^shards/[0-9]{12,}-[0-9a-f]{8}\.(emb|frames)\.npy$")

METADATA_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_ns", pa.int64(), nullable=False),
        pa.field("model_id", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("start", pa.float64()),
        pa.field("end", pa.float64()),
        pa.field("frame_indices", pa.list_(pa.int64())),
        pa.field("duration", pa.float64()),
        pa.field("num_frames_total", pa.int64()),
        pa.field("video_rows", pa.int64()),
        pa.field("error", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("frames_shard", pa.string()),
    ]
)
RECORD_KEYS = frozenset(METADATA_SCHEMA.names) - {"id", "shard", "row", "frames_shard"}  # what a writer's record holds


def empty_table() -> pa.Table:
    """A metadata table with no rows."""
    return METADATA_SCHEMA.empty_table()


def file_key(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """Returns the resume key ``(absolute path, size, mtime_ns)`` of a video file, as ``is_done`` expects it.

    Args:
        path: Video file.
    """
    st = os.stat(path)
    return os.path.abspath(os.fspath(path)), st.st_size, st.st_mtime_ns


# --------------------------------------------------------------------------------------------------------------------
# Durable file primitives


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Makes the renames and deletions inside a folder durable (POSIX; a no-op elsewhere)."""
    if os.name == "posix":
        _fsync_path(path)


def write_error(err: OSError, path: str | os.PathLike[str]) -> WriteError:
    """The `WriteError` for a failed write of ``path``: says why (disk full, read-only, no permission) and what to do;
    a `WriteError` passes through."""
    if isinstance(err, WriteError):
        return err
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full (or over quota); what was written before is kept: free space and re-run to resume"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "the folder is read-only or not writable by this user; fix its permissions or choose another folder"
    else:
        why = f"{err.strerror or err}; what was written before is kept"
    return WriteError(err.errno, f"cannot write {printable(path)}: {why}")


@contextlib.contextmanager
def _renamed_into_place(final: Path) -> Iterator[Path]:
    """Yields a temporary name beside ``final``, renamed to ``final`` when the block succeeds and deleted otherwise.

    Raises:
        WriteError: The file could not be written (disk full, read-only folder, ...).
    """
    tmp = final.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise write_error(err, final) from err
        raise
    fsync_dir(final.parent)


def atomic_write(final: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Writes a file so that ``final`` either does not exist or is complete, even across a crash."""
    with _renamed_into_place(final) as tmp, open(tmp, "xb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def save_npy(final: Path, array: np.ndarray) -> None:
    """Writes ``array`` as a ``.npy`` file with ``atomic_write``."""
    atomic_write(final, lambda f: np.save(f, array, allow_pickle=False))


def save_npy_streaming(final: Path, shape: tuple[int, ...], fill: Callable[[np.ndarray], None]) -> None:
    """Like ``save_npy`` for a float16 array filled in place through a memory map, so it never has to fit in RAM."""
    with _renamed_into_place(final) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        fill(out)
        out.flush()
        del out
        _fsync_path(tmp)


def write_part(final: Path, table: pa.Table, kv: Mapping[bytes, bytes]) -> None:
    """Writes a metadata part (Parquet) with ``atomic_write``, adding ``kv`` to its key-value metadata."""
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **kv})
    atomic_write(final, lambda f: pq.write_table(table, f))


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file, read from its header alone.

    Raises:
        ValueError: Not a ``.npy`` file, or a Fortran-ordered array.
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if fortran:
        raise ValueError("Fortran-ordered array")
    return shape, dtype


# --------------------------------------------------------------------------------------------------------------------
# Manifest


def manifest_path(root: Path) -> Path:
    """The manifest file of the store at ``root``."""
    return root / MANIFEST_NAME


def read_manifest(root: Path) -> dict[str, Any]:
    """Reads and validates the manifest of the store at ``root``.

    Raises:
        StoreNotFoundError: No store at ``root``.
        StoreCorruptedError: Store data without a manifest, or an unreadable or invalid manifest.
        StoreError: The store's format version is newer than this code supports.
    """
    path = manifest_path(root)
    if not path.is_file():
        if (root / META_DIR).is_dir() or (root / SHARDS_DIR).is_dir():
            raise StoreCorruptedError(
                f"{root} has store data but no {MANIFEST_NAME}; restore it from a backup or recreate it with the "
                f"store's model id and dim ({FORMAT_NAME} format {FORMAT_VERSION})"
            )
        raise StoreNotFoundError(
            f"no embedding store at {root} (missing {MANIFEST_NAME}); create one with `videoprism embed VIDEOS "
            f"--out {root}` or EmbeddingStore.open({str(root)!r}, model_id=..., dim=...)"
        )
    try:
        manifest = json.loads(path.read_text())
        ok = (
            isinstance(manifest, dict)
            and manifest.get("format") == FORMAT_NAME
            and isinstance(manifest.get("format_version"), int)
            and isinstance(manifest.get("model_id"), str)
            and isinstance(manifest.get("dim"), int)
            and manifest.get("dtype") == "float16"
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreCorruptedError(f"cannot read the manifest {path}: {e}; restore it from a backup") from e
    if not ok:
        raise StoreCorruptedError(
            f"{path} is not a valid {FORMAT_NAME} manifest (needs format, format_version, model_id, dim and "
            f"dtype='float16'); restore it from a backup"
        )
    if manifest["format_version"] > FORMAT_VERSION:
        raise StoreError(
            f"{root} uses store format {manifest['format_version']}, newer than this videoprism supports "
            f"({FORMAT_VERSION}); upgrade videoprism"
        )
    return manifest


def check_compatible(root: Path, manifest: Mapping[str, Any], model_id: str | None, dim: int | None) -> None:
    """Checks that a store's manifest matches the requested model and dimension (None: not checked).

    Raises:
        StoreMismatchError: It does not.
    """
    if model_id is not None and model_id != manifest["model_id"]:
        raise StoreMismatchError(
            f"store {root} holds embeddings of model {manifest['model_id']!r}, not {model_id!r}; a store holds one "
            f"model's embeddings, so write to another --out folder"
        )
    if dim is not None and dim != manifest["dim"]:
        raise StoreMismatchError(
            f"store {root} holds {manifest['dim']}-dim embeddings, not {dim}-dim; write to another --out folder"
        )
