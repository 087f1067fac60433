"""How medseg-zoo's prediction outputs say who wrote them, so that a later run replaces its own files and never a
user's: the NIfTI intent name, the DICOM Segmentation's manufacturer, a JSON file's ``written_by``, a PNG's
``Software`` text."""

from __future__ import annotations

import json
import os
from pathlib import Path

from medseg_zoo.errors import OutputError

__all__ = ["PNG_WRITER_KEY", "WRITER", "refuse_foreign", "written_by_zoo"]

WRITER = "medseg-zoo"
PNG_WRITER_KEY = "Software"  # the PNG text chunk of a preview that names its writer


def written_by_zoo(path: str | os.PathLike) -> bool:
    """Whether an existing output file is one medseg-zoo wrote: a NIfTI whose intent name is ``medseg-zoo``, a
    DICOM Segmentation whose manufacturer is, a JSON file whose ``written_by`` is, or a PNG preview whose
    ``Software`` text says so."""
    name = str(path)
    try:
        if name.endswith((".nii.gz", ".nii")):
            import nibabel as nib

            return nib.load(path).header["intent_name"].item() == WRITER.encode()
        if name.endswith(".dcm"):
            import pydicom

            found = pydicom.dcmread(path, stop_before_pixels=True)
            return found.get("Modality") == "SEG" and found.get("Manufacturer") == WRITER
        if name.endswith(".json"):
            return json.loads(Path(path).read_text()).get("written_by") == WRITER
        if name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as img:
                return img.format == "PNG" and img.info.get(PNG_WRITER_KEY) == WRITER
    except Exception:  # unreadable: not provably ours
        return False
    return False


def refuse_foreign(path: Path, what: str = "output") -> None:
    """Refuse an existing file that medseg-zoo did not write (`written_by_zoo`).

    Raises:
        OutputError: Naming the file.
    """
    if path.exists() and not written_by_zoo(path):
        raise OutputError(
            f"{what} {path} exists and was not written by medseg-zoo: refusing to replace it; choose another output "
            "(a prediction medseg-zoo wrote is replaced, or kept with --skip-existing)"
        )
