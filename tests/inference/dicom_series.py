"""DICOM series written by the tests themselves from synthetic volumes (pydicom), as a scanner would store them:
one file per slice, positions along the slice normal, LPS patient coordinates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _ds(value: float) -> str:
    return f"{value:.10g}"


def write_series(
    folder: Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    description: str = "synthetic",
    slope: float = 1.0,
    intercept: float = 0.0,
    reverse_instance_numbers: bool = False,
    names: list[str] | None = None,
    drop: int | None = None,
    tilt_mm: float = 0.0,
) -> list[Path]:
    """Write ``data`` (X, Y, Z) with RAS ``affine`` as single-frame MR slices.

    Stored pixels are ``(data - intercept) / slope`` as int16. ``reverse_instance_numbers`` numbers the slices
    against their positions; ``names`` gives the files' names (e.g. shuffled); ``drop`` leaves one slice out;
    ``tilt_mm`` shifts each slice along the column direction by that much per slice (a gantry tilt).
    """
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS @ affine
    row, column = lps[:3, 0], lps[:3, 1]
    spacing = (np.linalg.norm(column), np.linalg.norm(row))  # PixelSpacing: between rows, between columns
    orientation = [*(row / spacing[1]), *(column / spacing[0])]
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    n = data.shape[2]
    paths = []
    for k in range(n):
        if k == drop:
            continue
        position = lps[:3, 3] + k * lps[:3, 2] + k * tilt_mm * column / spacing[0]
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synthetic^Case", "SYN0001", "", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "", "", "1"
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "MR", 1, description
        ds.InstanceNumber = n - k if reverse_instance_numbers else k + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in orientation]
        ds.PixelSpacing = [_ds(v) for v in spacing]
        ds.SliceThickness = _ds(float(np.linalg.norm(lps[:3, 2])))
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
        stored = np.round((data[:, :, k].T - intercept) / slope).astype(np.int16)  # (rows, columns)
        ds.PixelData = stored.tobytes()
        name = names[k] if names else f"IM{k:04d}.dcm"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    modality: str = "CT",
    frame_order: list[int] | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> Path:
    """Write ``data`` (X, Y, Z) with RAS ``affine`` as one enhanced multi-frame CT or MR image: each frame placed by
    its per-frame PlanePositionSequence, orientation, pixel spacing and rescale in the shared functional groups.

    ``frame_order`` gives the slice index stored as each frame (default: slice k is frame k + 1).
    """
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedCTImageStorage, EnhancedMRImageStorage

    path.parent.mkdir(parents=True, exist_ok=True)
    sop_class = EnhancedCTImageStorage if modality == "CT" else EnhancedMRImageStorage
    lps = LPS @ affine
    row, column = lps[:3, 0], lps[:3, 1]
    spacing = (np.linalg.norm(column), np.linalg.norm(row))
    order = list(range(data.shape[2])) if frame_order is None else frame_order
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synthetic^Case", "SYN0002", "", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "", "", "1"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = modality, 2, 1, "enhanced"
    ds.Rows, ds.Columns, ds.NumberOfFrames = data.shape[1], data.shape[0], len(order)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    shared = Dataset()
    measures, plane, transform = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [_ds(v) for v in spacing]
    measures.SliceThickness = _ds(float(np.linalg.norm(lps[:3, 2])))
    plane.ImageOrientationPatient = [_ds(v) for v in (*(row / spacing[1]), *(column / spacing[0]))]
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = _ds(slope), _ds(intercept), "US"
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([plane])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        item, position, content = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [_ds(v) for v in lps[:3, 3] + k * lps[:3, 2]]
        content.DimensionIndexValues = [int(k) + 1]
        item.PlanePositionSequence = Sequence([position])
        item.FrameContentSequence = Sequence([content])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    stored = np.stack([np.round((data[:, :, k].T - intercept) / slope) for k in order]).astype(np.int16)
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
