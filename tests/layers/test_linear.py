import pytest
import torch
import torch.nn.functional as F

from medseg_zoo.layers import Linear, linear


@pytest.mark.parametrize("shape", [(2, 300, 48), (700, 48), (48,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_equals_torch(shape, bias):
    torch.manual_seed(0)
    layer = Linear(48, 40, bias=bias)
    x = torch.randn(shape, requires_grad=True)
    out, ref = layer(x), F.linear(x, layer.weight, layer.bias)
    assert out.shape == ref.shape and out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    params = [x, layer.weight] + ([layer.bias] if bias else [])
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g), strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_linear_passes_other_dtypes_and_empty_inputs_to_torch():
    w = torch.randn(5, 3, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(linear(x, w), F.linear(x, w))
    assert linear(torch.randn(0, 3), w.float()).shape == (0, 5)


def test_linear_under_cpu_autocast_is_torchs_half_precision_product():
    torch.manual_seed(0)
    w, x = torch.randn(40, 48), torch.randn(300, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = linear(x, w), F.linear(x, w)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, ref)
