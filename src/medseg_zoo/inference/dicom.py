"""DICOM in and out: a series read with the geometry its slice positions state, and a DICOM Segmentation of the
prediction that references it (the ``[dicom]`` extra: pydicom and highdicom).

Slices are ordered by their ImagePositionPatient along the slice normal (never by InstanceNumber or file name); the
slice step is the measured one, orientation comes from ImageOrientationPatient, and DICOM's LPS patient axes become
the zoo's RAS. A series whose positions do not lie on one straight, evenly stepped line along the normal (gantry
tilt, a missing slice, uneven gaps), or whose slices differ in size or orientation, is refused with the file and the
value: a wrong affine would put every label in the wrong place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg_zoo.errors import InputError, MissingExtraError
from medseg_zoo.inference.dicom_geometry import geometry
from medseg_zoo.inference.marker import WRITER

__all__ = ["DicomSeries", "check_seg_source", "find_series", "read_dicom_seg", "read_series", "save_dicom_seg"]

_INSTALL = "pip install 'medseg-zoo[dicom]'"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise MissingExtraError(f"reading DICOM needs pydicom: {_INSTALL}") from None
    return pydicom


@dataclass
class DicomSeries:
    """One series read as a volume.

    Attributes:
        data: ``(X, Y, Z)`` float32, rescale slope and intercept applied; X runs along a row (ImageOrientationPatient's
            first cosine), Y down the columns, Z along the slice normal in the order of the positions.
        affine: 4x4 voxel-to-world matrix, RAS mm.
        datasets: The slices' headers (no pixel data) in Z order, for a DICOM Segmentation that references them;
            for an enhanced multi-frame image its one header.
        uid: SeriesInstanceUID.
        folder: Where the series was read from.
        frames: For an enhanced multi-frame image, the frame number (from 1) of each Z index; else ``None``.
    """

    data: np.ndarray
    affine: np.ndarray
    datasets: list[Any]
    uid: str
    folder: Path
    frames: tuple[int, ...] | None = None


def _headers(folder: Path) -> list[tuple[Path, Any]]:
    """(file, header) of every DICOM image file under ``folder`` (other files are skipped)."""
    pydicom = _pydicom()
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if "SeriesInstanceUID" in ds and "Rows" in ds:  # an image (DICOMDIR, reports and the like have no rows)
            found.append((path, ds))
    return found


def find_series(folder: str | os.PathLike) -> dict[str, list[tuple[Path, Any]]]:
    """The image series under ``folder``: ``{SeriesInstanceUID: [(file, header), ...]}``."""
    series: dict[str, list[tuple[Path, Any]]] = {}
    for path, ds in _headers(Path(folder)):
        series.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    return series


def _describe(uid: str, files: list[tuple[Path, Any]]) -> str:
    ds = files[0][1]
    what = " ".join(str(ds.get(k, "")) for k in ("Modality", "SeriesDescription") if ds.get(k))
    return f"{uid} ({len(files)} files{', ' + what if what else ''})"


def _choose(folder: Path, series_uid: str | None) -> list[tuple[Path, Any]]:
    series = find_series(folder)
    if not series:
        raise InputError(f"{folder}: no DICOM image files found in the folder (or below it)")
    if series_uid is not None:
        if series_uid not in series:
            listed = "; ".join(_describe(u, f) for u, f in series.items())
            raise InputError(f"{folder}: no series {series_uid}; the folder holds {listed}")
        return series[series_uid]
    if len(series) > 1:
        listed = "\n  ".join(_describe(u, f) for u, f in series.items())
        raise InputError(
            f"{folder}: holds {len(series)} series; choose one with --series-uid (Python series_uid=):\n  {listed}"
        )
    return next(iter(series.values()))


def _pixels(path: Path, header: Any) -> np.ndarray:
    """A file's stored pixels: ``(rows, columns)``, or ``(frames, rows, columns)`` for a multi-frame file."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(path).pixel_array
    except Exception as exc:  # pydicom's pixel handlers raise many types for unsupported or corrupt data
        syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
        raise InputError(
            f"{path}: cannot decode the pixel data (transfer syntax {getattr(syntax, 'name', syntax)}: {exc}); "
            "compressed syntaxes need pydicom's pixel handlers (pip install pylibjpeg pylibjpeg-libjpeg "
            "pylibjpeg-openjpeg)"
        ) from None


