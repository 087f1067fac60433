"""Convolution blocks for 3D encoders and decoders.

Every tensor is ``(B, C, D, H, W)``, in torch's default or channels-last memory layout (blocks keep the layout
they are given).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medseg_zoo.layers.norms import get_norm, is_channels_last, norm_act

__all__ = [
    "ConvNormAct",
    "ResBlock",
    "UnetrSkipBlock",
    "UnetrUpBlock",
    "UpConv3d",
    "conv3d",
]

ActFactory = Callable[[], nn.Module]


def _leaky_relu() -> nn.Module:
    return nn.LeakyReLU(negative_slope=0.01, inplace=True)


def conv3d(
    in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1, bias: bool = True
) -> nn.Conv3d:
    """A 'same'-padded 3D convolution (``padding = kernel_size // 2``).

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, D/stride, H/stride, W/stride)``.
    """
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
        norm_kwargs: Passed to the norm layer (e.g. ``{"affine": True}``, nnU-Net's instance norms).
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
        norm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.conv = conv3d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.norm = get_norm(norm, out_channels, **(norm_kwargs or {}))
        self.act = None if act is None else act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return norm_act(self.conv(x), self.norm, self.act)


class ResBlock(nn.Module):
    """Two conv-norm stages with a residual connection, then the activation (nnU-Net/MONAI ``UnetResBlock``).

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, D/stride, H/stride, W/stride)``. The shortcut is the identity when
    ``C_in == C_out`` and the stride is 1, else an average pooling over the stride (nnU-Net's ResNet-D blocks) and
    a 1x1x1 conv-norm. With ``residual=False`` it is a plain conv-norm-act, conv-norm-act block (MONAI
    ``UnetBasicBlock``).

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: Kernel size of both convolutions.
        stride: Stride of the first convolution (and the shortcut's pooling).
        norm: Normalisation name.
        act: Activation factory.
        bias: Convolution bias.
        residual: Add the shortcut before the final activation.
        shortcut_bias: Bias of the shortcut's 1x1x1 convolution (default: ``bias``).
        norm_kwargs: Passed to every norm layer.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        norm: str = "instance",
        act: ActFactory = _leaky_relu,
        bias: bool = False,
        residual: bool = True,
        shortcut_bias: bool | None = None,
        norm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        conv = {"norm": norm, "bias": bias, "norm_kwargs": norm_kwargs}
        self.conv1 = ConvNormAct(in_channels, out_channels, kernel_size, stride=stride, act=act, **conv)
        self.conv2 = ConvNormAct(out_channels, out_channels, kernel_size, act=None, **conv)
        self.residual = residual
        self.pool = nn.AvgPool3d(stride, stride) if residual and stride > 1 else None
        self.shortcut = (
            ConvNormAct(
                in_channels,
                out_channels,
                1,
                act=None,
                **{**conv, "bias": bias if shortcut_bias is None else shortcut_bias},
            )
            if residual and (in_channels != out_channels or stride > 1)
            else None
        )
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2.conv(self.conv1(x))
        if not self.residual:
            return norm_act(y, self.conv2.norm, self.act)
        if self.shortcut is None:
            return norm_act(y, self.conv2.norm, self.act, residual=x)
        shortcut = self.shortcut.conv(x if self.pool is None else self.pool(x))
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
