"""The NIfTI reader: one file's voxels as float32, its affine and its header (kept for the output)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg_zoo.errors import InputError

__all__ = ["NIFTI_SUFFIXES", "NiftiImage", "read_nifti"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class NiftiImage:
    """A NIfTI file read whole: ``data`` (X, Y, Z[, C]) float32, ``affine`` voxel-to-world (RAS mm), ``header``."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header


def read_nifti(path: str | Path) -> NiftiImage:
    """Read a NIfTI file.

    Raises:
        InputError: A missing file, or one nibabel cannot read (truncated, not an image), naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for truncated or corrupt files
        raise InputError(f"{path}: cannot read the image ({type(exc).__name__}: {exc})") from None
    return NiftiImage(data, img.affine, img.header)
