"""Labelled video sets for probe training: a folder per class, or a CSV / JSONL list of ``path,label[,start,end]``.

A folder set holds one sub-folder per class (the folder name is the class); the videos of a class are found as
``videoprism embed`` finds them in a folder (recursively, by video file extension, hidden names skipped). A list set
is a ``.csv`` file with a header row, or a ``.jsonl`` file with one object per line, with the fields ``path`` and
``label`` and, optionally, ``start`` and ``end`` (seconds: only that part of the video is used). Relative paths are
relative to the list file's folder. ``"a|b"`` gives a video the labels ``a`` and ``b`` (a JSONL label may also be a
list), which makes the set multi-label; rows naming the same video and span have their labels merged.

A video file that does not exist is skipped, not fatal: the others are kept and the skipped ones are listed (and
printed). Item order is deterministic: classes and files sorted for a folder, row order for a list file.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..collection.inputs import VIDEO_EXTENSIONS, expand_inputs
from ..errors import (
    EmptyClassError,
    EmptyLabelError,
    EmptyLabelledSetError,
    LabelColumnsError,
    LabelledSetError,
    LabelledSetNotFoundError,
    SingleClassError,
    SplitError,
    TimeRangeError,
    UnknownLabelError,
)

__all__ = [
    "COLUMNS",
    "EmptyClassError",
    "EmptyLabelError",
    "EmptyLabelledSetError",
    "LabelColumnsError",
    "LabelledItem",
    "LabelledSet",
    "LabelledSetError",
    "LabelledSetNotFoundError",
    "SingleClassError",
    "SplitError",
    "TimeRangeError",
    "UnknownLabelError",
    "load_labelled_set",
    "shown",
]

#: Fields of a list file: the first two are required.
COLUMNS = ("path", "label", "start", "end")
LABEL_SEPARATOR = "|"
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def shown(path: str) -> str:
    """A file name fit for a terminal: as is when printable, else its repr (control characters escaped)."""
    return path if path.isprintable() else repr(path)


@dataclass(frozen=True)
class LabelledItem:
    """One labelled clip: a video (absolute path or URL), its labels, and optionally the seconds it spans."""

    path: str
    labels: tuple[str, ...]
    start: float | None = None
    end: float | None = None


@dataclass
class LabelledSet:
    """A labelled video set (see the module docstring).

    Attributes:
        items: The clips, in deterministic order.
        class_names: Every class, sorted; target columns follow this order.
        multi_label: Whether some clip has several labels.
        source: Where the set was read from.
        skipped: ``(path, reason)`` of each listed video that was left out (a missing file).
    """

    items: list[LabelledItem]
    class_names: list[str]
    multi_label: bool
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def targets(self) -> np.ndarray:
        """(n, C) float32 multi-hot targets (one-hot for a single-label set), columns in `class_names` order."""
        column = {name: c for c, name in enumerate(self.class_names)}
        out = np.zeros((len(self.items), len(self.class_names)), np.float32)
        for i, item in enumerate(self.items):
            out[i, [column[label] for label in item.labels]] = 1.0
        return out

    def subset(self, indices: Iterable[int]) -> LabelledSet:
        """The items at ``indices`` (in that order), with the same classes."""
        return replace(self, items=[self.items[i] for i in indices], skipped=list(self.skipped))

    def split(self, val_fraction: float, seed: int = 0) -> tuple[LabelledSet, LabelledSet]:
        """A reproducible stratified ``(train, val)`` split.

        Each class (for a multi-label set: each clip's rarest label) gives ``round(val_fraction * count)`` of its
        clips to ``val``, keeping at least one in ``train``; the clips are drawn with a generator seeded by ``seed``.
        Both parts keep the set's order and all its class names.

        Args:
            val_fraction: Share of the clips for validation, in (0, 1).
            seed: Seed of the draw: the same seed gives the same split.

        Raises:
            SplitError: ``val_fraction`` is outside (0, 1), or no clip would go to validation.
        """
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
            raise SplitError(f"val_fraction={val_fraction!r}: give the share of videos for validation, in (0, 1)")
        rng = np.random.default_rng(_seed(seed))
        val: list[int] = []
        for members in self._strata():
            take = min(round(val_fraction * len(members)), len(members) - 1)
            if take > 0:
                val += rng.choice(members, size=take, replace=False).tolist()
        if not val:
            raise SplitError(
                f"a validation share of {val_fraction} of {self.source or 'the set'} ({len(self)} videos, at most "
                f"{max(len(m) for m in self._strata())} per class) is no video; raise --val-split or add videos"
            )
        chosen = set(val)
        return self.subset(i for i in range(len(self)) if i not in chosen), self.subset(sorted(chosen))

    def sample_shots(self, shots: int, seed: int = 0) -> LabelledSet:
        """A reproducible few-shot subset: ``shots`` clips of each class, drawn with a generator seeded by ``seed``.

        For a multi-label set a clip drawn for one class also counts for its other labels, so the subset may hold
        fewer than ``shots * classes`` clips. The subset keeps the set's order.

        Raises:
            SplitError: ``shots`` is not a positive integer, or a class has fewer clips than ``shots``.
        """
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
            raise SplitError(f"shots={shots!r}: give a positive number of videos per class")
        rng = np.random.default_rng(_seed(seed))
        chosen: set[int] = set()
        for name in self.class_names:
            members = [i for i, item in enumerate(self.items) if name in item.labels]
            if len(members) < shots:
                raise SplitError(
                    f"class {name!r} of {self.source or 'the set'} has {len(members)} videos, fewer than "
                    f"shots={shots}; lower --shots or add videos of that class"
                )
            have = [i for i in members if i in chosen]
            rest = [i for i in members if i not in chosen]
            if len(have) < shots:
                chosen.update(rng.choice(rest, size=shots - len(have), replace=False).tolist())
        return self.subset(sorted(chosen))

    def _strata(self) -> list[list[int]]:
        """Clip indices grouped by class (a multi-label clip goes with its rarest label), classes in name order."""
        counts: dict[str, int] = {}
        for item in self.items:
            for label in item.labels:
                counts[label] = counts.get(label, 0) + 1
        groups: dict[str, list[int]] = {name: [] for name in self.class_names}
        for i, item in enumerate(self.items):
            groups[min(item.labels, key=lambda label: (counts[label], label))].append(i)
        return [members for members in groups.values() if members]


def _seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SplitError(f"seed={seed!r}: give a non-negative integer")
    return seed


def load_labelled_set(
    source: str | os.PathLike[str], *, class_names: Iterable[str] | None = None, quiet: bool = False
) -> LabelledSet:
    """Reads a labelled video set: a folder with one sub-folder per class, or a ``.csv`` / ``.jsonl`` list.

    See the module docstring for the formats.

    Args:
        source: The folder or list file.
        class_names: The classes, in target column order, for a set scored against an existing head (a test set
            may then lack some classes); default: the set's own labels, sorted.
        quiet: Do not print the skipped videos to stderr.

    Returns:
        The set; videos that do not exist are left out and listed in its ``skipped``.

    Raises:
        LabelledSetNotFoundError: ``source`` does not exist.
        LabelledSetError: The set is unusable; the subclass says why (`EmptyClassError`, `LabelColumnsError`,
            `EmptyLabelledSetError`, `SingleClassError`, `TimeRangeError`, `EmptyLabelError`,
            `UnknownLabelError`).
    """
    path = Path(source).expanduser()
    name = shown(os.fspath(source))
    if path.is_dir():
        rows, skipped = _read_folder(path, name)
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".jsonl"):
            raise LabelledSetError(
                f"{name}: a labelled set is a folder with one sub-folder per class, a .csv or a .jsonl file; "
                f"rename the list file with one of these suffixes"
            )
        lines = _read_lines(path, name)
        records = _csv_records(lines, name) if suffix == ".csv" else _jsonl_records(lines, name)
        rows, skipped = _resolve(records, path.resolve().parent, name)
    else:
        raise LabelledSetNotFoundError(f"{name}: no such folder or file; give a class folder, a .csv or a .jsonl")
    if not quiet:
        for video, reason in skipped:
            print(f"videoprism probe: skipped {shown(video)}: {reason}", file=sys.stderr)
    return _build(rows, skipped, name, None if class_names is None else list(class_names))


# ----------------------------------------------------------------------------------------------------------------
# Folders


def _read_folder(folder: Path, name: str) -> tuple[list[tuple], list[tuple[str, str]]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise EmptyLabelledSetError(
            f"{name} has no class folders; put the videos of each class in a sub-folder named after the class"
        )
    rows: list[tuple] = []
    for class_dir in classes:
        videos = expand_inputs(class_dir)
        if not videos:
            raise EmptyClassError(
                f"class folder {shown(str(class_dir))} holds no video file (looked for "
                f"{', '.join(sorted(VIDEO_EXTENSIONS))}); add videos to it or remove it"
            )
        label = _label(class_dir.name, f"class folder {shown(str(class_dir))}")
        rows += [(video, (label,), None, None, f"{name}/{class_dir.name}") for video in videos]
    return rows, []


# ----------------------------------------------------------------------------------------------------------------
# List files


def _read_lines(path: Path, name: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise LabelledSetError(f"cannot read {name} ({err}); give a UTF-8 text file") from err


def _csv_records(lines: list[str], name: str) -> list[tuple[str, dict]]:
    reader = csv.reader(lines)
    header = next(reader, None)
    while header is not None and not any(cell.strip() for cell in header):
        header = next(reader, None)
    if header is None:
        raise EmptyLabelledSetError(f"{name} is empty; write a header row 'path,label' and one row per video")
    columns = [cell.strip().lower() for cell in header]
    _check_columns(columns, name)
    records = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        where = f"{name}:{reader.line_num}"
        if len(cells) != len(columns):
            raise LabelColumnsError(
                f"{where}: {len(cells)} fields, the header has {len(columns)} ({','.join(columns)}); quote fields "
                f"that hold commas"
            )
        records.append((where, {c: v.strip() for c, v in zip(columns, cells, strict=True) if v.strip() != ""}))
    if not records:
        raise EmptyLabelledSetError(f"{name} has a header but no rows; add one row per video")
    return records


def _jsonl_records(lines: list[str], name: str) -> list[tuple[str, dict]]:
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{name}:{n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LabelledSetError(f"{where}: not JSON ({err}); write one object per line") from err
        if not isinstance(record, dict):
            raise LabelledSetError(f'{where}: not a JSON object; write {{"path": ..., "label": ...}} per line')
        _check_columns(list(record), where)
        records.append((where, {k: v for k, v in record.items() if v is not None and v != ""}))
    if not records:
        raise EmptyLabelledSetError(f'{name} is empty; write one {{"path": ..., "label": ...}} object per line')
    return records


def _check_columns(columns: list[str], where: str) -> None:
    allowed = f"allowed: {', '.join(COLUMNS)} (path and label are required)"
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise LabelColumnsError(f"{where}: unknown column(s) {', '.join(map(repr, unknown))}; {allowed}")
    missing = [c for c in COLUMNS[:2] if c not in columns]
    if missing:
        raise LabelColumnsError(f"{where}: missing column(s) {', '.join(missing)}; {allowed}")
    if len(set(columns)) != len(columns):
        raise LabelColumnsError(f"{where}: a column appears twice; {allowed}")


def _resolve(records: list[tuple[str, dict]], base: Path, name: str) -> tuple[list[tuple], list[tuple[str, str]]]:
    rows: list[tuple] = []
    skipped: list[tuple[str, str]] = []
    for where, record in records:
        raw = record.get("path")
        if not isinstance(raw, str) or not raw.strip():
            raise LabelledSetError(f"{where}: the path is empty or not text; give the video file of each row")
        labels = _labels(record.get("label"), where)
        start, end = _time(record.get("start"), "start", where), _time(record.get("end"), "end", where)
        if start is not None and end is not None and not end > start:
            raise TimeRangeError(f"{where}: end={end} is not after start={start}; give end > start (seconds)")
        if _URL_RE.match(raw):
            video = raw
        else:
            path = Path(raw).expanduser()
            video = os.path.abspath(path if path.is_absolute() else base / path)
            if not os.path.isfile(video):
                reason = "a folder, not a video file" if os.path.isdir(video) else "no such file"
                skipped.append((video, f"{reason} (listed at {where})"))
                continue
        rows.append((video, labels, start, end, where))
    if not rows:
        raise EmptyLabelledSetError(f"none of the {len(records)} videos listed in {name} exists; check the paths")
    return rows, skipped


def _labels(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, list):
        parts = value
    elif isinstance(value, (str, int)) and not isinstance(value, bool):
        parts = str(value).split(LABEL_SEPARATOR)
    else:
        raise EmptyLabelError(f"{where}: the label is missing or not text; give each video at least one label")
    if not parts:
        raise EmptyLabelError(f"{where}: the label list is empty; give each video at least one label")
    return tuple(dict.fromkeys(_label(p, where) for p in parts))


def _label(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise EmptyLabelError(
            f"{where}: empty label {value!r}; every label needs text (separate several with '{LABEL_SEPARATOR}')"
        )
    return str(value).strip()


def _time(value: object, column: str, where: str) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds):
        raise TimeRangeError(f"{where}: {column}={value!r} is not a number of seconds; give e.g. {column}=2.5")
    if seconds < 0:
        raise TimeRangeError(f"{where}: {column}={value!r} is negative; give seconds from the start of the video")
    return seconds


# ----------------------------------------------------------------------------------------------------------------
# The set


def _build(rows: list[tuple], skipped: list[tuple[str, str]], name: str, given: list[str] | None) -> LabelledSet:
    merged: dict[tuple, list[str]] = {}
    for video, labels, start, end, _ in rows:  # rows naming one video and span merge their labels
        merged.setdefault((video, start, end), []).extend(labels)
    items = [LabelledItem(v, tuple(dict.fromkeys(labels)), s, e) for (v, s, e), labels in merged.items()]
    class_names = sorted({label for item in items for label in item.labels})
    if given is not None:
        unknown = [label for label in class_names if label not in given]
        if unknown:
            shown_unknown = ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
            raise UnknownLabelError(
                f"{name} has labels the classifier does not know: {shown_unknown}; its classes are "
                f"{', '.join(map(repr, given[:20]))}{' ...' if len(given) > 20 else ''}"
            )
        if len(set(given)) != len(given) or len(given) < 2:
            raise SingleClassError(f"class_names={given!r}: give at least two distinct classes")
        class_names = given
    if len(class_names) < 2:
        raise SingleClassError(
            f"{name} has a single class ({class_names[0]!r}); a probe needs videos of at least two classes"
        )
    return LabelledSet(
        items=items,
        class_names=class_names,
        multi_label=any(len(item.labels) > 1 for item in items),
        source=name,
        skipped=skipped,
    )
