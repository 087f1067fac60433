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

from medseg_zoo.errors import MissingExtraError
from medseg_zoo.inference.io import WRITER

__all__ = ["DicomSeries", "check_seg_source", "find_series", "read_dicom_seg", "read_series", "save_dicom_seg"]

_INSTALL = "pip install 'medseg-zoo[dicom]'"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ORIENTATION_TOLERANCE = 1e-4  # direction cosines: slices of one series share them to this
LINE_TOLERANCE = 0.01  # slice positions off the fitted line, as a fraction of the slice gap


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise MissingExtraError(f"reading DICOM needs pydicom: {_INSTALL}") from None
    return pydicom


def _input_error(message: str) -> Exception:
    from medseg_zoo.inference.io import InputError

    return InputError(message)


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
        raise _input_error(f"{folder}: no DICOM image files found in the folder (or below it)")
    if series_uid is not None:
        if series_uid not in series:
            listed = "; ".join(_describe(u, f) for u, f in series.items())
            raise _input_error(f"{folder}: no series {series_uid}; the folder holds {listed}")
        return series[series_uid]
    if len(series) > 1:
        listed = "\n  ".join(_describe(u, f) for u, f in series.items())
        raise _input_error(
            f"{folder}: holds {len(series)} series; choose one with --series-uid (Python series_uid=):\n  {listed}"
        )
    return next(iter(series.values()))


def _vector(ds: Any, key: str, size: int, where: Any) -> np.ndarray:
    value = ds.get(key)
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        out = np.array([])
    if out.shape != (size,) or not np.isfinite(out).all():
        raise _input_error(f"{where}: {key} is {value!r}; expected {size} numbers")
    return out


@dataclass
class _Slice:
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


def _slices(files: list[tuple[Path, Any]]) -> list[_Slice]:
    """The images of a series: one per single-frame file, one per frame of an enhanced multi-frame file (its
    per-frame and shared functional groups give each frame's position, orientation, spacing and rescale)."""
    out = []
    for path, ds in files:
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise _input_error(f"{path}: SamplesPerPixel {ds.SamplesPerPixel}; expected greyscale (1)")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if frames == 1 and not per_frame:
            out.append(_Slice(path, ds, None, ds, ds))
            continue
        if not per_frame or len(per_frame) != frames:
            raise _input_error(
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
            out.append(_Slice(path, ds, number, geometry, rescale))
    return out


def _geometry(files: list[tuple[Path, Any]]) -> tuple[list[_Slice], np.ndarray]:
    """The images in order along the normal and the LPS affine, or an error naming the file and the value."""
    slices = _slices(files)
    if len(slices) < 2:
        raise _input_error(f"{slices[0]}: the series has one slice; expected a 3-D series of several slices")
    first = slices[0]
    orientation = _vector(first.geometry, "ImageOrientationPatient", 6, first)
    row, column = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(column) - 1) > 1e-3 or abs(row @ column) > 1e-3:
        raise _input_error(
            f"{first}: ImageOrientationPatient {orientation.tolist()} is not two orthogonal unit vectors"
        )
    size = (int(first.header.Rows), int(first.header.Columns))
    spacing = _vector(first.geometry, "PixelSpacing", 2, first)
    if (spacing <= 0).any():
        raise _input_error(f"{first}: PixelSpacing {spacing.tolist()}; expected positive sizes")
    for image in slices[1:]:
        ds = image.header
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise _input_error(
                f"{image}: {ds.Rows}x{ds.Columns} pixels where {first.name} has {size[0]}x{size[1]}; every slice "
                "of a series must have one size"
            )
        other = _vector(image.geometry, "ImageOrientationPatient", 6, image)
        if np.abs(other - orientation).max() > ORIENTATION_TOLERANCE:
            raise _input_error(
                f"{image}: ImageOrientationPatient {other.tolist()} differs from {first.name}'s "
                f"{orientation.tolist()}; every slice of a series must share one orientation"
            )
        other = _vector(image.geometry, "PixelSpacing", 2, image)
        if np.abs(other - spacing).max() > 1e-4:
            raise _input_error(f"{image}: PixelSpacing {other.tolist()} differs from {first.name}'s {spacing.tolist()}")
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
        raise _input_error(
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
        raise _input_error(
            f"{slices[i + 1]}: {what} between {names[i]} and {names[i + 1]}: a gap of {gaps[i]:.4g} mm along the "
            f"slice normal where the series steps {gap:.4g} mm; expected evenly spaced slices"
        )
    step = (positions[-1] - positions[0]) / (len(slices) - 1)
    off_normal = step - (step @ normal) * normal
    if np.linalg.norm(off_normal) > LINE_TOLERANCE * gap:
        angle = np.degrees(np.arctan2(np.linalg.norm(off_normal), step @ normal))
        raise _input_error(
            f"{first.path.parent}: the slices step {np.round(step, 4).tolist()} mm, {angle:.2f} degrees off the "
            f"slice normal {np.round(normal, 4).tolist()} (gantry tilt or a sheared series); expected positions along "
            "the normal. Resample the series to an untilted grid first"
        )
    # Positions off the straight line through the first and last slice (a bent or jittered series)
    line = positions[0] + np.arange(len(slices))[:, None] * step
    worst = int(np.argmax(np.linalg.norm(positions - line, axis=1)))
    if np.linalg.norm(positions[worst] - line[worst]) > LINE_TOLERANCE * gap:
        raise _input_error(
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


def _pixels(path: Path, header: Any) -> np.ndarray:
    """A file's stored pixels: ``(rows, columns)``, or ``(frames, rows, columns)`` for a multi-frame file."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(path).pixel_array
    except Exception as exc:  # pydicom's pixel handlers raise many types for unsupported or corrupt data
        syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
        raise _input_error(
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
        raise _input_error(f"{folder}: not a folder; expected a folder holding a DICOM series")
    slices, lps = _geometry(_choose(folder, series_uid))
    files = {i.path for i in slices}
    frames = tuple(i.frame for i in slices) if slices[0].frame is not None else None
    if frames is not None and len(files) > 1:
        raise _input_error(
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
                raise _input_error(
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

    from medseg_zoo import __version__
    from medseg_zoo._atomic import atomic_write

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
