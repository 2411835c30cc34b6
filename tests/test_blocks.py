"""Per-call work folded away in the building blocks stays correct when weights change."""

import torch
import torch.nn.functional as F

from videoprism.modeling import VideoPrismLayerNorm


def reference(norm, x):
    return F.layer_norm(x, norm.weight.shape, norm.weight.detach() + 1.0, norm.bias.detach(), norm.eps)


def test_layernorm_folds_its_plus_one_once_and_follows_weight_updates():
    norm = VideoPrismLayerNorm(8, 1e-6)
    x = torch.randn(3, 8)
    with torch.no_grad():
        norm.weight.normal_()
        first = norm(x)
        assert norm.scale() is norm.scale()  # folded once, reused
        torch.testing.assert_close(first, reference(norm, x), rtol=0, atol=0)
        norm.weight.mul_(2)  # an in-place update must not leave a stale scale
        torch.testing.assert_close(norm(x), reference(norm, x), rtol=0, atol=0)
        norm.load_state_dict({"weight": torch.full((8,), 0.5), "bias": torch.zeros(8)})
        torch.testing.assert_close(norm(x), reference(norm, x), rtol=0, atol=0)
        for _ in range(3):  # fresh storage each time (an allocator may hand back a freed address)
            norm.weight.data = torch.randn(8)
            torch.testing.assert_close(norm(x), reference(norm, x), rtol=0, atol=0)
    norm.to(torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(norm(x.double()), reference(norm, x.double()), rtol=0, atol=0)


def test_layernorm_scale_carries_gradients_when_training():
    norm = VideoPrismLayerNorm(8, 1e-6)
    norm(torch.randn(3, 8)).square().sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0


def test_layernorm_under_inference_mode():
    with torch.inference_mode():
        norm = VideoPrismLayerNorm(8, 1e-6)
        x = torch.randn(3, 8)
        torch.testing.assert_close(norm(x), reference(norm, x), rtol=0, atol=0)
