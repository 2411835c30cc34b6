"""The fp32 CPU GEMM library choice (`videoprism._gemm`): oneDNN's linear is fp32 arithmetic like torch's own path,
"auto" takes oneDNN only on AMD CPUs with AVX-512, and a bad choice is a clear error."""

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from videoprism import VideoPrismVisionConfig, VideoPrismVisionModel, _cpu, _gemm
from videoprism.collection.embedder import resolve_device
from videoprism.errors import DeviceError

ONEDNN_OP = "mkldnn::_linear_pointwise"


def onednn_calls(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.name == ONEDNN_OP for event in prof.events())


@pytest.mark.parametrize(
    "shape, bias, transposed",
    [((37, 48), True, False), ((2, 5, 48), True, False), ((3, 7, 48), False, False), ((48, 9), True, True)],
)
def test_onednn_linear_is_fp32_arithmetic(cpu_gemm, shape, bias, transposed):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    x = x.t() if transposed else x  # a non-contiguous input
    weight = torch.randn(64, x.shape[-1], generator=gen)
    b = torch.randn(64, generator=gen) if bias else None
    exact = F.linear(x.double(), weight.double(), None if b is None else b.double())
    cpu_gemm("onednn")
    with torch.no_grad():
        assert onednn_calls(lambda: _gemm.linear(x, weight, b)) == 1
        out = _gemm.linear(x, weight, b)
    assert out.shape == exact.shape and out.dtype == torch.float32
    # fp32 rounding of 48-term sums of unit-scale products (a few units in the last place of values up to ~25).
    torch.testing.assert_close(out.double(), exact, rtol=0, atol=2e-5)
    assert (out.double() - exact).abs().max() > 0  # it did compute in fp32


def test_onednn_only_where_it_applies(monkeypatch, cpu_gemm):
    """Autograd, other dtypes, oneDNN turned off and the aten choice stay on torch's own F.linear, bit for bit."""
    x, weight, bias = torch.randn(8, 16), torch.randn(4, 16), torch.randn(4)
    cpu_gemm("onednn")
    assert onednn_calls(lambda: _gemm.linear(x, weight, bias)) == 0  # gradients enabled
    with torch.no_grad():
        assert onednn_calls(lambda: _gemm.linear(x.double(), weight.double())) == 0
        assert onednn_calls(lambda: _gemm.linear(x[:0], weight, bias)) == 0  # nothing to multiply
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # put back after the test
        assert onednn_calls(lambda: _gemm.linear(x, weight, bias)) == 0
        torch.backends.mkldnn.enabled = True
        cpu_gemm("aten")
        assert onednn_calls(lambda: _gemm.linear(x, weight, bias)) == 0
        assert torch.equal(_gemm.linear(x, weight, bias), F.linear(x, weight, bias))


def test_model_forward_runs_every_linear_through_the_choice(cpu_gemm):
    config = VideoPrismVisionConfig(
        hidden_size=32, num_attention_heads=2, intermediate_size=64, num_spatial_layers=2, num_temporal_layers=1,
        tubelet_size=[1, 8, 8], image_size=32, num_frames=4,
    )  # fmt: skip
    model = VideoPrismVisionModel(config).eval()
    video = torch.rand(1, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    outputs = {}
    with torch.no_grad():
        for name in ("aten", "onednn"):
            cpu_gemm(name)
            calls = onednn_calls(lambda key=name: outputs.setdefault(key, model(video).last_hidden_state))
            # patch embedding + per layer: fused q/k/v, output projection, two MLP matmuls
            assert calls == (0 if name == "aten" else 1 + 3 * 4)
    torch.testing.assert_close(outputs["onednn"], outputs["aten"], rtol=0, atol=1e-5)


ZEN4 = frozenset("fpu sse2 avx2 fma avx512f avx512bw avx512_bf16".split())
ZEN3 = frozenset("fpu sse2 avx2 fma bmi2 sha_ni vaes".split())
SAPPHIRE_RAPIDS = frozenset("fpu sse2 avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile".split())


@pytest.mark.parametrize(
    "vendor, flags, expected",
    [
        ("AuthenticAMD", ZEN4, "onednn"),
        ("AuthenticAMD", ZEN3, "aten"),
        ("GenuineIntel", SAPPHIRE_RAPIDS, "aten"),
        ("", frozenset(), "aten"),  # nothing known (no /proc/cpuinfo)
    ],
)
def test_auto_takes_onednn_only_on_amd_avx512(vendor, flags, expected):
    assert _gemm.auto_cpu_gemm(vendor, flags) == expected


def test_auto_is_the_default_and_follows_this_cpu(cpu_gemm, monkeypatch):
    clear = _gemm.auto_cpu_gemm.cache_clear  # the answer for this CPU is cached
    monkeypatch.setattr(_gemm, "cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(_gemm, "cpu_flags", lambda: ZEN4)
    assert _gemm.cpu_gemm() == "onednn"
    monkeypatch.setattr(_gemm, "cpu_vendor", lambda: "GenuineIntel")
    clear()
    assert _gemm.cpu_gemm() == "aten"
    monkeypatch.setattr(_gemm, "cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(_gemm, "onednn_linear_available", lambda: False)
    clear()
    assert _gemm.cpu_gemm() == "aten"  # a torch without oneDNN: auto never fails
    monkeypatch.setenv(_gemm.ENV_VARIABLE, "auto")
    assert _gemm.cpu_gemm() == "aten"


def test_environment_variable_and_its_errors(monkeypatch, cpu_gemm):
    monkeypatch.setenv(_gemm.ENV_VARIABLE, "onednn")
    assert _gemm.cpu_gemm() == "onednn"
    monkeypatch.setenv(_gemm.ENV_VARIABLE, "aten")
    assert _gemm.cpu_gemm() == "aten"
    monkeypatch.setenv(_gemm.ENV_VARIABLE, "mkl")
    with pytest.raises(DeviceError, match=r"VIDEOPRISM_CPU_GEMM='mkl': use one of auto, aten, onednn"):
        _gemm.cpu_gemm()
    with pytest.raises(DeviceError, match="VIDEOPRISM_CPU_GEMM='mkl'"):
        resolve_device("cpu")  # the tools fail before any work
    cpu_gemm("aten")  # an explicit choice wins over the environment
    assert _gemm.cpu_gemm() == "aten"
    with pytest.raises(DeviceError, match=r"cpu_gemm='fast': use one of auto, aten, onednn"):
        cpu_gemm("fast")
    monkeypatch.setattr(_gemm, "onednn_linear_available", lambda: False)
    with pytest.raises(DeviceError, match="this torch has no oneDNN"):
        cpu_gemm("onednn")


def test_cpuinfo_fields_of_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f\n\n"
        "processor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu\n"
    )
    fields = _cpu.cpu_fields(str(cpuinfo))
    assert fields["vendor_id"] == "AuthenticAMD" and fields["flags"].split() == ["fpu", "avx2", "avx512f"]
    assert _cpu.cpu_fields(str(tmp_path / "missing")) == {}
