"""Normalisation for 3D feature maps: a factory and a fused instance-norm + LeakyReLU for channels-last CPU maps."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NORM_NAMES", "get_norm", "norm_act"]

NORM_NAMES = ("instance", "batch", "batch_stats", "group", "layer")
_HALF = (torch.float16, torch.bfloat16)


def get_norm(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """A normalisation layer for ``(B, C, D, H, W)`` feature maps.

    Args:
        name: ``"instance"`` (InstanceNorm3d, no affine parameters, as in MONAI and self-attention-cv),
            ``"batch"`` (BatchNorm3d), ``"batch_stats"`` (BatchNorm3d that normalises with the batch's own
            statistics in evaluation too, as Models Genesis' U-Net), ``"group"`` (GroupNorm, ``num_groups``
            defaults to 8) or ``"layer"`` (GroupNorm with one group: normalises over C, D, H and W).
        channels: Number of channels ``C``.
        **kwargs: Passed to the torch layer (e.g. ``affine=True``, ``num_groups=4``, ``eps``).

    Raises:
        ValueError: If ``name`` is not one of `NORM_NAMES`.
    """
    if name == "instance":
        return nn.InstanceNorm3d(channels, **kwargs)
    if name == "batch":
        return nn.BatchNorm3d(channels, **kwargs)
    if name == "batch_stats":
        return BatchStatsNorm3d(channels, **kwargs)
    if name == "group":
        return nn.GroupNorm(kwargs.pop("num_groups", 8), channels, **kwargs)
    if name == "layer":
        return nn.GroupNorm(1, channels, **kwargs)
    raise ValueError(f"unknown norm {name!r}; expected one of {', '.join(NORM_NAMES)}")


class BatchStatsNorm3d(nn.BatchNorm3d):
    """``BatchNorm3d`` that normalises with the batch's statistics whether training or not (Models Genesis'
    ``ContBatchNorm3d``, which SuPreM's U-Net keeps); the running statistics are updated in training only.

    Shapes: ``(B, C, D, H, W) -> (B, C, D, H, W)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        running = (self.running_mean, self.running_var) if self.training else (None, None)
        return F.batch_norm(x, *running, self.weight, self.bias, True, self.momentum or 0.0, self.eps)


def norm_act(
    x: torch.Tensor,
    norm: nn.Module,
    act: nn.Module | None = None,
    *,
    residual: torch.Tensor | None = None,
    residual_norm: nn.Module | None = None,
) -> torch.Tensor:
    """``act(norm(x) + residual_norm(residual))`` for freshly computed maps, which may be overwritten.

    Shapes: ``x``, ``residual`` and the output ``(B, C, D, H, W)``. ``x`` is e.g. a convolution's output; without
    ``residual`` this is ``act(norm(x))``; without ``residual_norm`` the residual is added as it is (an identity
    shortcut, left unchanged), with it the residual is a fresh map too.

    On the CPU, channels-last maps normalised by plain ``InstanceNorm3d`` layers (no affine, no running
    statistics) take a fused path: torch's CPU instance norm loses precision on channels-last maps (~1e-3 over a
    million voxels) and allocates maps that cost as much as the arithmetic (page faults). The fused path works in
    the inputs' memory, keeps only its output (and the normalised residual) for the backward pass and computes
    channel sums as matrix products, accurate to ~1e-6. A LeakyReLU, or a PReLU with one positive slope (its
    gradient included), is fused too; other activations follow the fused norm. Half-precision maps (autocast's
    convolutions) are normalised in float32 when gradients are needed and in their own precision otherwise.
    Other inputs and layers run the modules as given.
    """
    norms = (norm,) if residual_norm is None else (norm, residual_norm)
    if not _fusable(x, residual, norms):
        y = norm(x)
        if residual is not None:
            y = y + (residual if residual_norm is None else residual_norm(residual))
        return y if act is None else act(y)
    slope, weight = _slope(act)
    if act is not None and slope is None:
        return act(norm_act(x, norm, residual=residual, residual_norm=residual_norm))
    # Work in place only on plain, fresh tensors: views (e.g. MONAI MetaTensor results) are copied first.
    x = _fresh(x)
    residual = _fresh(residual) if residual_norm is not None else residual
    if x.dtype in _HALF and not (torch.is_grad_enabled() and x.requires_grad):
        return _half_inference(x, residual, residual_norm is not None, slope, norm.eps)
    # Half-precision maps (autocast's convolutions) are trained in float32, as autocast does for torch's norms.
    x = x.float() if x.dtype in _HALF else x
    residual = residual.float() if residual is not None and residual.dtype in _HALF else residual
    out = _InstanceNormAct.apply(x, residual, residual_norm is not None, slope, norm.eps, weight)
    return out if residual_norm is None else out[0]