def read_series(folder: str | os.PathLike, series_uid: str | None = None) -> DicomSeries:
    """Read one DICOM series from a folder with the geometry its slice positions state.

    Single-frame slices and enhanced multi-frame CT / MR images (one file of many frames, each placed by its
    functional groups) are read alike.

    Args:
        folder: A folder holding the series' files (searched recursively; other files are skipped).
        series_uid: The SeriesInstanceUID to read when the folder holds several.

    Raises:
        InputError: No DICOM images, several series without ``series_uid``, colour images, a multi-frame image
            without per-frame positions, slices of different sizes, orientations or pixel spacings, two slices at
            one position, a missing slice, uneven gaps, gantry tilt, or pixel data that cannot be decoded; naming
            the file (and frame) and the value.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; expected a folder holding a DICOM series")
    slices, lps = geometry(_choose(folder, series_uid))
    files = {i.path for i in slices}
    frames = tuple(i.frame for i in slices) if slices[0].frame is not None else None
    if frames is not None and len(files) > 1:
        raise InputError(
            f"{folder}: the series is stored in {len(files)} multi-frame files; expected one enhanced multi-frame "
            "file or single-frame slices"
        )
    decoded: dict[Path, np.ndarray] = {}
    planes = []
    for image in slices:
        if image.path not in decoded:
            decoded[image.path] = _pixels(image.path, image.header)
        pixels = decoded[image.path] if image.frame is None else decoded[image.path][image.frame - 1]
        slope = float(image.rescale.get("RescaleSlope", 1) or 1)
        intercept = float(image.rescale.get("RescaleIntercept", 0) or 0)
        planes.append((pixels.astype(np.float32) * slope + intercept).T)  # (rows, columns) -> (X, Y)
    data = np.ascontiguousarray(np.stack(planes, axis=-1), dtype=np.float32)
    datasets = [slices[0].header] if frames is not None else [i.header for i in slices]
    return DicomSeries(data, LPS_TO_RAS @ lps, datasets, str(slices[0].header.SeriesInstanceUID), folder, frames)


def _codes(name: str) -> tuple[Any, Any]:
    """(category, type) codes of a structure: SNOMED CT where pydicom's code dictionary names it, else a
    private code with the structure's name."""
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    key = "".join(word.capitalize() for word in name.replace("_", " ").replace("-", " ").split())
    lesion = any(w in name.lower() for w in ("tumor", "tumour", "edema", "oedema", "necro", "lesion", "enhanc"))
    category = (
        codes.SCT.MorphologicallyAbnormalStructure if lesion else codes.cid7150.AnatomicalStructure
    )  # CID 7150 Segmentation Property Categories
    try:
        kind = getattr(codes.SCT, key)
    except AttributeError:
        kind = CodedConcept(value=key[:16] or "Structure", scheme_designator="99MEDSEGZOO", meaning=name[:64])
    return category, kind


