"""Where a model's files are: one resolver for every name form, and one set of hub errors.

A source is a preset name (`videoprism-lvt-base-f16r288`), a local folder, a local file (`.npz`, `.safetensors`),
or a hub repo id (`org/name`, at a revision). `resolve_source` classifies it once, without network access, into a
`ModelSource` that the models, the tokenizer and the processors all accept; files are fetched from the hub only
when one of them asks for a file.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .configuration import CONFIG_NAME, PRESETS, find_preset
from .errors import CheckpointError, CheckpointNotFoundError, SourceNotFoundError

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
SOURCE_KINDS = ("folder", "file", "hub")


def looks_like_repo_id(text: str) -> bool:
    """Whether `text` has the `org/name` form of a hub repo id (and is not a relative or absolute path)."""
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def hub_offline() -> bool:
    """Whether huggingface_hub may only use its cache (HF_HUB_OFFLINE, read from the environment or its constant)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no", "off"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def offline_hint() -> str:
    """A sentence for messages about files that could not be had, naming the way out when the hub is offline."""
    if not hub_offline():
        return ""
    return " HF_HUB_OFFLINE is set and nothing is cached: unset it to download, or pass a local folder or file instead."


# Seconds to wait for a TCP connection to the hub; after a failure, how long the hub counts as unreachable.
HUB_CONNECT_TIMEOUT_S = 5.0
_UNREACHABLE_FOR_S = 60.0
_unreachable_until = 0.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_reachable() -> bool:
    """Whether a TCP connection to the hub's endpoint opens within `HUB_CONNECT_TIMEOUT_S` (True behind a proxy,
    which this check cannot see through).

    huggingface_hub retries a connection that fails for about 30 s per file; this one attempt lets a machine without
    network fail at once. A failure is remembered for a minute.
    """
    global _unreachable_until
    if time.monotonic() < _unreachable_until:
        return False
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return True
    from huggingface_hub import constants

    url = urllib.parse.urlsplit(constants.ENDPOINT)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname, port), timeout=HUB_CONNECT_TIMEOUT_S).close()
        return True
    except (OSError, ValueError):
        _unreachable_until = time.monotonic() + _UNREACHABLE_FOR_S
        return False


def _unreachable_error(what: str) -> SourceNotFoundError:
    from huggingface_hub import constants

    return SourceNotFoundError(
        f"cannot reach the hub ({constants.ENDPOINT}) for {what}, and it is not cached: no network connection? Set "
        "HF_HUB_OFFLINE=1 to use cached files only, or pass a local folder or file instead."
    )


def hub_file(repo_id: str, filename: str, revision: str | None = None, cache_dir=None) -> str | None:
    """A file of a hub repo, downloaded or taken from the cache; None when the repo lacks it.

    With HF_HUB_OFFLINE set, only the cache is used and a file missing from it is None as well (the caller's
    message says so through `offline_hint`).

    Raises:
        SourceNotFoundError: The repo does not exist or is private, is gated, has no such revision, or the hub
            cannot be reached and the file is not cached.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision!r}" if revision else ""
    if not hub_offline() and not hub_reachable():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        if isinstance(cached, str):
            return cached
        raise _unreachable_error(f"{filename} of {repo_id!r}{at}")
    try:
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        if hub_offline():
            logger.debug("%s of %s is not cached (offline): %s", filename, repo_id, err)
            return None
        raise SourceNotFoundError(
            f"cannot reach the hub for {filename} of {repo_id!r}{at}, and it is not cached ({err}). Check the "
            "network, set HF_HUB_OFFLINE=1 to use cached files only, or pass a local folder or file instead."
        ) from err
    except EntryNotFoundError:
        return None
    except RevisionNotFoundError as err:
        raise SourceNotFoundError(
            f"hub repo {repo_id!r} has no revision {revision!r}; pass an existing branch, tag or commit ({err})"
        ) from err
    except GatedRepoError as err:
        raise SourceNotFoundError(
            f"hub repo {repo_id!r} is gated: accept its terms on the hub and log in (`hf auth login`) ({err})"
        ) from err
    except RepositoryNotFoundError as err:
        raise SourceNotFoundError(
            f"hub repo {repo_id!r} does not exist or is private; check the name, or log in (`hf auth login`) ({err})"
        ) from err
    except HfHubHTTPError as err:
        raise SourceNotFoundError(f"the hub refused {filename} of {repo_id!r}{at} ({err})") from err


def hub_npz_files(repo_id: str, revision: str | None = None, cache_dir=None) -> list[str]:
    """Every `.npz` of a hub repo (from the cache when offline); empty when it has none or none is cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    if not hub_offline() and not hub_reachable():
        raise _unreachable_error(f"the .npz files of {repo_id!r}")
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=["*.npz"])
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        logger.debug("no cached .npz snapshot of %s: %s", repo_id, err)
        return []
    return sorted(str(p) for p in Path(folder).rglob("*.npz"))


