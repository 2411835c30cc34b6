"""The videos a collection tool works on: expanding inputs (files, folders, globs, ``@lists``, URLs) and resume keys."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ..errors import VideoInputNotFoundError
from ..store import file_key
from ..video_io import is_url, not_a_file_reason

__all__ = ["VIDEO_EXTENSIONS", "expand_inputs", "other_media_extensions", "resume_key"]

#: File name endings picked up when scanning folders and globs (explicitly named files are always tried).
VIDEO_EXTENSIONS = frozenset(
    {
        ".3g2", ".3gp", ".asf", ".avi", ".divx", ".f4v", ".flv", ".gif", ".h264", ".h265", ".hevc", ".m2ts",
        ".m2v", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".mxf", ".ogv", ".qt", ".ts", ".vob",
        ".webm", ".wmv", ".y4m",
        # Further video containers and elementary streams FFmpeg (PyAV) decodes.
        ".264", ".265", ".266", ".apng", ".avs", ".bik", ".cavs", ".dav", ".dif", ".dv", ".evo", ".flc", ".fli",
        ".flx", ".h261", ".h263", ".h266", ".ismv", ".ivf", ".m1v", ".m2t", ".mj2", ".mjpeg", ".mjpg", ".mk3d",
        ".mod", ".mxg", ".nsv", ".nut", ".obu", ".ogm", ".rm", ".rmvb", ".roq", ".smk", ".tod", ".vc1", ".vro",
        ".vvc", ".wtv",
    }
)  # fmt: skip


def other_media_extensions() -> frozenset[str]:
    """Extensions FFmpeg's demuxers (through PyAV) declare that are not in `VIDEO_EXTENSIONS`: audio, still images,
    subtitles and the like, skipped by folder scans and reported as skipped."""
    import av

    found = set()
    for name in av.formats_available:
        try:
            fmt = av.ContainerFormat(name)
        except (ValueError, av.FFmpegError):
            continue
        if fmt.is_input:
            found.update(f".{ext.lower()}" for ext in fmt.extensions)
    return frozenset(found - VIDEO_EXTENSIONS - _TEXT_EXTENSIONS)


# Extensions FFmpeg reads as text (ANSI art, subtitles, playlists, metadata): not worth reporting as skipped media.
_TEXT_EXTENSIONS = frozenset(
    {
        ".ans", ".aqt", ".art", ".asc", ".ass", ".dat", ".diz", ".ffmeta", ".ice", ".idx", ".js", ".jss", ".lrc",
        ".m3u8", ".mcc", ".mpl2", ".nfo", ".pjs", ".rt", ".sami", ".scc", ".smi", ".srt", ".ssa", ".stl", ".sub",
        ".sup", ".txt", ".vt", ".vtt", ".webvtt", ".xml",
    }
)  # fmt: skip


_GLOB_CHARS = re.compile(r"[*?\[]")


def _is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS and not name.startswith(".")


def _scan_folder(folder: Path, skipped: list[str] | None = None) -> list[str]:
    """Video files under ``folder``, recursively, sorted; hidden files and folders (``.name``) are skipped.

    Files with an extension of `other_media_extensions` are appended to ``skipped`` (when given).
    """
    found = []
    other = other_media_extensions() if skipped is not None else frozenset()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if _is_video_name(f):
                found.append(os.path.abspath(os.path.join(root, f)))
            elif skipped is not None and not f.startswith(".") and os.path.splitext(f)[1].lower() in other:
                skipped.append(os.path.abspath(os.path.join(root, f)))
    return found


def _expand_item(item: str, base: Path | None, where: str, skipped: list[str] | None = None) -> list[str]:
    if is_url(item):
        return [item]
    path = Path(item).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if path.is_file():
        return [os.path.abspath(path)]
    if path.is_dir():
        return _scan_folder(path, skipped)
    if os.path.lexists(path):  # there is something, but no file or folder: say what
        raise VideoInputNotFoundError(f"{where}: {path} is {not_a_file_reason(path)}")
    if _GLOB_CHARS.search(item):
        out = []
        for match in sorted(glob.glob(str(path), recursive=True)):
            if os.path.isdir(match):
                out += _scan_folder(Path(match), skipped)
            elif _is_video_name(os.path.basename(match)):
                out.append(os.path.abspath(match))
        if not out:
            raise VideoInputNotFoundError(f"{where}: the pattern {item!r} matches no video file")
        return out
    raise VideoInputNotFoundError(f"{where}: no such file or folder: {path}")


def expand_inputs(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], skipped: list[str] | None = None
) -> list[str]:
    """The videos named by command-line style inputs, in order, without duplicates.

    Each input is a video file (any name), a folder (scanned recursively for ``VIDEO_EXTENSIONS``; hidden files are
    skipped), a glob (``"clips/**/*.mp4"``; matching folders are scanned, matching files kept if they have a video
    extension), an ``http(s)://`` URL, or ``@list.txt``: a text file with one such input per line (blank lines and
    ``#`` comments skipped; relative paths are relative to the list file's folder).

    Args:
        inputs: One input or a sequence of them.
        skipped: When given, files of scanned folders that FFmpeg may read but whose extension is not a video's
            (audio, images, subtitles: `other_media_extensions`) are appended to it; name such a file to try it.

    Returns:
        Absolute paths (and URLs as given).

    Raises:
        VideoInputNotFoundError: An input names nothing that exists, a glob matches no video, or a list is unreadable.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[str] = []
    seen: set[str] = set()
    for raw in inputs:
        item = os.fspath(raw)
        if item.startswith("@") and not os.path.exists(item):
            list_path = Path(item[1:]).expanduser()
            try:
                lines = list_path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise VideoInputNotFoundError(
                    f"cannot read the input list {list_path} ({err}); write one video path or URL per line"
                ) from err
            found = []
            for n, line in enumerate(lines, 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    found += _expand_item(line, list_path.resolve().parent, f"{list_path}:{n}", skipped)
        else:
            found = _expand_item(item, None, item, skipped)
        for path in found:
            if path not in seen:
                seen.add(path)
                out.append(path)
    return out


def resume_key(path: str) -> tuple[str, int, int]:
    """Resume key; a URL has no size or mtime (0, 0), so it is embedded once and then always skipped."""
    if is_url(path):
        return path, 0, 0
    return file_key(path)
