import pytest
import torch
import torch.nn.functional as F
from tests.numerics import assert_as_accurate

from medseg_zoo.layers import ConvNormAct, ResBlock, UnetrSkipBlock, UnetrUpBlock, UpConv3d


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


def test_up_block_follows_the_skip_layout():
    block = UnetrUpBlock(16, 8)
    x, skip = torch.randn(2, 16, 4, 4, 4), torch.randn(2, 8, 8, 8, 8)
    ref = block(x, skip)
    out = block(x, skip.contiguous(memory_format=torch.channels_last_3d))
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    exact = block.double()(x.double(), skip.double())
    assert_as_accurate(out, ref, exact)
