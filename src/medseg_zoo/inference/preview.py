"""A look at a result without a viewer: three orthogonal planes through the predicted structures, each structure
filled and outlined over the image, in RAS display orientation whatever the file's."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg_zoo._atomic import atomic_write

__all__ = ["canonical", "planes", "write_preview"]


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    """``data`` (X, Y, Z, ...) in RAS voxel order (display orientation) and its voxel sizes, in mm."""
    ornt = nib.orientations.io_orientation(affine)
    out = nib.orientations.apply_orientation(data, ornt)
    sizes = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return out, tuple(float(sizes[int(i)]) for i in np.argsort(ornt[:, 0]))


def planes(
    centre: Sequence[int], zooms: Sequence[float]
) -> dict[str, tuple[tuple[int | slice, ...], tuple[str, str], float]]:
    """The axial, coronal and sagittal planes through ``centre`` of a RAS volume: name -> (index into the volume,
    (the direction to the right, the direction up), voxel height / width for the display)."""
    return {
        "axial": ((slice(None), slice(None), centre[2]), ("R", "A"), zooms[1] / zooms[0]),
        "coronal": ((slice(None), centre[1], slice(None)), ("R", "S"), zooms[2] / zooms[0]),
        "sagittal": ((centre[0], slice(None), slice(None)), ("A", "S"), zooms[2] / zooms[1]),
    }


def write_preview(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    structures: Mapping[int, str],
    path: str | os.PathLike,
    *,
    channel: str = "",
    title: str = "",
) -> Path:
    """Write a PNG of one image channel on three planes through the predicted structures' centre (the volume's
    centre when nothing was found), each structure in its own colour, filled and outlined.

    Args:
        image: ``(X, Y, Z)`` intensities on the labels' grid.
        labels: ``(X, Y, Z)`` label values.
        affine: Their voxel-to-world matrix (RAS mm).
        structures: ``{label value: name}`` of the structures to show (background excluded).
        path: The PNG to write (atomically); it records medseg-zoo as its writer.
        channel: The channel's name, for the title.
        title: What the picture shows (the case).
    """
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from medseg_zoo.inference.marker import PNG_WRITER_KEY, WRITER

    shown, zooms = canonical(np.asarray(image, dtype=np.float32), affine)
    found, _ = canonical(np.asarray(labels), affine)
    values = [v for v in sorted(structures) if v != 0]
    colours = colormaps["tab10"].colors
    foreground = np.isin(found, values)
    centre = [s // 2 for s in found.shape]
    if foreground.any():
        centre = np.rint(np.argwhere(foreground).mean(axis=0)).astype(int).tolist()
    inside = shown[shown != 0] if (shown != 0).any() else shown.ravel()
    low, high = np.percentile(inside, [0.5, 99.5]) if inside.size else (0.0, 1.0)
    fig = Figure(figsize=(12, 4.6))
    fig.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.14, wspace=0.05)
    for ax, (name, (index, (right, up), aspect)) in zip(fig.subplots(1, 3), planes(centre, zooms).items(), strict=True):
        ax.imshow(shown[index].T, cmap="gray", origin="lower", vmin=low, vmax=max(high, low + 1e-6), aspect=aspect)
        plane = found[index].T
        for i, value in enumerate(values):
            mask = plane == value
            if mask.any():
                colour = colours[i % len(colours)]
                ax.imshow(np.ma.masked_where(~mask, mask), cmap=ListedColormap([colour]), alpha=0.35,
                          origin="lower", aspect=aspect, interpolation="nearest")  # fmt: skip
                if not mask.all():
                    ax.contour(mask, levels=[0.5], colors=[colour], linewidths=1.0)
        ax.set_title(f"{name}: {right} to the right, {up} up", fontsize=10)
        ax.set_axis_off()
    counts = {v: int((found == v).sum()) for v in values}
    handles = [
        Patch(color=colours[i % len(colours)], label=f"{structures[v]} ({counts[v]} voxels)")
        for i, v in enumerate(values)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(5, max(1, len(handles))), frameon=False)
    fig.suptitle(f"{title}: {channel or 'image'} with the predicted structures" if title else "prediction")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png", metadata={PNG_WRITER_KEY: WRITER}))
