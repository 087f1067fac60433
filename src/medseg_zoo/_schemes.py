"""Label schemes: the label values of a data-set edition and, for region schemes, the regions built from them. The
task contract names one, so this module lies below it; `medseg_zoo.transforms.labels` holds the conversions."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["LabelScheme", "LabelValueError", "get_scheme", "list_schemes"]

Array = np.ndarray | torch.Tensor


class LabelValueError(ValueError):
    """A label map with values outside its label scheme (the message names the file and the values)."""


@dataclass(frozen=True)
class LabelScheme:
    """The label values of a data-set edition and, for region schemes, the regions built from them.

    Attributes:
        name: Scheme name, e.g. ``"msd_task01"``.
        edition: The data set and edition the values come from.
        labels: Label value -> name, background (0) included.
        regions: Region name -> the label values it unites, in output-channel order; ``None`` for exclusive
            classes.
    """

    name: str
    edition: str
    labels: Mapping[int, str]
    regions: Mapping[str, tuple[int, ...]] | None = None

    def __post_init__(self) -> None:
        if 0 not in self.labels:
            raise ValueError(f"label scheme {self.name!r}: labels must include 0 (background), got {dict(self.labels)}")
        if self.regions is None:
            return
        unknown = {v for values in self.regions.values() for v in values} - set(self.labels)
        if unknown:
            raise ValueError(f"label scheme {self.name!r}: regions use values {sorted(unknown)} not in its labels")
        # Regions must nest, each adding one label, and cover every foreground label: then regions decode back
        # to labels exactly, and the innermost active region settles inconsistent predictions.
        chain = sorted(map(set, self.regions.values()), key=len)
        steps = [b - a for a, b in itertools.pairwise([set(), *chain])]
        if (
            any(not a <= b for a, b in itertools.pairwise(chain))
            or any(len(s) != 1 for s in steps)
            or (chain[-1] != set(self.labels) - {0})
        ):
            raise ValueError(
                f"label scheme {self.name!r}: regions must be nested, each adding one label, the largest holding "
                f"every foreground label; got {dict(self.regions)}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelScheme:
        """The inverse of ``dataclasses.asdict`` after a JSON round trip (label values come back as strings)."""
        regions = data.get("regions")
        return cls(
            name=str(data["name"]),
            edition=str(data["edition"]),
            labels={int(v): str(n) for v, n in data["labels"].items()},
            regions={str(k): tuple(int(v) for v in vs) for k, vs in regions.items()} if regions else None,
        )

    @property
    def exclusive(self) -> bool:
        """True for exclusive classes (softmax), False for overlapping regions (sigmoid)."""
        return self.regions is None

    @property
    def channels(self) -> tuple[str, ...]:
        """Output channel names: the regions, or the class names in label-value order."""
        if self.regions is not None:
            return tuple(self.regions)
        return tuple(self.labels[v] for v in sorted(self.labels))

    def check(self, label_map: Array, source: str = "label map") -> None:
        """Raise `LabelValueError` (a ``ValueError``) naming the values found if ``label_map`` has values outside
        the scheme."""
        found = np.unique(np.asarray(label_map.detach().cpu() if isinstance(label_map, torch.Tensor) else label_map))
        found = [int(v) if float(v).is_integer() else v for v in found.tolist()]  # float label maps read as floats
        bad = [v for v in found if v not in self.labels or int(v) != v]
        if bad:
            raise LabelValueError(
                f"{source}: label values {bad} are not in scheme {self.name!r} ({self.edition}); "
                f"values found: {found}, expected a subset of {sorted(self.labels)}"
            )


# TotalSegmentator v1 classes in label order, as in MONAI's wholeBody_ct_segmentation bundle (configs/metadata.json).
TOTALSEGMENTATOR_V1 = (
    "background", "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "aorta",
    "inferior_vena_cava", "portal_vein_and_splenic_vein", "pancreas", "adrenal_gland_right", "adrenal_gland_left",
    "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
    "lung_lower_lobe_right",
    *(f"vertebrae_L{i}" for i in range(5, 0, -1)),
    *(f"vertebrae_T{i}" for i in range(12, 0, -1)),
    *(f"vertebrae_C{i}" for i in range(7, 0, -1)),
    "esophagus", "trachea", "heart_myocardium", "heart_atrium_left", "heart_ventricle_left", "heart_atrium_right",
    "heart_ventricle_right", "pulmonary_artery", "brain", "iliac_artery_left", "iliac_artery_right",
    "iliac_vena_left", "iliac_vena_right", "small_bowel", "duodenum", "colon",
    *(f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 13)),
    "humerus_left", "humerus_right", "scapula_left", "scapula_right", "clavicula_left", "clavicula_right",
    "femur_left", "femur_right", "hip_left", "hip_right", "sacrum", "face", "gluteus_maximus_left",
    "gluteus_maximus_right", "gluteus_medius_left", "gluteus_medius_right", "gluteus_minimus_left",
    "gluteus_minimus_right", "autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right",
    "urinary_bladder",
)  # fmt: skip

_BRATS_LEGACY = {
    0: "background",
    1: "necrotic and non-enhancing tumour core",
    2: "peritumoral edema",
    4: "enhancing tumour",
}

_SCHEMES = {
    s.name: s
    for s in [
        LabelScheme(
            "msd_task01",
            "Medical Segmentation Decathlon Task01_BrainTumour",
            {0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"},
            {"TC": (2, 3), "WT": (1, 2, 3), "ET": (3,)},
        ),
        *[
            LabelScheme(f"brats{year}", f"BraTS {year}", _BRATS_LEGACY, {"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)})
            for year in (2018, 2019, 2020, 2021)
        ],
        LabelScheme(
            "brats2023",
            "BraTS 2023 adult glioma",
            {0: "background", 1: "necrotic tumour core", 2: "peritumoral edema", 3: "enhancing tumour"},
            {"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)},
        ),
        LabelScheme(
            "btcv",
            "BTCV (Beyond the Cranial Vault) abdomen, 13 organs",
            {
                0: "background",
                1: "spleen",
                2: "right kidney",
                3: "left kidney",
                4: "gallbladder",
                5: "esophagus",
                6: "liver",
                7: "stomach",
                8: "aorta",
                9: "inferior vena cava",
                10: "portal and splenic veins",
                11: "pancreas",
                12: "right adrenal gland",
                13: "left adrenal gland",
            },
        ),
        LabelScheme("totalsegmentator_v1", "TotalSegmentator v1, 104 structures", dict(enumerate(TOTALSEGMENTATOR_V1))),
        LabelScheme("msd_task09", "Medical Segmentation Decathlon Task09_Spleen", {0: "background", 1: "spleen"}),
        # The mapping of MONAI's tutorial transform ConvertToMultiChannelBasedOnBratsClassesd (ET = label 2).
        # Kept only to reproduce numbers published with it: on MSD Task01 data, where enhancing tumour is
        # label 3 and label 2 is non-enhancing tumour, it is wrong. Use msd_task01 there.
        LabelScheme(
            "monai_tutorial",
            "MONAI BraTS tutorial mapping (wrong for MSD Task01: it takes label 2 as enhancing tumour)",
            {0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"},
            {"TC": (2, 3), "WT": (1, 2, 3), "ET": (2,)},
        ),
    ]
}


def list_schemes() -> list[str]:
    """Names of the built-in label schemes."""
    return sorted(_SCHEMES)


def get_scheme(name: str | LabelScheme) -> LabelScheme:
    """A built-in label scheme by name (a scheme passes through).

    Raises:
        KeyError: If the name is unknown; the message lists the known ones.
    """
    if isinstance(name, LabelScheme):
        return name
    try:
        return _SCHEMES[name]
    except KeyError:
        raise KeyError(f"unknown label scheme {name!r}; known schemes: {', '.join(list_schemes())}") from None
