import pytest
import torch
import torch.nn.functional as F

from medseg_zoo.layers import (
    ConvNormAct,
    PointwiseConv3d,
    ResBlock,
    SameConv3d,
    UnetrSkipBlock,
    UnetrUpBlock,
    UpConv3d,
)


def assert_same_as_reference(out: torch.Tensor, ref: torch.Tensor, params: tuple[torch.Tensor, ...]) -> None:
    """Equal outputs, and equal gradients of ``params`` for one random output gradient."""
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    for mine, theirs in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g), strict=True):
        torch.testing.assert_close(mine, theirs)


def saved_storages(module: torch.nn.Module, x: torch.Tensor) -> list[int]:
    """Storage addresses of the tensors autograd keeps from one forward of ``module``."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.untyped_storage().data_ptr()) or t, lambda t: t
    ):
        module(x)
    return saved


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_equals_conv3d(bias):
    conv = PointwiseConv3d(5, 7, bias=bias)
    x = torch.randn(2, 5, 6, 4, 3, requires_grad=True)
    ref = F.conv3d(x, conv.weight, conv.bias)
    out = conv(x)
    assert_same_as_reference(out, ref, (x, conv.weight, conv.bias) if bias else (x, conv.weight))


def test_pointwise_conv_saves_no_copy_of_its_input():
    """Only the input and the parameters themselves are kept for the backward pass (on a GPU too: a transposed
    copy of each full-resolution input made the zoo's UNETR step use more memory than its peers')."""
    conv = PointwiseConv3d(5, 7)
    x = torch.randn(2, 5, 6, 4, 3, requires_grad=True)
    saved = saved_storages(conv, x)
    assert set(saved) <= {p.untyped_storage().data_ptr() for p in (x, conv.weight, conv.bias)}


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "bias", "layout"),
    [
        (6, 3, 3, True, torch.channels_last_3d),  # narrowing: the mirrored weight gradient
        (6, 3, 3, False, torch.contiguous_format),
        (8, 5, 5, True, torch.contiguous_format),
        (3, 6, 3, True, torch.channels_last_3d),  # widening: torch's own backward
    ],
)
def test_same_conv_equals_conv3d(cin, cout, kernel, bias, layout):
    conv = SameConv3d(cin, cout, kernel, bias=bias)
    x = torch.randn(2, cin, 7, 6, 5).contiguous(memory_format=layout).requires_grad_()
    ref = F.conv3d(x, conv.weight, conv.bias, padding=kernel // 2)
    out = conv(x)
    assert_same_as_reference(out, ref, (x, conv.weight, conv.bias) if bias else (x, conv.weight))


def test_same_conv_frozen_or_input_without_gradient():
    conv = SameConv3d(6, 3)
    x, g = torch.randn(1, 6, 5, 5, 5), torch.randn(1, 3, 5, 5, 5)
    ref = F.conv3d(x, conv.weight, conv.bias, padding=1)
    (weight_grad,) = torch.autograd.grad(conv(x), conv.weight, g)  # x needs no gradient
    torch.testing.assert_close(weight_grad, torch.autograd.grad(ref, conv.weight, g)[0])
    conv.requires_grad_(False)
    x.requires_grad_()
    (input_grad,) = torch.autograd.grad(conv(x).sum(), x)
    torch.testing.assert_close(input_grad, torch.autograd.grad(F.conv3d(x, conv.weight, padding=1).sum(), x)[0])


def test_same_conv_saves_only_its_input_and_weight():
    conv = SameConv3d(6, 3)
    x = torch.randn(1, 6, 5, 5, 5, requires_grad=True)
    saved = saved_storages(conv, x)
    assert set(saved) == {x.untyped_storage().data_ptr(), conv.weight.untyped_storage().data_ptr()}


def test_same_conv_needs_an_odd_kernel():
    with pytest.raises(ValueError, match="odd kernel size, got 2"):
        SameConv3d(4, 2, 2)


@pytest.mark.parametrize(("scale", "bias"), [(2, False), (2, True), (3, False)])
def test_up_conv_equals_transposed_conv(scale, bias):
    up = UpConv3d(6, 4, scale, bias=bias)
    x = torch.randn(2, 6, 3, 4, 5, requires_grad=True)
    ref = F.conv_transpose3d(x, up.weight, up.bias, stride=scale)
    out = up(x)
    assert out.shape == (2, 4, 3 * scale, 4 * scale, 5 * scale)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])


@pytest.mark.parametrize(
    ("block", "input_shape", "output_shape"),
    [
        (lambda: ConvNormAct(3, 8), (2, 3, 8, 8, 8), (2, 8, 8, 8, 8)),  # 'same' padding
        (lambda: ConvNormAct(3, 8, stride=2), (1, 3, 8, 8, 8), (1, 8, 4, 4, 4)),  # strided
        (lambda: ResBlock(3, 8), (1, 3, 8, 8, 4), (1, 8, 8, 8, 4)),  # 1x1 shortcut
        (lambda: ResBlock(8, 8), (1, 8, 8, 8, 4), (1, 8, 8, 8, 4)),  # identity shortcut
        (lambda: ResBlock(3, 8, residual=False), (1, 3, 8, 8, 4), (1, 8, 8, 8, 4)),  # plain double conv
        (lambda: UnetrSkipBlock(32, 8, 3), (1, 32, 2, 2, 1), (1, 8, 16, 16, 8)),  # 3 upsamplings
        (lambda: UnetrSkipBlock(32, 8, 1, conv_block=False), (1, 32, 2, 2, 1), (1, 8, 4, 4, 2)),
    ],
)
def test_block_shapes(block, input_shape, output_shape):
    assert block()(torch.randn(input_shape)).shape == output_shape


def test_up_block_concatenates_the_skip():
    block = UnetrUpBlock(16, 8, skip_channels=4)
    out = block(torch.randn(1, 16, 2, 2, 2), torch.randn(1, 4, 4, 4, 4))
    assert out.shape == (1, 8, 4, 4, 4)
    assert block.conv.conv1.conv.in_channels == 12


def test_skip_block_refines_only_with_conv_block():
    assert len(UnetrSkipBlock(32, 8, 3).refines) == 2
    assert len(UnetrSkipBlock(32, 8, 3, conv_block=False).refines) == 0


def test_res_block_state_dict_is_flat():
    keys = set(ResBlock(3, 8, bias=True, norm="batch").state_dict())
    assert "conv1.conv.weight" in keys and "shortcut.norm.running_mean" in keys
    assert set(ResBlock(3, 8).state_dict()) == {
        "conv1.conv.weight",
        "conv2.conv.weight",
        "shortcut.conv.weight",
    }


def test_pointwise_conv_keeps_channels_last():
    conv = PointwiseConv3d(5, 7)
    x = torch.randn(2, 5, 6, 4, 3).contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(conv(x), F.conv3d(x.contiguous(), conv.weight, conv.bias))


def test_up_block_follows_the_skip_layout():
    block = UnetrUpBlock(16, 8)
    x, skip = torch.randn(2, 16, 4, 4, 4), torch.randn(2, 8, 8, 8, 8)
    ref = block(x, skip)
    out = block(x, skip.contiguous(memory_format=torch.channels_last_3d))
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
