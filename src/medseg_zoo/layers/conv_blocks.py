"""Convolution blocks for 3D encoders and decoders.

Every tensor is ``(B, C, D, H, W)``, in torch's default or channels-last memory layout (blocks keep the layout
they are given). Pointwise (1x1x1) convolutions are computed as matrix products over the channel axis: on CPU,
oneDNN runs them 1.5-3x slower than the equivalent GEMM (see ``docs/benchmarks.md``). Stride-1 3x3x3 ones
(`SameConv3d`) choose their CPU weight and bias gradients by measurement too. Parameters keep the torch layouts,
so state dicts are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from medseg_zoo.layers.norms import get_norm, is_channels_last, norm_act

__all__ = [
    "ConvNormAct",
    "PointwiseConv3d",
    "ResBlock",
    "SameConv3d",
    "UnetrSkipBlock",
    "UnetrUpBlock",
    "UpConv3d",
    "conv3d",
]

ActFactory = Callable[[], nn.Module]


def _leaky_relu() -> nn.Module:
    return nn.LeakyReLU(negative_slope=0.01, inplace=True)


class PointwiseConv3d(nn.Conv3d):
    """A 1x1x1 convolution computed as one batched matrix product over channels (for channels-last inputs,
    torch's own).

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, D, H, W)``. Same parameters as ``nn.Conv3d(kernel_size=1)``.
    The product reads the input where it lies and keeps only a view of it for the backward pass (``torch.matmul``
    kept a transposed copy); its CPU time against ``nn.Conv3d`` is in the "Layers" table of ``docs/benchmarks.md``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_channels_last(x):  # oneDNN runs channels-last 1x1x1 convolutions as one GEMM already
            return super().forward(x)
        b, _, *spatial = x.shape
        weight = self.weight.flatten(1).expand(b, -1, -1)
        if self.bias is None:
            y = torch.bmm(weight, x.flatten(2))
        else:
            y = torch.baddbmm(self.bias[None, :, None].expand(b, -1, 1), weight, x.flatten(2))
        return y.view(b, self.out_channels, *spatial)


class SameConv3d(nn.Conv3d):
    """A stride-1, 'same'-padded 3D convolution with an odd cubic kernel.

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, D, H, W)``. Same parameters as ``nn.Conv3d``.
    On the CPU its backward pass is put together from the oneDNN calls that measured fastest (see the "Layers"
    table of ``docs/benchmarks.md``): the bias gradient is a plain sum, and a convolution that narrows the
    channels (``C_in > C_out``, as after a decoder's concatenation) takes its weight gradient from the mirrored
    problem, the weight gradient of the ``C_out -> C_in`` convolution from the output gradient to the input,
    which is this one's with the kernel flipped and the channel axes swapped.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, bias: bool = True) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"a 'same' convolution needs an odd kernel size, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu"):
            return _SameConv.apply(x, self.weight, self.bias, self.padding)
        return super().forward(x)


class _SameConv(torch.autograd.Function):
    """``conv3d(x, weight, bias)``, stride 1, 'same' padding, with `SameConv3d`'s backward pass."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, ...]
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv3d(x, weight, bias, padding=padding)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        mirrored = need_w and weight.shape[1] > weight.shape[0]
        grad_x = grad_w = None
        if need_x or (need_w and not mirrored):
            # no bias here: asked for one, oneDNN also computes the weight gradient, even where it is not wanted
            grad_x, grad_w, _ = _backward(grad, x, weight, ctx.padding, [need_x, need_w and not mirrored, False])
        if mirrored:
            # sum_p grad[o, p] x[i, p + k] is, with the roles of grad and x exchanged, the kernel offset -k
            grad_w = _backward(x, grad, weight.transpose(0, 1), ctx.padding, [False, True, False])[1]
            grad_w = grad_w.flip(2, 3, 4).transpose(0, 1)
        grad_b = grad.sum((0, 2, 3, 4)) if need_b else None
        return grad_x, grad_w, grad_b, None


def _backward(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, ...], mask: list[bool]
) -> tuple[torch.Tensor | None, ...]:
    """torch's convolution backward, stride 1 and no bias, for the gradients ``mask`` asks for (input, weight)."""
    ones = [1, 1, 1]
    return torch.ops.aten.convolution_backward(grad, x, weight, None, ones, padding, ones, False, [0, 0, 0], 1, mask)


def conv3d(
    in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1, bias: bool = True
) -> nn.Conv3d:
    """A 'same'-padded 3D convolution: `PointwiseConv3d` for 1x1x1, `SameConv3d` for other stride-1 ones."""
    if kernel_size == 1 and stride == 1:
        return PointwiseConv3d(in_channels, out_channels, bias=bias)
    if stride == 1 and kernel_size % 2 == 1:
        return SameConv3d(in_channels, out_channels, kernel_size, bias=bias)
    return nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)


