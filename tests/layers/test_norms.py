import pytest
import torch
import torch.nn.functional as F
from tests.numerics import assert_as_accurate
from torch import nn

from medseg_zoo.layers import get_norm, norm_act

CL = torch.channels_last_3d


@pytest.mark.parametrize("name", ["instance", "batch", "group", "layer"])
def test_norms_normalise(name):
    norm = get_norm(name, 8)
    y = norm(torch.randn(2, 8, 4, 4, 4) * 5 + 3)
    assert y.shape == (2, 8, 4, 4, 4)
    assert abs(y.mean().item()) < 1e-4


def test_unknown_norm():
    with pytest.raises(
        ValueError, match="unknown norm 'instnce'; expected one of instance, batch, batch_stats, group, layer"
    ):
        get_norm("instnce", 8)


def _reference(x: torch.Tensor, slope: float | None) -> torch.Tensor:
    y = F.instance_norm(x)
    return y if slope is None else F.leaky_relu(y, slope)


@pytest.mark.parametrize("slope", [None, 0.01, 0.2])
@pytest.mark.parametrize("layout", [CL, torch.contiguous_format])
def test_norm_act_equals_instance_norm_then_leaky_relu(slope, layout):
    torch.manual_seed(0)
    # An offset 100x the spread: a one-pass variance (E[x^2] - E[x]^2) would be off by ~3e-4; rounding the
    # mean to float32 costs up to ~4e-6 (half a unit in the last place at 100).
    x = (torch.randn(2, 6, 10, 8, 7) + 100).contiguous(memory_format=layout)
    g = torch.randn_like(x)
    x64 = x.double().requires_grad_()
    _reference(x64, slope).backward(g.double())

    leaf = x.clone().requires_grad_()
    act = None if slope is None else nn.LeakyReLU(slope, inplace=True)
    y = norm_act(leaf * 1, nn.InstanceNorm3d(6), act)  # a fresh tensor, as a convolution's output
    y.backward(g)
    assert y.is_contiguous(memory_format=layout)
    torch_x = x.contiguous().requires_grad_()  # torch's float32 instance norm on its default layout
    torch_y = _reference(torch_x, slope)
    torch_y.backward(g.contiguous())
    assert_as_accurate(y, torch_y, _reference(x64.detach(), slope))
    assert_as_accurate(leaf.grad, torch_x.grad, x64.grad)


