"""Where the images of a DICOM series lie: single-frame slices, or the frames of an enhanced multi-frame file placed
by their functional groups, ordered along the slice normal by ImagePositionPatient (never InstanceNumber or file
name), with the measured slice step; a series that does not lie on one straight, evenly stepped line (gantry tilt,
a missing slice, uneven gaps) or whose images differ in size or orientation is refused, naming the file (and frame)
and the value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg_zoo.errors import InputError

__all__ = ["LINE_TOLERANCE", "ORIENTATION_TOLERANCE", "Slice", "geometry"]

ORIENTATION_TOLERANCE = 1e-4  # direction cosines: slices of one series share them to this
LINE_TOLERANCE = 0.01  # slice positions off the fitted line, as a fraction of the slice gap


def _vector(ds: Any, key: str, size: int, where: Any) -> np.ndarray:
    value = ds.get(key)
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        out = np.array([])
    if out.shape != (size,) or not np.isfinite(out).all():
        raise InputError(f"{where}: {key} is {value!r}; expected {size} numbers")
    return out


@dataclass
class Slice:
    """One 2-D image of a series: a single-frame file, or one frame of an enhanced multi-frame file."""

    path: Path
    header: Any
    frame: int | None  # 1-based frame number in a multi-frame file
    geometry: Any  # what holds ImagePositionPatient, ImageOrientationPatient and PixelSpacing for this image
    rescale: Any  # what holds RescaleSlope and RescaleIntercept

    @property
    def name(self) -> str:
        return self.path.name if self.frame is None else f"{self.path.name} frame {self.frame}"

    def __str__(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path} frame {self.frame}"


def _group(ds: Any, sequence: str, functional: tuple[Any, ...]) -> Any:
    """The item of a functional group macro (``PlanePositionSequence``, ...) for one frame: per-frame first, then
    shared (an enhanced multi-frame image keeps each macro in one of the two); else the top level."""
    for groups in functional:
        item = groups.get(sequence) if groups is not None else None
        if item:
            return item[0]
    return ds


def _slices(files: list[tuple[Path, Any]]) -> list[Slice]:
    """The images of a series: one per single-frame file, one per frame of an enhanced multi-frame file (its
    per-frame and shared functional groups give each frame's position, orientation, spacing and rescale)."""
    out = []
    for path, ds in files:
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise InputError(f"{path}: SamplesPerPixel {ds.SamplesPerPixel}; expected greyscale (1)")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if frames == 1 and not per_frame:
            out.append(Slice(path, ds, None, ds, ds))
            continue
        if not per_frame or len(per_frame) != frames:
            raise InputError(
                f"{path}: a multi-frame image of {frames} frames without a PerFrameFunctionalGroupsSequence of as many "
                "items; expected an enhanced multi-frame image (CT/MR) or single-frame slices"
            )
        shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
        for number, groups in enumerate(per_frame, start=1):
            functional = (groups, shared)
            geometry = {}
            for sequence, key in (
                ("PlanePositionSequence", "ImagePositionPatient"),
                ("PlaneOrientationSequence", "ImageOrientationPatient"),
                ("PixelMeasuresSequence", "PixelSpacing"),
            ):
                geometry[key] = _group(ds, sequence, functional).get(key)
            rescale = _group(ds, "PixelValueTransformationSequence", functional)
            out.append(Slice(path, ds, number, geometry, rescale))
    return out


def geometry(files: list[tuple[Path, Any]]) -> tuple[list[Slice], np.ndarray]:
    """The images in order along the normal and the LPS affine, or an error naming the file and the value."""
    slices = _slices(files)
    if len(slices) < 2:
        raise InputError(f"{slices[0]}: the series has one slice; expected a 3-D series of several slices")
    first = slices[0]
    orientation = _vector(first.geometry, "ImageOrientationPatient", 6, first)
    row, column = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(column) - 1) > 1e-3 or abs(row @ column) > 1e-3:
        raise InputError(f"{first}: ImageOrientationPatient {orientation.tolist()} is not two orthogonal unit vectors")
    size = (int(first.header.Rows), int(first.header.Columns))
    spacing = _vector(first.geometry, "PixelSpacing", 2, first)
    if (spacing <= 0).any():
        raise InputError(f"{first}: PixelSpacing {spacing.tolist()}; expected positive sizes")
    for image in slices[1:]:
        ds = image.header
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise InputError(
                f"{image}: {ds.Rows}x{ds.Columns} pixels where {first.name} has {size[0]}x{size[1]}; every slice "
                "of a series must have one size"
            )
        other = _vector(image.geometry, "ImageOrientationPatient", 6, image)
        if np.abs(other - orientation).max() > ORIENTATION_TOLERANCE:
            raise InputError(
                f"{image}: ImageOrientationPatient {other.tolist()} differs from {first.name}'s "
                f"{orientation.tolist()}; every slice of a series must share one orientation"
            )
        other = _vector(image.geometry, "PixelSpacing", 2, image)
        if np.abs(other - spacing).max() > 1e-4:
            raise InputError(f"{image}: PixelSpacing {other.tolist()} differs from {first.name}'s {spacing.tolist()}")
    normal = np.cross(row, column)
    positions = np.stack([_vector(i.geometry, "ImagePositionPatient", 3, i) for i in slices])
    order = np.argsort(positions @ normal, kind="stable")
    slices = [slices[i] for i in order]
    positions = positions[order]
    depth = positions @ normal
    gaps = np.diff(depth)
    names = [i.name for i in slices]
    if (gaps < 1e-4).any():
        i = int(np.argmin(gaps))
        raise InputError(
            f"{slices[i + 1]}: at the same position as {names[i]} ({positions[i].tolist()}); expected one slice "
            "per position (several echoes, phases or acquisitions in one series: split them)"
        )
    gap = float(np.median(gaps))
    uneven = np.abs(gaps - gap) > LINE_TOLERANCE * gap
    if uneven.any():
        i = int(np.argmax(np.abs(gaps - gap)))
        count = gaps[i] / gap
        what = (
            f"{round(count) - 1} slice(s) missing"
            if abs(count - round(count)) < LINE_TOLERANCE and round(count) >= 2
            else "uneven spacing"
        )
        raise InputError(
            f"{slices[i + 1]}: {what} between {names[i]} and {names[i + 1]}: a gap of {gaps[i]:.4g} mm along the "
            f"slice normal where the series steps {gap:.4g} mm; expected evenly spaced slices"
        )
    step = (positions[-1] - positions[0]) / (len(slices) - 1)
    off_normal = step - (step @ normal) * normal
    if np.linalg.norm(off_normal) > LINE_TOLERANCE * gap:
        angle = np.degrees(np.arctan2(np.linalg.norm(off_normal), step @ normal))
        raise InputError(
            f"{first.path.parent}: the slices step {np.round(step, 4).tolist()} mm, {angle:.2f} degrees off the "
            f"slice normal {np.round(normal, 4).tolist()} (gantry tilt or a sheared series); expected positions along "
            "the normal. Resample the series to an untilted grid first"
        )
    # Positions off the straight line through the first and last slice (a bent or jittered series)
    line = positions[0] + np.arange(len(slices))[:, None] * step
    worst = int(np.argmax(np.linalg.norm(positions - line, axis=1)))
    if np.linalg.norm(positions[worst] - line[worst]) > LINE_TOLERANCE * gap:
        raise InputError(
            f"{slices[worst]}: ImagePositionPatient {positions[worst].tolist()} is "
            f"{np.linalg.norm(positions[worst] - line[worst]):.3g} mm off the line of the other slices"
        )
    affine = np.eye(4)
    # Voxel (i, j, k): column i along the row cosine, row j along the column cosine (PixelSpacing is row, column)
    affine[:3, 0] = row * spacing[1]
    affine[:3, 1] = column * spacing[0]
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    return slices, affine