# What a DICOM Segmentation takes from the images it segments (PS3.3 C.7.1.1 Patient, C.7.2.1 General Study,
# C.7.4.1 Frame of Reference, C.12.1 SOP Common). Type 1 must hold a value; type 2 must be present but may be
# empty, and anonymisers often remove them: the writer gives a missing one its empty value.
SEG_SOURCE_TYPE_1 = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")
SEG_SOURCE_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def check_seg_source(series: DicomSeries) -> None:
    """Refuse, before any inference, a series a DICOM Segmentation cannot reference: a type-1 attribute missing or
    empty in one of its files (type-2 attributes may be missing; `save_dicom_seg` writes them empty).

    Raises:
        InputError: Naming the attribute and the file.
    """
    for ds in series.datasets:
        for key in SEG_SOURCE_TYPE_1:
            if not str(ds.get(key, "") or "").strip():
                where = getattr(ds, "filename", None) or series.folder
                raise InputError(
                    f"{where}: {key} is {'empty' if key in ds else 'missing'}; a DICOM Segmentation references the "
                    f"images it segments by it (a type-1 attribute, which must hold a value): write NIfTI instead "
                    "(--output-type nifti), or restore the attribute"
                )


def _with_type_2(ds: Any) -> Any:
    """A copy of a header with every type-2 attribute a Segmentation copies present (empty where it was missing)."""
    import copy

    out = copy.deepcopy(ds)
    for key in SEG_SOURCE_TYPE_2:
        if key not in out:
            setattr(out, key, "")
    return out


def save_dicom_seg(
    labels: np.ndarray,
    series: DicomSeries,
    path: str | os.PathLike,
    structures: dict[int, str],
    *,
    model_name: str,
) -> Path:
    """Write labels on a series' grid as a DICOM Segmentation referencing the series, one segment per structure.

    Args:
        labels: ``(X, Y, Z)`` label values on the series' grid (as `read_series` lays it out).
        series: The series the labels were predicted from.
        path: The file to write (atomically).
        structures: ``{label value: name}`` of the structures (background excluded); each becomes a segment, numbered
            from 1 in order of value.
        model_name: Recorded as the algorithm and the manufacturer's model name.
    """
    try:
        import highdicom as hd
    except ImportError:
        raise MissingExtraError(f"writing DICOM Segmentations needs highdicom: {_INSTALL}") from None
    from pydicom.sr.codedict import codes

    from medseg_zoo._atomic import atomic_write
    from medseg_zoo._version import __version__

    values = sorted(v for v in structures if v != 0)
    numbered = np.zeros(labels.shape, dtype=np.uint8)
    for number, value in enumerate(values, start=1):
        numbered[labels == value] = number
    frames = np.ascontiguousarray(np.moveaxis(numbered, -1, 0).transpose(0, 2, 1))  # (Z, X, Y) -> (slices, rows, cols)
    if series.frames is not None:  # one multi-frame source: the Segmentation's frames follow the source's frames
        frames = frames[np.argsort(series.frames)]
    check_seg_source(series)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"medseg-zoo {model_name}", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = []
    for number, value in enumerate(values, start=1):
        category, kind = _codes(structures[value])
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=structures[value][:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    seg = hd.seg.Segmentation(
        source_images=[_with_type_2(ds) for ds in series.datasets],
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(series.datasets[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=WRITER,
        manufacturer_model_name=model_name[:64],
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"medseg-zoo {model_name}"[:64],
        omit_empty_frames=False,
    )
    return atomic_write(path, lambda tmp: seg.save_as(tmp))


def read_dicom_seg(path: str | os.PathLike, series: DicomSeries, structures: dict[int, str]) -> np.ndarray:
    """The label values ``(X, Y, Z)`` of a DICOM Segmentation written by `save_dicom_seg`, on the series' grid."""
    import highdicom as hd

    seg = hd.seg.segread(path)
    if series.frames is not None:
        uid = series.datasets[0].SOPInstanceUID
        numbers = seg.get_pixels_by_source_frame(uid, list(series.frames), combine_segments=True)
    else:
        uids = [ds.SOPInstanceUID for ds in series.datasets]
        numbers = seg.get_pixels_by_source_instance(uids, combine_segments=True)  # (slices, rows, cols)
    values = np.array([0, *sorted(v for v in structures if v != 0)], dtype=np.uint8)
    return values[np.asarray(numbers).transpose(2, 1, 0)]
