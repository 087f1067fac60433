import sys

import pytest
import torch
import torch.nn.functional as F

from medseg_zoo.layers import Linear, linear


@pytest.fixture(params=[True, False], ids=["onednn", "torch"])
def onednn(request, monkeypatch):
    """Both products on any CPU, whichever one this CPU's capability picks."""
    monkeypatch.setattr(sys.modules["medseg_zoo.layers.linear"], "ONEDNN_PRODUCTS", request.param)
    return request.param


def _within_rounding_bound(actual, exact, magnitude, terms):
    """|actual - exact| <= 2 n u * (sum of |products|): the worst case of any float32 summation order over n
    terms (with or without FMA), so it holds on every CPU whatever kernel torch or oneDNN picks."""
    bound = 2 * terms * 2.0**-24 * magnitude + 1e-30
    excess = ((actual.double() - exact).abs() - bound).max().item()
    assert excess <= 0, f"error exceeds the float32 rounding bound by {excess:.3g}"


@pytest.mark.parametrize("shape", [(2, 300, 48), (700, 48), (48,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_equals_torch(shape, bias, onednn):
    """Both the zoo's product and torch's are compared with float64 within float32's rounding bound."""
    torch.manual_seed(0)
    layer = Linear(48, 40, bias=bias)
    x = torch.randn(shape, requires_grad=True)
    out = layer(x)
    assert out.shape == (*shape[:-1], 40) and out.is_contiguous()
    g = torch.randn_like(out)
    params = [x, layer.weight] + ([layer.bias] if bias else [])
    exact = [p.detach().double().requires_grad_() for p in params]
    absolute = [p.detach().double().abs().requires_grad_() for p in params]
    out64 = F.linear(*exact) if bias else F.linear(*exact, None)
    abs64 = F.linear(*absolute) if bias else F.linear(*absolute, None)
    terms = max(48, x[..., 0].numel())  # the longest sum: over features forward, over rows for the weight
    exact_grads = torch.autograd.grad(out64, exact, g.double())
    grad_bounds = torch.autograd.grad(abs64, absolute, g.double().abs())
    for result in (out, F.linear(x, layer.weight, layer.bias)):
        _within_rounding_bound(result, out64, abs64, terms)
        grads = torch.autograd.grad(result, params, g)
        for grad, exact_grad, bound in zip(grads, exact_grads, grad_bounds, strict=True):
            _within_rounding_bound(grad, exact_grad, bound, terms)


def test_linear_passes_other_dtypes_and_empty_inputs_to_torch(onednn):
    w = torch.randn(5, 3, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(linear(x, w), F.linear(x, w))
    assert linear(torch.randn(0, 3), w.float()).shape == (0, 5)


def test_linear_under_cpu_autocast_is_torchs_half_precision_product(onednn):
    torch.manual_seed(0)
    w, x = torch.randn(40, 48), torch.randn(300, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = linear(x, w), F.linear(x, w)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, ref)


def test_the_path_is_chosen_by_measuring_both_once_per_shape(monkeypatch):
    module = sys.modules["medseg_zoo.layers.linear"]
    monkeypatch.setattr(module, "ONEDNN_PRODUCTS", None)
    monkeypatch.setattr(module, "_CHOSEN", {})
    timed = []

    def seconds(product, x, weight, bias, grad):  # oneDNN measures faster for 300 tokens, slower for 20
        timed.append(x.shape[0])
        return 1.0 if (product is module._onednn) == (x.shape[0] == 300) else 2.0

    monkeypatch.setattr(module, "_seconds", seconds)
    w = torch.randn(40, 48)
    for _ in range(3):
        linear(torch.randn(300, 48), w)
        linear(torch.randn(20, 48), w)
    chosen = {key[0]: choice[0] for key, choice in module.linear_choices().items()}
    assert chosen == {300: True, 20: False} and sorted(timed) == [20, 20, 300, 300]  # once per shape and path


def test_cpu_paths_off_switches_every_cpu_specific_path_off():
    code = (
        "import medseg_zoo as mz; from medseg_zoo.layers import linear as L; import sys;"
        "m = sys.modules['medseg_zoo.layers.linear'];"
        "print(m.CPU_PATHS, m.ONEDNN_PRODUCTS, mz.create_model('unetr_brats').channels_last_on_cpu,"
        " mz.create_model('unet_brats').channels_last_on_cpu)"
    )
    import os
    import subprocess

    for value, expected in (("off", "False False False False"), ("auto", "True None True True")):
        env = {**os.environ, "MEDSEG_ZOO_CPU_PATHS": value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.split("\n")[-2] == expected