class UpConv3d(nn.ConvTranspose3d):
    """Transposed convolution with kernel == stride (no overlap): each voxel becomes a ``s x s x s`` block.

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, s*D, s*H, s*W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2, *, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size=scale, stride=scale, bias=bias)


class ConvNormAct(nn.Module):
    """Convolution, normalisation, then an optional activation.

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, D/stride, H/stride, W/stride)``.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: Cubic kernel size; padding keeps the size ('same').
        stride: Convolution stride.
        norm: Normalisation name, see `medseg_zoo.layers.get_norm`.
        act: Activation factory, or ``None`` for none.
        bias: Convolution bias (redundant before a normalisation; kept where checkpoints have it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        norm: str = "instance",
        act: ActFactory | None = _leaky_relu,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.conv = conv3d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.norm = get_norm(norm, out_channels)
        self.act = None if act is None else act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return norm_act(self.conv(x), self.norm, self.act)


class ResBlock(nn.Module):
    """Two conv-norm stages with a residual connection, then the activation (nnU-Net/MONAI ``UnetResBlock``).

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, D, H, W)``. The shortcut is the identity when ``C_in == C_out``
    and a 1x1x1 conv-norm otherwise. With ``residual=False`` it is a plain conv-norm-act, conv-norm-act block
    (MONAI ``UnetBasicBlock``).

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: Kernel size of both convolutions.
        norm: Normalisation name.
        act: Activation factory.
        bias: Convolution bias.
        residual: Add the shortcut before the final activation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        norm: str = "instance",
        act: ActFactory = _leaky_relu,
        bias: bool = False,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels, kernel_size, norm=norm, act=act, bias=bias)
        self.conv2 = ConvNormAct(out_channels, out_channels, kernel_size, norm=norm, act=None, bias=bias)
        self.residual = residual
        self.shortcut = (
            ConvNormAct(in_channels, out_channels, 1, norm=norm, act=None, bias=bias)
            if residual and in_channels != out_channels
            else None
        )
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2.conv(self.conv1(x))
        if not self.residual:
            return norm_act(y, self.conv2.norm, self.act)
        if self.shortcut is None:
            return norm_act(y, self.conv2.norm, self.act, residual=x)
        shortcut = self.shortcut.conv(x)
        return norm_act(y, self.conv2.norm, self.act, residual=shortcut, residual_norm=self.shortcut.norm)


class UnetrSkipBlock(nn.Module):
    """Projects transformer features of an intermediate layer up to a decoder resolution (UNETR's skip path).

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, 2^n D, 2^n H, 2^n W)`` with ``n = num_upsamples``. The first
    upsampling changes the channels; each further one is optionally refined by a `ResBlock` (MONAI's
    ``conv_block=True``; self-attention-cv's UNETR chains bare transposed convolutions).

    Args:
        in_channels: Transformer width.
        out_channels: Channels of the decoder stage this skip feeds.
        num_upsamples: Number of 2x upsamplings.
        conv_block: Refine after every upsampling but the first.
        norm: Normalisation of the refinement blocks.
        bias: Convolution bias of the refinement blocks.
        residual: Residual refinement blocks (else plain double conv).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_upsamples: int,
        *,
        conv_block: bool = True,
        norm: str = "instance",
        bias: bool = False,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.ups = nn.ModuleList(
            [UpConv3d(in_channels if i == 0 else out_channels, out_channels) for i in range(num_upsamples)]
        )
        self.refines = nn.ModuleList(
            [
                ResBlock(out_channels, out_channels, norm=norm, bias=bias, residual=residual)
                for _ in range(num_upsamples - 1 if conv_block else 0)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ups[0](x)
        for i, up in enumerate(self.ups[1:]):
            x = up(x)
            if self.refines:
                x = self.refines[i](x)
        return x


class UnetrUpBlock(nn.Module):
    """Decoder stage: 2x transposed-conv upsampling, concatenation with the skip, then a `ResBlock`.

    Shapes: ``x (B, C_in, D, H, W)``, ``skip (B, C_skip, 2D, 2H, 2W) -> (B, C_out, 2D, 2H, 2W)``.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``, also the channels of the upsampled tensor.
        skip_channels: ``C_skip``; defaults to ``out_channels``.
        norm: Normalisation name.
        bias: Convolution bias of the residual block.
        residual: Residual block (else plain double conv).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        skip_channels: int | None = None,
        *,
        norm: str = "instance",
        bias: bool = False,
        residual: bool = True,
    ) -> None:
        super().__init__()
        skip_channels = out_channels if skip_channels is None else skip_channels
        self.up = UpConv3d(in_channels, out_channels)
        self.conv = ResBlock(out_channels + skip_channels, out_channels, norm=norm, bias=bias, residual=residual)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # The skip sets the layout: oneDNN returns small transposed convolutions in the default layout.
        layout = torch.channels_last_3d if is_channels_last(skip) else torch.contiguous_format
        return self.conv(torch.cat([self.up(x).contiguous(memory_format=layout), skip], dim=1))
