"""Dice and HD95 per output channel, on MONAI's metric functions, with one written policy for empty masks.

Empty-mask policy (MONAI leaves these cases as NaN or a warning; averaging NaN silently drops a case):

| ground truth | prediction | Dice | HD95 |
|---|---|---|---|
| empty | empty | 1 | 0 mm |
| empty | not empty | 0 | the volume's diagonal in mm |
| not empty | empty | 0 | the volume's diagonal in mm |

So every case gives a finite number for every channel, and a missed or hallucinated structure scores as the worst
possible result rather than vanishing from the mean.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

__all__ = ["EMPTY_POLICY", "dice", "hd95", "volume_diagonal"]

EMPTY_POLICY = (
    "both empty: Dice 1, HD95 0 mm; one of ground truth and prediction empty: Dice 0, HD95 the volume diagonal (mm)"
)

Mask = np.ndarray | torch.Tensor


def _channels(pred: Mask, target: Mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as ``(1, C, ...)`` float tensors of 0/1, checked to have the same shape."""
    p, t = (torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m) for m in (pred, target))
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from ground truth shape {tuple(t.shape)}")
    if p.ndim < 2:
        raise ValueError(f"expected channels first (C, X, Y[, Z]), got shape {tuple(p.shape)}")
    return (p > 0).float()[None], (t > 0).float()[None]


def dice(pred: Mask, target: Mask) -> torch.Tensor:
    """Dice of binary masks ``(C, ...)`` per channel, ``(C,)``; empty masks follow `EMPTY_POLICY`."""
    p, t = _channels(pred, target)
    return compute_dice(p, t, include_background=True, ignore_empty=False)[0].cpu()


def volume_diagonal(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """Length in mm of the diagonal of a grid of ``shape`` voxels of ``spacing`` mm (1 mm by default)."""
    spacing = spacing or (1.0,) * len(shape)
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True)))


def hd95(pred: Mask, target: Mask, spacing: Sequence[float] | None = None) -> torch.Tensor:
    """95th-percentile symmetric Hausdorff distance in mm per channel, ``(C,)``.

    Args:
        pred: Binary masks ``(C, X, Y, Z)``.
        target: Ground truth of the same shape.
        spacing: Voxel size in mm per spatial axis (1 mm by default).

    Empty masks follow `EMPTY_POLICY`.
    """
    p, t = _channels(pred, target)
    spatial = tuple(p.shape[2:])
    spacing = tuple(float(s) for s in spacing) if spacing is not None else None
    if spacing is not None and len(spacing) != len(spatial):
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for {len(spatial)} spatial axes")
    present_p = p.flatten(2).any(-1)[0]
    present_t = t.flatten(2).any(-1)[0]
    both = present_p & present_t
    out = torch.where(present_p | present_t, volume_diagonal(spatial, spacing), 0.0).float()
    if both.any():
        with warnings.catch_warnings():  # MONAI warns about the empty channels we do not hand it
            warnings.simplefilter("ignore")
            distances = compute_hausdorff_distance(
                p[:, both], t[:, both], include_background=True, percentile=95, spacing=spacing
            )[0]
        out[both] = distances.float().cpu()
    return out
