"""Normalisation for 3D feature maps: a factory and a fused instance-norm + LeakyReLU for channels-last CPU maps."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NORM_NAMES", "get_norm", "norm_act"]

NORM_NAMES = ("instance", "batch", "group", "layer")


def get_norm(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """A normalisation layer for ``(B, C, D, H, W)`` feature maps.

    Args:
        name: ``"instance"`` (InstanceNorm3d, no affine parameters, as in MONAI and self-attention-cv),
            ``"batch"`` (BatchNorm3d), ``"group"`` (GroupNorm, ``num_groups`` defaults to 8) or ``"layer"``
            (GroupNorm with one group: normalises over C, D, H and W).
        channels: Number of channels ``C``.
        **kwargs: Passed to the torch layer (e.g. ``affine=True``, ``num_groups=4``, ``eps``).

    Raises:
        ValueError: If ``name`` is not one of :data:`NORM_NAMES`.
    """
    if name == "instance":
        return nn.InstanceNorm3d(channels, **kwargs)
    if name == "batch":
        return nn.BatchNorm3d(channels, **kwargs)
    if name == "group":
        return nn.GroupNorm(kwargs.pop("num_groups", 8), channels, **kwargs)
    if name == "layer":
        return nn.GroupNorm(1, channels, **kwargs)
    raise ValueError(f"unknown norm {name!r}; expected one of {', '.join(NORM_NAMES)}")


def norm_act(x: torch.Tensor, norm: nn.Module, act: nn.Module | None = None) -> torch.Tensor:
    """``act(norm(x))`` for a freshly computed ``x`` (e.g. a convolution's output), which may be overwritten.

    Shapes: ``(B, C, D, H, W) -> (B, C, D, H, W)``. On the CPU, a channels-last ``x`` normalised by a plain
    ``InstanceNorm3d`` (no affine, no running statistics) and followed by LeakyReLU or nothing takes a fused path:
    torch's CPU instance norm loses precision on channels-last maps (~1e-3 over a million voxels) and allocates
    maps that cost as much as the arithmetic (page faults). The fused path works in ``x``'s memory, keeps only
    its output for the backward pass and computes channel sums as matrix products, accurate to ~1e-6.
    Other inputs and layers run ``norm`` then ``act``.
    """
    if not _fusable(x, norm, act):
        x = norm(x)
        return x if act is None else act(x)
    if x.dtype in (torch.float16, torch.bfloat16):  # as autocast does for torch's norms
        x = x.float()
    return _InstanceNormAct.apply(x, None if act is None else act.negative_slope, norm.eps)


def _fusable(x: torch.Tensor, norm: nn.Module, act: nn.Module | None) -> bool:
    plain_instance = isinstance(norm, nn.InstanceNorm3d) and not norm.affine and not norm.track_running_stats
    leaky = act is None or (isinstance(act, nn.LeakyReLU) and act.negative_slope > 0)
    channels_last = x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
    return plain_instance and leaky and channels_last and x.device.type == "cpu"


def _channel_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum over space of a * b`` per sample and channel, ``(B, C, 1, 1, 1)``, without a map-sized temporary.

    Both are channels-last, so each sample is a ``(D*H*W, C)`` matrix and the sums are the diagonal of
    ``a^T b``; the C-fold redundant products cost less than allocating ``a * b``. Splitting the voxels into up
    to 64 chunks lets the matrix products run in parallel and sums shorter runs (more accurate).
    """
    batch, channels, *spatial = a.shape
    chunks = math.gcd(math.prod(spatial), 64)
    a2, b2 = (t.permute(0, 2, 3, 4, 1).reshape(batch * chunks, -1, channels) for t in (a, b))
    dots = torch.bmm(a2.transpose(1, 2), b2).view(batch, chunks, channels, channels).sum(1)
    return dots.diagonal(dim1=1, dim2=2).view(batch, channels, 1, 1, 1)


class _InstanceNormAct(torch.autograd.Function):
    """Instance norm without affine, then optional LeakyReLU, in place on a channels-last ``x``.

    With ``x_hat`` the normalised map, ``y`` the output, ``s`` the activation's slope at each voxel (1 or
    ``negative_slope``; ``y = s * x_hat``), ``g = dL/dy``, ``t = s * g`` and means over the ``n`` voxels:
    ``dL/dx = rstd * (t - mean(t) - x_hat * mean(t * x_hat))``, where ``t * x_hat = g * y``. Only ``y`` is kept;
    ``x_hat * k`` is formed as ``(s * t - k * y) / s`` in one buffer.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, negative_slope: float | None, eps: float) -> torch.Tensor:
        n = x[0, 0].numel()
        x.sub_(x.mean((2, 3, 4), keepdim=True))
        rstd = (_channel_dots(x, x) / n + eps).rsqrt()
        x.mul_(rstd)
        if negative_slope is not None:
            F.leaky_relu_(x, negative_slope)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x, rstd)
        ctx.negative_slope = negative_slope
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        y, rstd = ctx.saved_tensors
        slope = ctx.negative_slope
        n = y[0, 0].numel()
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        minus_k = _channel_dots(grad, y) / -n
        if slope is None:  # x_hat = y; the incoming gradient may be shared, so it is never written
            out = torch.addcmul(grad, y, minus_k)
            mean_t = grad.mean((2, 3, 4), keepdim=True)
        else:
            out = _times_slope(grad, y, slope)  # t
            mean_t = out.mean((2, 3, 4), keepdim=True)
            _times_slope(out, y, slope, out=out).addcmul_(y, minus_k)  # s t - k y
            _times_slope(out, y, 1 / slope, out=out)  # t - k x_hat
        return out.sub_(mean_t).mul_(rstd), None, None


def _times_slope(a: torch.Tensor, y: torch.Tensor, slope: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a`` times ``slope`` where ``y < 0`` (LeakyReLU's backward, given its output ``y``)."""
    if out is None:
        return torch.ops.aten.leaky_relu_backward(a, y, slope, True)
    return torch.ops.aten.leaky_relu_backward.grad_input(a, y, slope, True, grad_input=out)