def _slope(act: nn.Module | None) -> tuple[float | None, torch.Tensor | None]:
    """The negative slope of an activation the fused path computes (and a PReLU's slope parameter), or None.

    The fused backward recovers the activation's input from its output by dividing by the slope, so the slope
    must be positive (a PReLU's learned one is checked at each call).
    """
    if isinstance(act, nn.LeakyReLU) and act.negative_slope > 0:
        return act.negative_slope, None
    if isinstance(act, nn.PReLU) and act.weight.numel() == 1:
        slope = act.weight.detach().item()
        return (slope, act.weight) if slope > 0 else (None, None)
    return None, None


def _fresh(x: torch.Tensor) -> torch.Tensor:
    if type(x) is torch.Tensor and x._base is None:
        return x
    return x.as_subclass(torch.Tensor).clone(memory_format=torch.preserve_format)


def _half_inference(
    x: torch.Tensor, residual: torch.Tensor | None, normalise_residual: bool, slope: float | None, eps: float
) -> torch.Tensor:
    """The fused path's forward for half-precision maps without gradients, kept in their precision.

    torch's channels-last group norm with one group per channel is this instance norm, with an error within half
    precision's rounding (measured against float64); casting to float32 and back would cost more than the
    convolutions gain from half precision. (Its backward is not accurate on channels-last maps, so training
    takes the float32 path.)
    """
    with torch.autocast("cpu", enabled=False):
        y = F.group_norm(x, x.shape[1], eps=eps)
        if residual is not None:
            y += (F.group_norm(residual, residual.shape[1], eps=eps) if normalise_residual else residual).to(y.dtype)
    return y if slope is None else F.leaky_relu_(y, slope)


def _fusable(x: torch.Tensor, residual: torch.Tensor | None, norms: tuple[nn.Module, ...]) -> bool:
    plain_instance = all(
        isinstance(n, nn.InstanceNorm3d) and not n.affine and not n.track_running_stats and n.eps == norms[0].eps
        for n in norms
    )
    maps = (x,) if residual is None else (x, residual)
    return plain_instance and all(map(is_channels_last, maps)) and x.device.type == "cpu"


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a 5-D map is laid out channels-last (and not also in the default layout)."""
    return x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


def _channel_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum over space of a * b`` per sample and channel, ``(B, C, 1, 1, 1)``, without a map-sized temporary.

    Both are channels-last, so each sample is a ``(D*H*W, C)`` matrix and the sums are the diagonal of
    ``a^T b``; the C-fold redundant products cost less than allocating ``a * b``. Splitting the voxels into up
    to 64 chunks lets the matrix products run in parallel and sums shorter runs (more accurate).
    """
    batch, channels, *spatial = a.shape
    chunks = math.gcd(math.prod(spatial), 64)
    a2, b2 = (t.permute(0, 2, 3, 4, 1).reshape(batch * chunks, -1, channels) for t in (a, b))
    with torch.autocast("cpu", enabled=False):  # statistics stay float32 under bf16 autocast
        dots = torch.bmm(a2.transpose(1, 2), b2).view(batch, chunks, channels, channels).sum(1)
    return dots.diagonal(dim1=1, dim2=2).view(batch, channels, 1, 1, 1)


