"""Fixtures shared by the tests of CPU inference's library choice (`videoprism._gemm`)."""

import pytest

from videoprism import _attention, _gemm


def _clear_cpu_caches() -> None:
    _gemm.auto_cpu_gemm.cache_clear()
    _gemm.onednn_computes.cache_clear()


@pytest.fixture
def cpu_gemm(monkeypatch):
    """``cpu_gemm(name)``: CPU inference through torch's path ("aten") or oneDNN for one test; the environment's
    choice and this CPU's cached properties are back afterwards."""
    monkeypatch.delenv(_gemm.ENV_VARIABLE, raising=False)
    _clear_cpu_caches()
    yield _gemm.set_cpu_gemm
    _gemm.set_cpu_gemm(None)
    _clear_cpu_caches()


@pytest.fixture
def onednn_attention_calls(monkeypatch) -> list:
    """A list that grows by one per call of `_attention.onednn_capped_attention`."""
    calls = []
    real = _attention.onednn_capped_attention
    monkeypatch.setattr(_attention, "onednn_capped_attention", lambda *a: calls.append(1) or real(*a))
    return calls
