"""The one source resolver: every name form, and the hub errors (huggingface_hub patched at its functions)."""

import os

import httpx2
import huggingface_hub
import huggingface_hub.constants
import pytest
from huggingface_hub import errors as hub_errors

import videoprism
from videoprism import CheckpointNotFoundError, ModelSource, SourceNotFoundError, TokenizerNotFoundError, resolve_source
from videoprism._sources import hub_file


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/org/name"))


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(videoprism._sources, "hub_reachable", lambda: True)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def raising(error):
    def download(*args, **kwargs):
        raise error

    return download


# ---------------------------------------------------------------------------------------------------------------
# Name forms


def test_preset_name_is_its_hub_repo():
    source = resolve_source("videoprism-lvt-base-f16r288", revision="refs/pr/4")
    assert (source.kind, source.repo_id, source.revision) == ("hub", "google/videoprism-lvt-base-f16r288", "refs/pr/4")
    assert source.preset == "videoprism-lvt-base-f16r288"
    assert source.path is None and source.folder is None
    assert source.model_id == "google/videoprism-lvt-base-f16r288@refs/pr/4"


def test_hub_repo_id():
    source = resolve_source("someone/my-model", cache_dir="/tmp/hub")
    assert (source.kind, source.repo_id, source.revision, source.cache_dir) == (
        "hub",
        "someone/my-model",
        None,
        "/tmp/hub",
    )
    assert source.preset is None and str(source) == "someone/my-model"
    # The preset of a released repo is found from its name.
    assert resolve_source("google/videoprism-base-f16r288").preset == "videoprism-base-f16r288"


def test_local_folder_and_files(tmp_path):
    folder = resolve_source(tmp_path)
    assert (folder.kind, folder.path, folder.folder) == ("folder", str(tmp_path), str(tmp_path))
    assert folder.model_id == os.path.abspath(tmp_path)
    npz = tmp_path / "flax_base_f16r288_repeated.npz"
    npz.write_bytes(b"")
    source = resolve_source(npz)
    assert (source.kind, source.path, source.folder) == ("file", str(npz), str(tmp_path))
    assert source.preset == "videoprism-base-f16r288"
    assert source.checkpoint_file() == ("npz", str(npz))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    assert resolve_source(weights).checkpoint_file() == ("safetensors", str(weights))


def test_a_local_folder_wins_over_a_preset_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "videoprism-base-f16r288").mkdir()
    assert resolve_source("videoprism-base-f16r288").kind == "folder"


def test_a_resolved_source_passes_through():
    source = resolve_source("someone/my-model")
    assert resolve_source(source) is source
    assert isinstance(source, ModelSource)
    with pytest.raises(AttributeError):
        source.kind = "folder"  # frozen


def test_unknown_source():
    with pytest.raises(SourceNotFoundError, match="'no/such/thing.npz' is not an existing folder or file.*preset"):
        resolve_source("no/such/thing.npz")
    with pytest.raises(FileNotFoundError):
        resolve_source("./missing")


def test_find_file_in_a_folder_and_beside_a_file(tmp_path):
    (tmp_path / "b.json").write_text("{}")
    (tmp_path / "model.npz").write_bytes(b"")
    folder = resolve_source(tmp_path)
    assert folder.find_file(["a.json", "b.json"]) == str(tmp_path / "b.json")
    assert folder.find_file(["a.json"]) is None
    beside = resolve_source(tmp_path / "model.npz")
    assert beside.find_file(["b.json"]) == str(tmp_path / "b.json")
    assert beside.find_file(["b.json"], lambda path: path.endswith(".npz")) == str(tmp_path / "model.npz")


# ---------------------------------------------------------------------------------------------------------------
# Hub errors


def test_hub_file_found_and_missing(monkeypatch, online, tmp_path):
    calls = []

    def download(repo_id, filename, revision=None, cache_dir=None):
        calls.append((repo_id, filename, revision, cache_dir))
        if filename == "config.json":
            return str(tmp_path / filename)
        raise hub_errors.RemoteEntryNotFoundError("no such file", response=_response(404))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert hub_file("org/name", "config.json", "v1", "/c") == str(tmp_path / "config.json")
    assert hub_file("org/name", "spiece.model") is None
    assert calls == [("org/name", "config.json", "v1", "/c"), ("org/name", "spiece.model", None, None)]


@pytest.mark.parametrize(
    "error, message",
    [
        (hub_errors.GatedRepoError("gated", response=_response(403)), "is gated: accept its terms.*hf auth login"),
        (hub_errors.RevisionNotFoundError("no rev", response=_response(404)), "has no revision 'v9'"),
        (hub_errors.RepositoryNotFoundError("no repo", response=_response(404)), "does not exist or is private"),
        (hub_errors.HfHubHTTPError("server error", response=_response(500)), "the hub refused config.json"),
        (hub_errors.LocalEntryNotFoundError("connection failed"), "cannot reach the hub.*HF_HUB_OFFLINE=1.*local"),
    ],
    ids=["gated", "revision", "repo", "http", "no-network"],
)
def test_hub_errors_are_the_same_for_models_tokenizer_and_processor(monkeypatch, online, error, message):
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(error))
    with pytest.raises(SourceNotFoundError, match=message):
        hub_file("org/name", "config.json", revision="v9")
    with pytest.raises(CheckpointNotFoundError, match=message):
        videoprism.VideoPrismVisionModel.from_pretrained("org/name", revision="v9")
    with pytest.raises(TokenizerNotFoundError, match=message.replace("config.json", "spiece.model")):
        videoprism.VideoPrismTokenizer.from_pretrained("org/name", revision="v9")
    with pytest.raises(SourceNotFoundError, match=message.replace("config.json", "video_preprocessor_config.json")):
        videoprism.VideoPrismVideoProcessor.from_pretrained("org/name", revision="v9")
    with pytest.raises(SourceNotFoundError):
        videoprism.VideoPrismProcessor.from_pretrained("org/name", revision="v9")


def test_offline_and_not_cached(monkeypatch, offline):
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(hub_errors.LocalEntryNotFoundError("offline")))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", raising(hub_errors.LocalEntryNotFoundError("offline")))
    assert hub_file("org/name", "config.json") is None  # offline: a file missing from the cache is just missing
    with pytest.raises(CheckpointNotFoundError, match="'org/name'.*HF_HUB_OFFLINE is set.*local folder or file"):
        videoprism.VideoPrismVisionModel.from_pretrained("org/name")
    with pytest.raises(TokenizerNotFoundError, match="HF_HUB_OFFLINE is set"):
        videoprism.VideoPrismTokenizer.from_pretrained("org/name")
    # The video processor falls back to the original pre-processing (the preset's frame count for a released repo).
    assert videoprism.VideoPrismVideoProcessor.from_pretrained("videoprism-lvt-large-f8r288").num_frames == 8
