"""What a prediction writes, checked before any work and written atomically: NIfTI on the input's grid or a DICOM
Segmentation referencing the input series, per-structure statistics beside it, and a preview picture."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg_zoo._atomic import atomic_write
from medseg_zoo._contract import TaskContract
from medseg_zoo._guard import check_output_file
from medseg_zoo.errors import InputError, OutputError
from medseg_zoo.inference.io import Output, OutputType, Volume, check_output, save_nifti
from medseg_zoo.inference.marker import WRITER, refuse_foreign
from medseg_zoo.inference.nifti import NIFTI_SUFFIXES
from medseg_zoo.inference.statistics import segmentation_statistics
from medseg_zoo.transforms.labels import get_scheme

__all__ = ["check_request", "check_volume", "save", "save_preview", "statistics_path"]


def check_request(
    contract: TaskContract,
    output: str | os.PathLike | None,
    reads: Sequence[Path] = (),
    *,
    kind: Output = "labels",
    output_type: OutputType = "nifti",
    statistics: bool = False,
    preview: str | os.PathLike | None = None,
) -> None:
    """Refuse, before any work, a request that cannot be written: an unknown kind or output type, a DICOM
    Segmentation, statistics or a preview of anything but labels, or for a model without label names; an output
    (its statistics file, a preview) that is an input, lies in an input series, has the wrong suffix, cannot be
    written, or exists and was not written by medseg-zoo.

    Raises:
        ValueError: A request that cannot be met.
        OutputError: An output that must not be written.
    """
    if kind not in ("labels", "probabilities", "regions"):
        raise ValueError(f"kind must be 'labels', 'probabilities' or 'regions', got {kind!r}")
    if output_type not in ("nifti", "dicom-seg"):
        raise ValueError(f"output_type must be 'nifti' or 'dicom-seg', got {output_type!r}")
    if (output_type == "dicom-seg" or statistics or preview is not None) and kind != "labels":
        raise ValueError(f"a DICOM Segmentation, statistics and a preview describe labels; got kind={kind!r}")
    if (output_type == "dicom-seg" or statistics) and contract.label_scheme is None:
        raise ValueError("the model's contract names no label scheme: its structures have no names to report")
    if statistics and output is None:
        raise ValueError("statistics are written beside the output: give an output path")
    folders = {f"the input series {p}": p for p in reads if p.is_dir()}
    if preview is not None:
        shown = check_output_file(preview, suffixes=(".png",), reads=reads, protected=folders, what="preview")
        refuse_foreign(shown, "preview")
        if output is not None and Path(preview).resolve() == Path(output).resolve():
            raise OutputError(f"preview {preview} is the output: give the picture a name of its own")
    if output is not None:
        check_output(output, reads, output_type)
        if statistics:
            stats = check_output_file(statistics_path(output), suffixes=(".json",), reads=reads, protected=folders)
            refuse_foreign(stats, "statistics file")


def check_volume(volume: Volume, output_type: OutputType) -> None:
    """Refuse, before any inference, a DICOM Segmentation of an input that is not a DICOM series, or of a
    series it cannot reference (a type-1 attribute missing: `medseg_zoo.inference.dicom.check_seg_source`).

    Raises:
        InputError: Naming the input (the file and the attribute).
    """
    if output_type != "dicom-seg":
        return
    if volume.series is None:
        raise InputError(
            f"{volume.source}: a DICOM Segmentation references the DICOM series it segments; this input is not "
            "one (write NIfTI for NIfTI inputs)"
        )
    from medseg_zoo.inference.dicom import check_seg_source

    check_seg_source(volume.series)


def save(
    contract: TaskContract,
    model_name: str,
    data: np.ndarray,
    volume: Volume,
    output: str | os.PathLike,
    *,
    output_type: OutputType = "nifti",
    statistics: bool = False,
) -> None:
    """Write a prediction of `predict_volume` (atomically): NIfTI on the input's grid or a DICOM Segmentation
    referencing the input series; with ``statistics``, its per-structure statistics as JSON beside it."""
    scheme = get_scheme(contract.label_scheme) if contract.label_scheme else None
    if output_type == "dicom-seg":
        from medseg_zoo.inference.dicom import save_dicom_seg

        structures = {v: n for v, n in scheme.labels.items() if v != 0}
        save_dicom_seg(data, volume.series, output, structures, model_name=model_name)
    else:
        save_nifti(data, volume, output)
    if statistics:
        report = segmentation_statistics(
            data, volume.data, volume.affine, scheme.labels, contract.in_channels, scheme.regions
        )
        report = {"written_by": WRITER, "source": volume.source, "output": str(output), **report}
        atomic_write(statistics_path(output), lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))


def save_preview(contract: TaskContract, data: np.ndarray, volume: Volume, path: str | os.PathLike, title: str) -> Path:
    """Write a PNG of labels ``data`` (from `predict_volume`) over the volume's first channel: three planes
    through the predicted structures (`medseg_zoo.inference.preview.write_preview`)."""
    from medseg_zoo.inference.preview import write_preview

    scheme = get_scheme(contract.label_scheme) if contract.label_scheme else None
    present = sorted(int(v) for v in np.unique(data) if v != 0)
    names = dict(scheme.labels) if scheme else {v: f"class {v}" for v in present}
    structures = {v: n for v, n in names.items() if v != 0}
    channel = contract.in_channels[0]
    return write_preview(volume.data[0], data, volume.affine, structures, path, channel=channel, title=title)


def statistics_path(output: str | os.PathLike) -> Path:
    """Where the statistics of an output go: ``seg.nii.gz`` -> ``seg_statistics.json``, beside it."""
    path = Path(output)
    stem = next((path.name[: -len(s)] for s in (*NIFTI_SUFFIXES, ".dcm") if path.name.endswith(s)), path.stem)
    return path.with_name(f"{stem}_statistics.json")