@pytest.mark.parametrize("slope", [None, 0.01])
def test_fused_norm_act_gradcheck(slope):
    x = torch.randn(1, 3, 4, 3, 2, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    act = None if slope is None else nn.LeakyReLU(slope)
    assert torch.autograd.gradcheck(lambda t: norm_act(t * 1, nn.InstanceNorm3d(3), act), (x,))


def test_fused_norm_prelu_gradcheck_includes_the_slope():
    x = torch.randn(1, 3, 4, 3, 2, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    act = nn.PReLU(init=0.3).double()
    assert torch.autograd.gradcheck(lambda t, _: norm_act(t * 1, nn.InstanceNorm3d(3), act), (x, act.weight))


@pytest.mark.parametrize("slope", [0.25, -0.1, 0.0])
def test_norm_act_with_prelu_equals_instance_norm_then_prelu(slope):
    """A positive slope is fused (its gradient too); others take the fused norm, then torch's PReLU."""
    x = torch.randn(2, 5, 9, 8, 6).contiguous(memory_format=CL)
    g = torch.randn_like(x)
    ref_act, act = nn.PReLU(init=slope).double(), nn.PReLU(init=slope)
    x64 = x.double().requires_grad_()
    ref = ref_act(F.instance_norm(x64))
    ref.backward(g.double())
    leaf = x.clone().requires_grad_()
    y = norm_act(leaf * 1, nn.InstanceNorm3d(5), act)
    y.backward(g)
    assert y.is_contiguous(memory_format=CL)
    torch_act, torch_x = nn.PReLU(init=slope), x.contiguous().requires_grad_()
    torch_y = torch_act(F.instance_norm(torch_x))
    torch_y.backward(g.contiguous())
    assert_as_accurate(y, torch_y, ref.detach())
    assert_as_accurate(leaf.grad, torch_x.grad, x64.grad)
    assert_as_accurate(act.weight.grad, torch_act.weight.grad, ref_act.weight.grad)


def test_norm_act_overwrites_its_input_on_the_fused_path_only():
    x = torch.randn(1, 4, 4, 4, 4).contiguous(memory_format=CL)
    out = norm_act(x, nn.InstanceNorm3d(4))
    assert out.data_ptr() == x.data_ptr()
    affine = nn.InstanceNorm3d(4, affine=True)  # not fused: torch's layer, a new tensor
    x = torch.randn(1, 4, 4, 4, 4).contiguous(memory_format=CL)
    assert norm_act(x, affine).data_ptr() != x.data_ptr()


def test_norm_act_trains_half_precision_maps_in_float32():
    x = torch.randn(2, 4, 6, 5, 4).contiguous(memory_format=CL).bfloat16().requires_grad_()
    out = norm_act(x * 1, nn.InstanceNorm3d(4), nn.LeakyReLU(0.01))
    assert out.dtype == torch.float32
    ref_x = x.detach().float().requires_grad_()
    ref = _reference(ref_x, 0.01)
    assert_as_accurate(out, ref, _reference(x.detach().double(), 0.01))
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad.float(), ref_x.grad.bfloat16().float(), atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("with_residual", [False, True])
def test_norm_act_infers_half_precision_maps_in_their_precision(with_residual):
    torch.manual_seed(0)
    x, r = ((torch.randn(2, 4, 6, 5, 4) * 2 + 1).contiguous(memory_format=CL) for _ in range(2))
    ref = F.instance_norm(x.double()) + (F.instance_norm(r.double()) if with_residual else 0)
    ref = F.leaky_relu(ref, 0.01)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        kwargs = {"residual": r.bfloat16(), "residual_norm": nn.InstanceNorm3d(4)} if with_residual else {}
        out = norm_act(x.bfloat16(), nn.InstanceNorm3d(4), nn.LeakyReLU(0.01), **kwargs)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=CL)
    # bf16 keeps 8 significant bits: the maps themselves are rounded by up to 0.4 %
    torch.testing.assert_close(out.double(), ref, atol=0.05, rtol=0.01)


@pytest.mark.parametrize(
    ("norm", "act"),
    [
        (lambda: nn.BatchNorm3d(4), lambda: nn.LeakyReLU(0.01)),
        (lambda: nn.InstanceNorm3d(4, affine=True), lambda: None),
        (lambda: nn.InstanceNorm3d(4), lambda: nn.ReLU()),
    ],
)
def test_other_norms_and_activations_run_as_given(norm, act):
    norm, act = norm(), act()
    x = torch.randn(2, 4, 4, 4, 4).contiguous(memory_format=CL)
    ref = norm(x.contiguous())
    ref = ref if act is None else act(ref)
    exact = norm.double()(x.double())
    exact = exact if act is None else act(exact)
    assert_as_accurate(norm_act(x.clone(memory_format=CL), norm.float(), act), ref, exact)


def test_norm_act_takes_views_and_metatensors():
    from monai.data import MetaTensor

    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 5, 4).contiguous(memory_format=CL)
    g = torch.randn_like(x)
    ref_x = x.clone().requires_grad_()
    _reference(ref_x, 0.01).backward(g)
    exact_x = x.double().requires_grad_()
    _reference(exact_x, 0.01).backward(g.double())
    for make in (lambda t: MetaTensor(t * 1), lambda t: (t * 1)[:]):
        leaf = x.clone().requires_grad_()
        base = make(leaf)
        out = norm_act(base, nn.InstanceNorm3d(4), nn.LeakyReLU(0.01))
        out.backward(g)
        assert_as_accurate(leaf.grad, ref_x.grad, exact_x.grad)
