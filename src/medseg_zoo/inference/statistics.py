"""Per-structure statistics of a segmentation: volume, voxel count and the input channels' intensities inside it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["EMPTY_POLICY", "segmentation_statistics"]

EMPTY_POLICY = "a structure without voxels has voxels 0 and volume_ml 0, and null intensity statistics"


def _intensities(data: np.ndarray, mask: np.ndarray, channels: Sequence[str]) -> dict[str, Any] | None:
    if not mask.any():
        return None
    out = {}
    for name, channel in zip(channels, data, strict=True):
        values = channel[mask].astype(np.float64)
        out[name] = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return out


def segmentation_statistics(
    labels: np.ndarray,
    data: np.ndarray,
    affine: np.ndarray,
    structures: Mapping[int, str],
    channels: Sequence[str],
    regions: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Volume in ml, voxel count and per-channel mean / std / min / max inside each structure.

    Args:
        labels: ``(X, Y, Z)`` label values on the input grid.
        data: ``(C, X, Y, Z)`` the input's intensities on that grid (as read: rescaled DICOM values, NIfTI values).
        affine: The grid's voxel-to-world matrix (voxel volume from its determinant).
        structures: ``{label value: name}``; background (0) is left out.
        channels: The input channels' names, in ``data``'s order.
        regions: ``{region name: label values}`` reported too (BraTS's TC, WT, ET), when the scheme has them.

    Returns:
        A JSON-serialisable dict: ``voxel_volume_ml``, ``empty_policy`` and ``structures`` (and ``regions``), each
        entry ``{"labels", "voxels", "volume_ml", "intensity": {channel: {mean, std, min, max}} or None}``.
    """
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0

    def entry(values: Sequence[int]) -> dict[str, Any]:
        mask = np.isin(labels, list(values))
        count = int(mask.sum())
        return {
            "labels": [int(v) for v in values],
            "voxels": count,
            "volume_ml": count * voxel_ml,
            "intensity": _intensities(data, mask, channels),
        }

    report: dict[str, Any] = {
        "voxel_volume_ml": voxel_ml,
        "empty_policy": EMPTY_POLICY,
        "structures": {name: entry([value]) for value, name in sorted(structures.items()) if value != 0},
    }
    if regions:
        report["regions"] = {name: entry(values) for name, values in regions.items()}
    return report
