"""Finding a named file in "a local folder or a hub repo id", shared by the tokenizer and the processors."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

logger = logging.getLogger(__name__)


class SourceNotFoundError(FileNotFoundError):
    """The source is neither an existing local path nor a hub repo that can be reached."""


def looks_like_repo_id(source: str) -> bool:
    """Whether `source` has the `org/name` form of a hub repo id (and is not a relative or absolute path)."""
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no", "off")


def preset_repo_id(source: str) -> str:
    """The hub repo of a preset name (`videoprism-lvt-base-f16r288`); other sources are returned unchanged."""
    from .configuration import PRESETS

    return PRESETS[source].repo_id if source in PRESETS else source


def hub_file(repo_id: str, filename: str, revision: str | None = None, cache_dir=None) -> str | None:
    """A file of a hub repo, downloaded or taken from the cache; None when the repo lacks it or it cannot be had.

    Honours HF_HUB_OFFLINE (then only the cache is used). Raises `SourceNotFoundError` when the repo itself does
    not exist (or is private) or the revision is unknown.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:  # offline, or no network, and not cached
        logger.debug("cannot get %s from %s: %s", filename, repo_id, err)
        return None
    except EntryNotFoundError:
        return None
    except RevisionNotFoundError as err:
        raise SourceNotFoundError(f"hub repo {repo_id!r} has no revision {revision!r} ({err})") from err
    except GatedRepoError as err:
        raise SourceNotFoundError(
            f"hub repo {repo_id!r} is gated: accept its terms on the hub and log in (`hf auth login`) ({err})"
        ) from err
    except RepositoryNotFoundError as err:
        raise SourceNotFoundError(f"hub repo {repo_id!r} does not exist or is private ({err})") from err


def find_file(
    source: str | os.PathLike,
    filenames: Sequence[str],
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> str | None:
    """The local path of the first of `filenames` found in `source`, or None when `source` has none of them.

    Args:
        source: A local folder, a hub repo id (`org/name`), or a preset name (resolved to its hub repo).
        filenames: Candidate file names, in order of preference.
        revision: Hub branch, tag, commit or ref such as `refs/pr/4`.
        cache_dir: Hub cache folder (default: huggingface_hub's).

    Raises:
        SourceNotFoundError: `source` is no existing folder, no hub repo id, or names a repo that does not exist.
    """
    text = os.fspath(source)
    path = os.path.expanduser(text)
    if not os.path.exists(path):  # a local folder wins over a preset of the same name
        text = preset_repo_id(text)
        path = os.path.expanduser(text)
    if os.path.isdir(path):
        for name in filenames:
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        return None
    if os.path.exists(path):
        raise SourceNotFoundError(f"{path} is a file; expected a folder or a hub repo id holding {list(filenames)}")
    if not looks_like_repo_id(text):
        raise SourceNotFoundError(f"{text!r} is not an existing folder nor a hub repo id of the form 'org/name'")
    for name in filenames:
        found = hub_file(text, name, revision=revision, cache_dir=cache_dir)
        if found is not None:
            return found
    return None
