"""Prediction inputs and outputs: one dispatcher over the NIfTI and DICOM readers, which stand side by side
(`medseg_zoo.inference.nifti`, `medseg_zoo.inference.dicom`), checks of what was read, and NIfTI outputs on the
input's grid."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch

from medseg_zoo._atomic import atomic_write
from medseg_zoo._contract import channel_order, is_generic
from medseg_zoo._guard import check_output_file
from medseg_zoo.data.discovery import Case
from medseg_zoo.errors import InputError, OutputError
from medseg_zoo.inference.dicom import DicomSeries, find_series, read_series
from medseg_zoo.inference.marker import WRITER, refuse_foreign
from medseg_zoo.inference.nifti import NIFTI_SUFFIXES, read_nifti

__all__ = ["InputError", "Inputs", "Volume", "check_output", "input_paths", "load_volume", "save_nifti"]

AFFINE_TOLERANCE_MM = 1e-3
MAX_GRID_VOXELS = 1 << 30  # model-grid voxels per channel beyond which an input is refused
MAX_UPSAMPLING = 512  # model-grid voxels per input voxel (8x per axis) refused above 16 M voxels: a wrong header

Inputs = str | os.PathLike | Mapping[str, str | os.PathLike] | Case | tuple[Any, Any]
OutputType = Literal["nifti", "dicom-seg"]
Output = Literal["labels", "probabilities", "regions"]


@dataclass
class Volume:
    """A multi-channel volume and its geometry.

    Attributes:
        data: ``(C, X, Y, Z)`` float32 intensities, channels in the model's order (possibly a strided view).
        affine: 4x4 voxel-to-world (RAS mm) matrix.
        header: The NIfTI header of the (first) input file, kept for the output; ``None`` for arrays and DICOM.
        source: What the volume was read from, for messages.
        series: The (first) DICOM series it was read from, which a DICOM Segmentation output references.
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None
    source: str
    series: DicomSeries | None = None


@dataclass
class _Image:
    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None
    series: DicomSeries | None


def _read(path: Path, series_uid: str | None = None) -> _Image:
    """The dispatcher: the DICOM series in a folder (`medseg_zoo.inference.dicom.read_series`), else a NIfTI file
    (`medseg_zoo.inference.nifti.read_nifti`)."""
    if path.is_dir():
        series = read_series(path, series_uid)
        return _Image(series.data, series.affine, None, series)
    img = read_nifti(path)
    return _Image(img.data, img.affine, img.header, None)


def _check_affine(affine: np.ndarray, source: str) -> None:
    """A voxel-to-world matrix must be finite with non-zero voxel sizes on independent axes."""
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        sizes = ", ".join(f"{v:.3g}" for v in np.sqrt((np.nan_to_num(affine[:3, :3]) ** 2).sum(axis=0)))
        raise InputError(
            f"{source}: the affine is singular or not finite (voxel sizes {sizes} mm): expected a voxel-to-world "
            f"matrix with non-zero voxel sizes; fix the file's qform/sform. Affine:\n{affine}"
        )


def _finite(data: np.ndarray, source: str) -> None:
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(f"{source}: {int(bad.sum())} NaN/inf voxel(s); expected finite intensities")