@dataclass(frozen=True)
class ModelSource:
    """A resolved model source: what was given, and where its files are.

    Attributes:
        given: The source as the caller wrote it.
        kind: "folder" (a local folder), "file" (a local file) or "hub" (a hub repo).
        path: The local folder or file; None for a hub repo.
        repo_id: The hub repo; None for local sources.
        revision: Hub branch, tag, commit or ref such as `refs/pr/4`.
        cache_dir: Hub cache folder (default: huggingface_hub's).
        preset: The name of the released checkpoint the source is (found from a preset name, repo or file name).
    """

    given: str
    kind: str
    path: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    cache_dir: str | None = None
    preset: str | None = None

    @property
    def folder(self) -> str | None:
        """The local folder that holds the source's files (a file's own folder); None for a hub repo."""
        if self.kind == "hub":
            return None
        return self.path if self.kind == "folder" else os.path.dirname(os.path.abspath(self.path))

    @property
    def model_id(self) -> str:
        """A name that tells models apart: `repo_id[@revision]` on the hub, the absolute path of a local source."""
        if self.kind == "hub":
            return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id
        return os.path.abspath(self.path)

    def __str__(self) -> str:
        return self.given

    def find_file(self, filenames: Sequence[str], is_wanted_file: Callable[[str], bool] | None = None) -> str | None:
        """The local path of the first of `filenames` the source holds, or None.

        Args:
            filenames: Candidate file names, in order of preference.
            is_wanted_file: For a file source: whether that file is itself the one wanted (a vocabulary, a
                settings file); otherwise, and by default, the files beside it are searched.

        Raises:
            SourceNotFoundError: The hub repo cannot be used (see `hub_file`).
        """
        if self.kind == "file" and is_wanted_file is not None and is_wanted_file(self.path):
            return self.path
        if self.kind == "hub":
            for name in filenames:
                found = hub_file(self.repo_id, name, revision=self.revision, cache_dir=self.cache_dir)
                if found is not None:
                    return found
            return None
        for name in filenames:
            candidate = os.path.join(self.folder, name)
            if os.path.isfile(candidate):
                return candidate
        return None

    def checkpoint_file(self) -> tuple[str, str]:
        """("folder" | "npz" | "safetensors", local path) of the weights, downloaded from the hub if needed.

        Raises:
            CheckpointError: The source holds no checkpoint in a known format, or several `.npz` files.
            CheckpointNotFoundError: The hub repo has no checkpoint (or it is not cached when offline).
        """
        if self.kind == "folder":
            if os.path.isfile(os.path.join(self.path, CONFIG_NAME)):
                return "folder", self.path
            npz = sorted(p for p in os.listdir(self.path) if p.endswith(".npz"))
            if len(npz) == 1:
                return "npz", os.path.join(self.path, npz[0])
            raise CheckpointError(
                f"folder {self.path} holds neither config.json (transformers format) nor one Flax .npz"
            )
        if self.kind == "file":
            if self.path.endswith(".npz"):
                return "npz", self.path
            if self.path.endswith(".safetensors"):
                return "safetensors", self.path
            raise CheckpointError(
                f"{self.path}: unknown checkpoint format; expected a Flax .npz, a .safetensors file or a "
                "transformers folder"
            )
        return self._hub_checkpoint()

    def _hub_checkpoint(self) -> tuple[str, str]:
        repo, revision, cache = self.repo_id, self.revision, self.cache_dir
        config_path = hub_file(repo, CONFIG_NAME, revision, cache)
        if config_path is not None:
            index = hub_file(repo, WEIGHTS_INDEX_NAME, revision, cache)
            if index is not None:
                with open(index, encoding="utf-8") as f:
                    for shard in sorted(set(json.load(f)["weight_map"].values())):
                        hub_file(repo, shard, revision, cache)
            elif hub_file(repo, WEIGHTS_NAME, revision, cache) is None:
                raise CheckpointNotFoundError(f"hub repo {repo!r} has config.json but no {WEIGHTS_NAME}")
            return "folder", os.path.dirname(config_path)
        preset = PRESETS.get(self.preset) if self.preset else None
        path = hub_file(repo, preset.flax_file, revision, cache) if preset else None
        if path is not None:
            return "npz", path
        npz = hub_npz_files(repo, revision, cache)
        if len(npz) > 1:
            raise CheckpointError(f"hub repo {repo!r} holds several .npz files {npz}; pass one of them as the source")
        if npz:
            return "npz", npz[0]
        raise CheckpointNotFoundError(
            f"found neither config.json + {WEIGHTS_NAME} nor a Flax .npz in hub repo {repo!r}"
            f"{f' at revision {revision!r}' if revision else ''}.{offline_hint()}"
        )


def resolve_source(
    source: str | os.PathLike | ModelSource,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ModelSource:
    """Classifies a model source once, without network access.

    An existing local path wins over a preset of the same name; a preset name stands for its hub repo.

    Args:
        source: A preset name, a local folder or file, a hub repo id (`org/name`), or a `ModelSource` (returned
            as it is).
        revision: Hub branch, tag, commit or ref such as `refs/pr/4` (hub sources only).
        cache_dir: Hub cache folder (default: huggingface_hub's).

    Raises:
        SourceNotFoundError: `source` is no existing path, no preset and no hub repo id.
    """
    if isinstance(source, ModelSource):
        return source
    text = os.fspath(source)
    cache = os.fspath(cache_dir) if cache_dir is not None else None
    path = os.path.expanduser(text)
    if os.path.exists(path):
        preset = find_preset(path)
        kind = "folder" if os.path.isdir(path) else "file"
        return ModelSource(text, kind, path=path, cache_dir=cache, preset=preset.name if preset else None)
    if text in PRESETS:
        return ModelSource(text, "hub", repo_id=PRESETS[text].repo_id, revision=revision, cache_dir=cache, preset=text)
    if looks_like_repo_id(text):
        preset = find_preset(text)
        name = preset.name if preset is not None else None
        return ModelSource(text, "hub", repo_id=text, revision=revision, cache_dir=cache, preset=name)
    raise SourceNotFoundError(
        f"{text!r} is not an existing folder or file, a hub repo id of the form 'org/name', or a preset "
        f"({', '.join(PRESETS)})"
    )