class _InstanceNormAct(torch.autograd.Function):
    """``act(x_hat + r_hat)``, in place on channels-last maps: ``x_hat`` is ``x`` instance-normalised (no affine),
    ``r_hat`` the residual, normalised too when ``normalise_residual``, or none.

    With ``y`` the output, ``z = x_hat + r_hat`` its input, ``s`` the activation's slope at each voxel (1 or
    ``negative_slope``; ``y = s * z``), ``g = dL/dy``, ``t = s * g`` (``dL/dz``) and means over the ``n`` voxels:
    ``dL/dx = rstd * (t - mean(t) - x_hat * mean(t * x_hat))``, the same for a normalised residual, and ``t``
    itself for an identity one. ``t * z = g * y``, and ``z * k`` is formed as ``(s * u - k * y) / s`` in place in
    a buffer ``u``, so only ``y`` and ``r_hat`` are kept. A PReLU's slope ``a`` gets
    ``sum(g * z over z < 0) = sum(g * min(y, 0)) / a``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        normalise_residual: bool,
        negative_slope: float | None,
        eps: float,
        slope_weight: torch.Tensor | None,
    ) -> Any:
        rstd = _normalise_(x, eps)
        rstd_r = _normalise_(residual, eps) if normalise_residual else None
        if residual is not None:
            x.add_(residual)
        if negative_slope is not None:
            F.leaky_relu_(x, negative_slope)
        ctx.save_for_backward(x, residual, rstd, rstd_r)
        ctx.negative_slope = negative_slope
        if not normalise_residual:
            ctx.mark_dirty(x)
            return x
        # The residual is returned too because it was normalised in place; only the sum is differentiable.
        ctx.mark_dirty(x, residual)
        ctx.mark_non_differentiable(residual)
        ctx.set_materialize_grads(False)  # no zero-filled map for the residual's (absent) gradient
        return x, residual

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        y, residual, rstd, rstd_r = ctx.saved_tensors
        slope = ctx.negative_slope
        n = y[0, 0].numel()
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        grad_w = None
        if ctx.needs_input_grad[5]:
            grad_w = _channel_dots(grad, y.clamp(max=0)).sum().div(slope).reshape(1)
        # t is fresh after the activation's backward; an incoming gradient may be shared, so it is never written.
        t = grad if slope is None else _times_slope(grad, y, slope)
        mean_t = t.mean((2, 3, 4), keepdim=True)
        k = _channel_dots(grad, y) / n  # mean(t * z)
        grad_r = None
        if residual is not None:
            k_r = _channel_dots(t, residual) / n
            k = k - k_r  # mean(t * x_hat), x_hat = z - r_hat
            if rstd_r is None:
                grad_r = t if slope is None else t.clone()
            else:
                grad_r = torch.addcmul(t, residual, -k_r).sub_(mean_t).mul_(rstd_r)
        # out = t - k * x_hat = t - k * z + k * r_hat
        if slope is None:
            out = torch.addcmul(t, y, -k)
        else:
            out = _times_slope(t, y, slope, out=t).addcmul_(y, -k)
            _times_slope(out, y, 1 / slope, out=out)
        if residual is not None:
            out.addcmul_(residual, k)
        return out.sub_(mean_t).mul_(rstd), grad_r, None, None, None, grad_w


def _normalise_(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Instance-normalise a channels-last ``x`` in place; returns ``1 / std``, ``(B, C, 1, 1, 1)``."""
    x.sub_(x.mean((2, 3, 4), keepdim=True))
    rstd = (_channel_dots(x, x) / x[0, 0].numel() + eps).rsqrt()
    x.mul_(rstd)
    return rstd


def _times_slope(a: torch.Tensor, y: torch.Tensor, slope: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a`` times ``slope`` where ``y < 0`` (LeakyReLU's backward, given its output ``y``)."""
    if out is None:
        return torch.ops.aten.leaky_relu_backward(a, y, slope, True)
    return torch.ops.aten.leaky_relu_backward.grad_input(a, y, slope, True, grad_input=out)