def load_volume(
    inputs: Inputs,
    channels: Sequence[str],
    file_channels: Sequence[str] | None = None,
    series_uid: str | None = None,
) -> Volume:
    """Read a prediction input and check it against the model's input channels.

    Args:
        inputs: ``{channel name: 3-D NIfTI path or DICOM series folder}`` for every channel of the model (the
            recommended form); a 4-D NIfTI path (channels last); a DICOM series folder for a one-channel model; a
            `medseg_zoo.data.Case` of a discovered data set (its channel names come with it); or
            ``(array, affine)`` with a ``(C, X, Y, Z)`` numpy/torch array in the model's channel order.
        channels: The model's input channel names, in order.
        file_channels: The names of a 4-D file's channels, in the file's order (an MSD Task01 file: FLAIR, T1w,
            T1gd, T2w). Required when the model reads several channels: they are put in the model's order by name
            (T1gd is T1c, T1w is T1, T2w is T2, ...).
        series_uid: The series to read from a DICOM folder holding several.

    Raises:
        InputError: Unreadable or truncated file, wrong channel count or names, a 4-D file without its channel
            names for a model of several channels, 3-D where 4-D is needed, mismatched grids, NaN/inf voxels, a
            DICOM series that `medseg_zoo.inference.dicom.read_series` refuses. The message names the file and what
            was expected.
    """
    names = ", ".join(channels)
    expected = "a 4-D NIfTI path, {channel name: path}, a discovered Case or an (array, affine) tuple"
    if isinstance(inputs, Case):
        if len(inputs.images) > 1:  # one file per channel (nnU-Net): named by the data set's channels
            inputs = dict(zip(inputs.channels or range(len(inputs.images)), inputs.images, strict=True))
        else:
            file_channels = file_channels or (inputs.channels if len(channels) > 1 else None)
            inputs = inputs.images[0]
    if isinstance(inputs, tuple):
        if len(inputs) != 2:
            raise InputError(f"array input: a tuple of {len(inputs)} items; expected {expected}")
        array, affine = inputs
        try:
            data = np.asarray(array.detach().cpu() if isinstance(array, torch.Tensor) else array, dtype=np.float32)
            affine = np.asarray(affine, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"array input: not numbers ({exc}); expected {expected}") from None
        if data.ndim != 4 or data.shape[0] != len(channels) or affine.shape != (4, 4):
            raise InputError(
                f"array input: shape {data.shape} with affine {affine.shape}; expected ({len(channels)}, X, Y, Z) "
                f"channels first ({names}) and a 4x4 affine"
            )
        _check_affine(affine, "array input")
        _finite(data, "array input")
        return Volume(data, affine, None, "array input")
    if not isinstance(inputs, str | os.PathLike | Mapping):
        what = f"a {type(inputs).__name__} of {len(inputs)} items" if hasattr(inputs, "__len__") else repr(inputs)
        raise InputError(f"prediction input: {what}; expected {expected} (one case per call)")

    if isinstance(inputs, Mapping):
        order = channel_order(tuple(inputs), tuple(channels))  # T1c for T1gd, T1 for T1w, ... in any order
        if order is not None:
            inputs = {c: inputs[list(inputs)[i]] for c, i in zip(channels, order, strict=True)}
        missing = [c for c in channels if c not in inputs]
        extra = [c for c in inputs if c not in channels]
        if missing or extra:
            raise InputError(
                f"per-channel inputs: missing {missing or 'none'}, unexpected {extra or 'none'}; the model reads "
                f"{names}"
            )
        arrays = []
        first = None
        for name in channels:
            path = Path(inputs[name])
            img = _read(path)
            data = img.data
            if data.ndim != 3:
                raise InputError(f"{path}: channel {name} has shape {data.shape}; expected a 3-D image")
            if first is None:
                first = (path, img)
            elif data.shape != first[1].data.shape or not np.allclose(
                img.affine, first[1].affine, atol=AFFINE_TOLERANCE_MM
            ):
                raise InputError(
                    f"{path}: grid {data.shape} differs from {first[0]} {first[1].data.shape} (shape or affine); "
                    "every channel must share one grid"
                )
            _finite(data, str(path))
            arrays.append(data)
        _check_affine(first[1].affine, str(first[0]))
        header = first[1].header.copy() if first[1].header is not None else None
        return Volume(np.stack(arrays), first[1].affine, header, str(first[0]), first[1].series)

    path = Path(inputs)
    if path.is_dir():
        if any(p.name.endswith(NIFTI_SUFFIXES) for p in path.iterdir()) or not find_series(path):
            raise InputError(
                f"{path} is a folder; expected a NIfTI file (.nii.gz or .nii) or a folder holding a DICOM series (one "
                "case per call: medseg-zoo predict -i FOLDER predicts a folder of NIfTI cases)"
            )
        if len(channels) != 1:
            raise InputError(
                f"{path}: a DICOM series is one channel; the model reads {len(channels)} ({names}): give one series "
                "folder per channel, {name: folder} (medseg-zoo predict -i FLAIR=dirA T1w=dirB ...)"
            )
        img = _read(path, series_uid)
        _check_affine(img.affine, str(path))
        _finite(img.data, str(path))
        return Volume(img.data[None], img.affine, None, str(path), img.series)
    # What the file is comes first (readable, an image, its dimensions, its values), then which channel is which:
    # a user is never sent to name the channels of a file that cannot be used anyway.
    img = _read(path)
    data = img.data
    if data.ndim == 3 and len(channels) == 1:
        data = data[..., None]
    if data.ndim != 4 or data.shape[3] != len(channels):
        found = f"has {data.shape[3]} channels" if data.ndim == 4 else "has no channel axis"
        raise InputError(
            f"{path}: image shape {data.shape} {found}; expected a 4-D image (X, Y, Z, {len(channels)}) with "
            f"channels {names}, or one 3-D file per channel"
        )
    _check_affine(img.affine, str(path))
    _finite(data, str(path))
    order = _file_order(path, channels, file_channels)
    # A channels-first view of the file's (X, Y, Z, C) order (permuted to the model's): preprocessing copies it.
    data = np.moveaxis(data, -1, 0)
    return Volume(data if order is None else data[order], img.affine, img.header.copy(), str(path))


