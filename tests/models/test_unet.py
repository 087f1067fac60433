"""The zoo's UNet is MONAI's: same parameters and values, channels-last on the CPU only where that is exact."""

import monai
import pytest
import torch
from tests.numerics import assert_as_accurate

from medseg_zoo.models.unet import CHANNELS_LAST_MIN_VOXELS, UNet

TINY = {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 2}


def _pair(dtype: torch.dtype, **kwargs) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    ref = monai.networks.nets.UNet(3, 3, 2, **TINY, **kwargs).to(dtype)
    zoo = UNet(3, 3, 2, **TINY, **kwargs).to(dtype)
    zoo.load_state_dict(ref.state_dict())  # strict: the same keys
    return ref, zoo


def _run(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    x = x.clone().requires_grad_()
    y = model(x)
    (y.square().mean() + y[:, :1].mean()).backward()
    return y, x.grad, {k: p.grad for k, p in model.named_parameters()}


def test_same_values_as_monai():
    ref, zoo = _pair(torch.float32)
    ref64, _ = _pair(torch.float64)
    assert zoo.channels_last_on_cpu
    x = torch.randn(2, 3, 64, 64, 64) * 3 + 1
    (y_ref, gx_ref, _), (y, gx, _) = _run(ref, x), _run(zoo, x)
    y_exact, gx_exact, _ = _run(ref64, x.double())
    assert y.is_contiguous(memory_format=torch.channels_last_3d)  # the fast layout really ran
    assert_as_accurate(y, y_ref, y_exact)
    assert_as_accurate(gx, gx_ref, gx_exact)


def test_float32_error_like_monai():
    """In float32 both are checked against MONAI's float64 result: the zoo's error stays within a few times
    MONAI's own (a margin that holds on any x86 CPU; measured ~1x)."""
    ref64, _ = _pair(torch.float64)
    ref, zoo = _pair(torch.float32)
    x = torch.randn(2, 3, 64, 64, 64)
    exact, _, exact_grads = _run(ref64, x.double())
    for model in (ref, zoo):
        y, _, grads = _run(model, x)
        assert y.is_contiguous() is (model is ref)
        assert (y.double() - exact).abs().max() < 1e-4 * exact.abs().max()
        worst = max(
            ((grads[k].double() - g).abs().max() / g.abs().max()).item()
            for k, g in exact_grads.items()
            if not k.endswith("conv.bias")  # a bias before an instance norm has a zero gradient: pure rounding
        )
        assert worst < 5e-3, worst


@pytest.mark.parametrize(
    ("kwargs", "fast"),
    [({"norm": "batch"}, False), ({"norm": ("instance", {"affine": True})}, False), ({"act": "relu"}, True)],
)
def test_channels_last_only_with_plain_instance_norms(kwargs, fast):
    ref, zoo = _pair(torch.float32, **kwargs)
    ref64, _ = _pair(torch.float64, **kwargs)
    assert zoo.channels_last_on_cpu is fast
    x = torch.randn(2, 3, 64, 64, 64)
    y = zoo(x)
    assert y.is_contiguous() is not fast
    assert_as_accurate(y, ref(x), ref64(x.double()))


def test_small_inputs_keep_monais_layout():
    _, zoo = _pair(torch.float32)
    assert zoo(torch.randn(2, 3, 64, 64, 63)).is_contiguous()  # one voxel short of CHANNELS_LAST_MIN_VOXELS
    assert 64 * 64 * 63 < CHANNELS_LAST_MIN_VOXELS <= 64**3
