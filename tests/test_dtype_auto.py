"""``dtype="auto"``: bfloat16 where the device computes it natively, float32 elsewhere; the default of the tools."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from _checkpoints import save_tiny_clip_model
from _videos import make_video

from videoprism import cli
from videoprism.collection import classify_video_files, embed_videos, embedder, search_text, search_video
from videoprism.collection.embedder import auto_dtype, cpu_has_native_bf16, load_video_embedder, resolve_dtype
from videoprism.errors import EmbedSettingsError

# Flags of real CPUs (abridged /proc/cpuinfo lines).
SAPPHIRE_RAPIDS = "fpu sse2 avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8".split()
COOPER_LAKE = "fpu sse2 avx2 fma avx512f avx512bw avx512_vnni avx512_bf16".split()
SKYLAKE_X = "fpu sse2 avx2 fma avx512f avx512bw avx512cd avx512dq".split()
ZEN3 = "fpu sse2 avx2 fma bmi2 sha_ni vaes".split()
GRAVITON3 = "fp asimd sve bf16 i8mm svebf16".split()  # ARM names its line "Features"; bf16 there is not in the set


@pytest.mark.parametrize(
    ("flags", "capability", "native"),
    [
        (SAPPHIRE_RAPIDS, "AVX512", True),
        (COOPER_LAKE, "AVX512", True),
        (SKYLAKE_X, "AVX512", False),
        (ZEN3, "AVX2", False),
        (GRAVITON3, "DEFAULT", False),
        ([], "DEFAULT", False),
        ([], "AMX", True),  # a torch that names the instruction set counts without flags
        ([], "AVX512_BF16", True),
    ],
)
def test_cpu_bf16_detection(flags: list[str], capability: str, native: bool) -> None:
    assert cpu_has_native_bf16(flags, capability) is native


@pytest.fixture
def cpu_flags(monkeypatch: pytest.MonkeyPatch):
    """``cpu_flags(flags)``: make this CPU look like one with ``flags`` (and a plain AVX2 torch capability)."""

    def fake(flags: list[str]) -> None:
        monkeypatch.setattr(embedder, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")

    return fake


@pytest.mark.parametrize(("flags", "expected"), [(SAPPHIRE_RAPIDS, torch.bfloat16), (ZEN3, torch.float32)])
def test_auto_resolves_per_cpu(cpu_flags, flags: list[str], expected: torch.dtype) -> None:
    cpu_flags(flags)
    assert auto_dtype(torch.device("cpu")) == expected
    assert resolve_dtype("auto", "cpu") == expected
    assert resolve_dtype("float32", "cpu") == torch.float32 and resolve_dtype(None, "cpu") is None
    assert resolve_dtype(torch.float16, "cpu") == torch.float16


def test_auto_on_cpu_without_onednn_is_float32(cpu_flags, monkeypatch) -> None:
    cpu_flags(SAPPHIRE_RAPIDS)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert auto_dtype(torch.device("cpu")) == torch.float32


@pytest.mark.parametrize(("capability", "expected"), [((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16),
                                                      ((7, 5), torch.float32), ((6, 1), torch.float32)])  # fmt: skip
def test_auto_resolves_per_cuda_capability(monkeypatch, capability: tuple[int, int], expected: torch.dtype) -> None:
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: asked.append(device) or capability)
    assert auto_dtype(torch.device("cuda:1")) == expected
    assert asked == [torch.device("cuda:1")]


def test_auto_elsewhere_is_float32() -> None:
    assert auto_dtype(torch.device("meta")) == torch.float32


def test_unknown_dtype_name() -> None:
    with pytest.raises(EmbedSettingsError, match="dtype='bf16'; use auto or one of float32, bfloat16, float16"):
        resolve_dtype("bf16")


@pytest.mark.parametrize("command", [["embed", "v.mp4", "--out", "s"], ["search", "s", "a dog"], ["classify", "v.mp4",
                                     "--labels", "a,b"]])  # fmt: skip
def test_cli_default_is_auto(command: list[str]) -> None:
    parser = cli.build_parser()
    assert parser.parse_args(command).dtype == "auto"
    assert parser.parse_args([*command, "--dtype", "float32"]).dtype == "float32"


@pytest.mark.parametrize("function", [embed_videos, search_text, search_video, classify_video_files])
def test_api_default_is_auto(function) -> None:
    assert inspect.signature(function).parameters["dtype"].default == "auto"


def test_model_classes_stay_float32(tmp_path: Path, cpu_flags) -> None:
    cpu_flags(SAPPHIRE_RAPIDS)
    folder = save_tiny_clip_model(tmp_path / "model")
    from videoprism import VideoPrismClipModel, load_model

    assert next(VideoPrismClipModel.from_pretrained(folder).parameters()).dtype == torch.float32
    assert next(load_model(folder).parameters()).dtype == torch.float32
    assert load_video_embedder(folder, device="cpu", dtype=None)[0].dtype == torch.float32
    assert load_video_embedder(folder, device="cpu", dtype="auto")[0].dtype == torch.bfloat16


@pytest.mark.parametrize(("flags", "expected"), [(SAPPHIRE_RAPIDS, "bfloat16"), (ZEN3, "float32")])
def test_store_and_summary_record_the_dtype(tmp_path: Path, cpu_flags, flags: list[str], expected: str) -> None:
    cpu_flags(flags)
    model = save_tiny_clip_model(tmp_path / "model")
    video = make_video(tmp_path / "a.mp4", num_frames=12)
    store = tmp_path / "store"
    summary = embed_videos([video], store, model, device="cpu", workers=0, progress=False)
    assert summary.dtype == expected and summary.embedded == 1
    assert json.loads((store / "store.json").read_text())["model_dtype"] == expected
    again = embed_videos([video], store, model, device="cpu", workers=0, progress=False)
    assert again.skipped == 1 and again.dtype is None  # nothing to embed: no model loaded