def _file_order(path: Path, channels: Sequence[str], file_channels: Sequence[str] | None) -> list[int] | None:
    """Indices of a 4-D file's channels in the model's order; ``None`` for a single channel."""
    names = ", ".join(channels)
    if (len(channels) == 1 or is_generic(tuple(channels))) and file_channels is None:
        return None  # one channel, or a model whose channel names are placeholders: nothing to put in order
    if file_channels is None:
        raise InputError(
            f"{path}: a 4-D file for a model of {len(channels)} channels must say which channel is which: the model "
            f"reads {names}. Give the file's channel order (predict(..., channels=[...]), medseg-zoo predict "
            "--channels A,B,...; a data set's dataset.json says it), or one 3-D file per channel {name: path}"
        )
    file_channels = tuple(file_channels)
    if len(file_channels) != len(channels):
        raise InputError(
            f"{path}: channels {', '.join(file_channels)} name {len(file_channels)} channel(s); the model reads "
            f"{len(channels)}: {names}"
        )
    if is_generic(tuple(channels)):
        return None
    order = channel_order(file_channels, tuple(channels))
    if order is None:
        raise InputError(
            f"{path}: the file's channels {', '.join(file_channels)} are not the model's ({names}); names count as "
            "the same sequence when they are aliases (T1gd/T1c/T1ce, T1w/T1, T2w/T2, FLAIR/T2f)"
        )
    return order


def save_nifti(data: np.ndarray, reference: Volume, path: str | os.PathLike) -> Path:
    """Write ``data`` (X, Y, Z[, C]) on the reference's grid, atomically (temporary file, then rename).

    The reference's header is kept — qform and sform with their codes, units, descriptions — with the data type
    of ``data`` and no intensity scaling. The intent says what the file is: ``label`` for integer label maps, and
    the name ``medseg-zoo``, which lets a later prediction replace this file and no other (`check_output`).
    """
    header = reference.header.copy() if reference.header is not None else nib.Nifti1Header()
    img = nib.Nifti1Image(data, reference.affine, header=header)
    img.set_data_dtype(data.dtype)
    img.header.set_slope_inter(np.nan, np.nan)
    img.header.set_intent("label" if np.issubdtype(data.dtype, np.integer) else "none", (), name=WRITER)
    if reference.header is not None:
        img.set_qform(reference.header.get_qform(), code=int(reference.header["qform_code"]))
        img.set_sform(reference.header.get_sform(), code=int(reference.header["sform_code"]))
    return atomic_write(path, lambda tmp: nib.save(img, tmp))


def input_paths(inputs: Inputs) -> list[Path]:
    """The files a prediction input reads (none for arrays)."""
    if isinstance(inputs, Case):
        return list(inputs.images)
    if isinstance(inputs, Mapping):
        return [Path(p) for p in inputs.values()]
    if isinstance(inputs, str | os.PathLike):
        return [Path(inputs)]
    return []


OUTPUT_SUFFIXES = {"nifti": NIFTI_SUFFIXES, "dicom-seg": (".dcm",)}


def _stem(path: Path) -> str:
    return next((path.name[: -len(s)] for s in NIFTI_SUFFIXES if path.name.endswith(s)), path.name)


