"""Normalisation factory for 3D feature maps."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["NORM_NAMES", "get_norm"]

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