def case_name(inputs: Inputs) -> str | None:
    """The name of the case an input holds, as an output in a folder is named: a `Case`'s name, a file's name
    without its suffix, a DICOM series folder's name; for one file per channel the first file's name without
    nnU-Net's channel suffix (``CASE_0000``), or the folder above the series folders. ``None`` for arrays."""
    if isinstance(inputs, Case):
        return inputs.name
    if isinstance(inputs, Mapping) and inputs:
        first = Path(next(iter(inputs.values())))
        return first.resolve().parent.name if first.is_dir() else re.sub(r"_\d{4}$", "", _stem(first))
    if isinstance(inputs, str | os.PathLike):
        path = Path(inputs)
        return path.resolve().name if path.is_dir() else _stem(path)
    return None


def output_in_folder(output: str | os.PathLike, inputs: Inputs, suffix: str) -> Path:
    """Where an output goes: ``output`` itself, or ``output/<case name><suffix>`` when it is a folder.

    Raises:
        OutputError: A folder for an input that has no name (an array).
    """
    path = Path(output)
    if not path.is_dir():
        return path
    name = case_name(inputs)
    if name is None:
        raise OutputError(
            f"output {path} is a folder, and an array input has no name to give the file: give a file name, e.g. "
            f"{path / ('case' + suffix)}"
        )
    return path / f"{name}{suffix}"


def check_output(output: str | os.PathLike, inputs: Sequence[Path] = (), output_type: OutputType = "nifti") -> Path:
    """Refuse, before any work, an output path that would replace an input or lie inside an input folder (a DICOM
    series), is not a NIfTI (or, for ``"dicom-seg"``, ``.dcm``) file name, is a folder, cannot be written
    (`medseg_zoo._guard.check_output_file`), or exists and is not a file medseg-zoo wrote (`written_by_zoo`): a
    user's label map or another tool's output is never replaced.

    Raises:
        OutputError: Naming the path and what was expected.
    """
    folders = {f"the input series {p}": p for p in inputs if p.is_dir()}
    path = check_output_file(
        output, suffixes=OUTPUT_SUFFIXES[output_type], reads=[p for p in inputs if not p.is_dir()], protected=folders
    )
    refuse_foreign(path)
    return path


def warn_without_signal(volume: Volume, channels: Sequence[str]) -> None:
    """Warn about channels that hold one value everywhere (an all-zero file, say): the labels of such an input
    mean nothing, however confident they look."""
    flat = volume.data.reshape(len(volume.data), -1)
    constant = [(c, float(v[0])) for c, v in zip(channels, flat, strict=True) if v.size and v.min() == v.max()]
    if constant:
        found = ", ".join(f"{c} (every voxel {v:g})" for c, v in constant)
        warnings.warn(
            f"{volume.source}: no signal in channel(s) {found}; the prediction of such an input is meaningless. "
            "Check that the file holds the image",
            UserWarning,
            stacklevel=3,
        )


def check_grid(volume: Volume, spacing: Sequence[float] | None) -> None:
    """Refuse an input whose grid at a model's ``spacing`` would be huge (usually voxel sizes wrong in the header).

    Raises:
        InputError: With the voxel counts and the limits.
    """
    if spacing is None:
        return
    shape = np.asarray(volume.data.shape[1:], dtype=float)
    sizes = np.sqrt((np.asarray(volume.affine)[:3, :3] ** 2).sum(axis=0))
    target = float(np.prod(shape * sizes) / np.prod(spacing))
    ratio = target / float(np.prod(shape))
    if target > MAX_GRID_VOXELS or (target > 1 << 24 and ratio > MAX_UPSAMPLING):
        raise InputError(
            f"{volume.source}: {'x'.join(f'{int(v)}' for v in shape)} voxels of "
            f"{' x '.join(f'{v:.3g}' for v in sizes)} mm would become ~{target:.3g} voxels ({ratio:.3g}x as "
            f"many) at the model's spacing {spacing} mm; refusing (limits: {MAX_GRID_VOXELS:.3g} "
            f"voxels, or {MAX_UPSAMPLING}x upsampling above 16 M voxels). Check the voxel sizes in the header"
        )
