"""A synthetic BraTS-like data set in MSD Task01 layout, for tests, the demo and the docs.

Each case is a brain-like ellipsoid (white matter, grey matter, ventricles) holding a tumour of nested regions —
edema around a core whose rim enhances — imaged in four modalities (FLAIR, T1w, T1gd, T2w) with their contrasts,
a smooth bias field and noise, on a random grid: non-RAS orientations, anisotropic spacing and sometimes an
oblique rotation. Labels follow the ``msd_task01`` scheme: 1 edema, 2 non-enhancing tumour, 3 enhancing tumour.

Two variants make transfer targets that differ from the default set as users' data differ from a publisher's:

- ``domain="other_scanner"``: the same anatomy and regions from another site: other tissue contrasts (less
  grey-white contrast, dimmer edema on FLAIR, weaker enhancement), an intensity scale about 3.5 times larger with an
  offset inside the head, thick slices (1 x 1 x 3 mm), a wider field of view (the head fills less of it) and other
  orientations (``LPI``, ``AIL``, ``SRA``).
- ``task="anatomy"``: another label set on the default images, so a pretrained head must be replaced: 1 white
  matter, 2 ventricles (where no tumour is), exclusive classes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from medseg_zoo._atomic import atomic_write
from medseg_zoo.data.discovery import DataSetError

__all__ = ["DOMAINS", "MODALITIES", "TASKS", "make_case", "make_ct_dataset", "make_dataset"]

MODALITIES = ("FLAIR", "T1w", "T1gd", "T2w")

# Mean intensity of each tissue per modality (FLAIR, T1w, T1gd, T2w), roughly as they appear in BraTS.
_TISSUES = {
    "csf": (0.10, 0.15, 0.15, 0.95),
    "grey": (0.50, 0.45, 0.45, 0.60),
    "white": (0.40, 0.65, 0.65, 0.40),
    "edema": (0.90, 0.35, 0.35, 0.85),
    "necrosis": (0.55, 0.20, 0.25, 0.75),
    "enhancing": (0.70, 0.40, 0.98, 0.60),
}
_ORIENTATIONS = ("RAS", "LPS", "LAS", "RPI", "PSR", "ILA")


@dataclass(frozen=True)
class _Domain:
    """How one site images the anatomy: contrasts, intensity scale and offset, grid and field of view."""

    tissues: dict[str, tuple[float, float, float, float]]
    orientations: tuple[str, ...]
    spacings: tuple[tuple[float, float, float], ...] | None  # None: random per axis from 1 to 2 mm
    brain: tuple[float, float]  # brain radii as fractions of the field of view
    scale: float
    offset: float


DOMAINS = {
    "brats": _Domain(_TISSUES, _ORIENTATIONS, None, (0.36, 0.44), 1.0, 0.0),
    "other_scanner": _Domain(
        {
            "csf": (0.18, 0.12, 0.12, 0.90),
            "grey": (0.55, 0.50, 0.48, 0.62),
            "white": (0.45, 0.62, 0.60, 0.45),
            "edema": (0.80, 0.38, 0.36, 0.80),
            "necrosis": (0.50, 0.22, 0.28, 0.70),
            "enhancing": (0.65, 0.42, 0.85, 0.58),
        },
        ("LPI", "AIL", "SRA"),
        ((1.0, 1.0, 3.0),),
        (0.28, 0.34),
        3.5,
        0.08,
    ),
}
TASKS = {
    "tumour": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
    "anatomy": {"0": "background", "1": "white matter", "2": "ventricles"},
}


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], cells: int = 5) -> np.ndarray:
    """Smooth random field in [-1, 1] (a coarse random grid upsampled trilinearly)."""
    coarse = torch.from_numpy(rng.uniform(-1, 1, size=(1, 1, cells, cells, cells)).astype(np.float32))
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0].numpy()


def _random_affine(rng: np.random.Generator, shape: Sequence[int], domain: _Domain) -> np.ndarray:
    """A voxel-to-world affine: random orientation, anisotropic spacing, sometimes a small oblique rotation."""
    if domain.spacings is None:
        spacing = rng.choice([1.0, 1.2, 1.5, 2.0], size=3, p=[0.4, 0.2, 0.2, 0.2])
    else:
        spacing = np.asarray(domain.spacings[rng.integers(len(domain.spacings))])
    codes = domain.orientations[rng.integers(len(domain.orientations))]
    ornt = nib.orientations.axcodes2ornt(tuple(codes))
    axes = np.zeros((3, 3))
    for voxel_axis, (world_axis, flip) in enumerate(ornt.astype(int)):
        axes[world_axis, voxel_axis] = flip * spacing[voxel_axis]
    if rng.random() < 0.25:  # oblique: rotate the grid by up to 15 degrees about a random world axis
        angle = np.deg2rad(rng.uniform(-15, 15))
        c, s = np.cos(angle), np.sin(angle)
        i, j = rng.choice(3, size=2, replace=False)
        rot = np.eye(3)
        rot[[i, i, j, j], [i, j, i, j]] = c, -s, s, c
        axes = rot @ axes
    affine = np.eye(4)
    affine[:3, :3] = axes
    affine[:3, 3] = -axes @ (np.asarray(shape) - 1) / 2 + rng.uniform(-10, 10, size=3)  # centre near the origin
    return affine


def make_case(
    shape: Sequence[int] = (96, 96, 96), seed: int = 0, *, domain: str = "brats", task: str = "tumour"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic case.

    Args:
        shape: Voxel grid.
        seed: Seed of the case.
        domain: ``"brats"`` or ``"other_scanner"`` (see the module's description).
        task: ``"tumour"`` (the ``msd_task01`` labels) or ``"anatomy"`` (1 white matter, 2 ventricles).

    Returns:
        ``image`` (X, Y, Z, 4) int16 in the order of `MODALITIES`, ``label`` (X, Y, Z) uint8 with the labels of
        ``TASKS[task]``, and the shared 4x4 ``affine``.
    """
    site = _choice(DOMAINS, domain, "domain")
    _choice(TASKS, task, "task")
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    affine = _random_affine(rng, shape, site)
    ijk = np.stack(np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)  # mm

    # The field of view is the smallest world extent of the grid; the brain fills most of it.
    fov = np.min(np.abs(affine[:3, :3]).sum(axis=0) * np.asarray(shape))
    centre = world.reshape(-1, 3).mean(axis=0)
    wobble = 0.06 * _smooth_noise(rng, shape)

    def ellipsoid(center: np.ndarray, radii: np.ndarray, jitter: float = 0.0) -> np.ndarray:
        d = np.sqrt((((world - center) / radii) ** 2).sum(axis=-1))
        return d + (jitter * _smooth_noise(rng, shape, cells=4) if jitter else 0.0)

    brain_radii = fov * rng.uniform(*site.brain, size=3)
    brain = ellipsoid(centre, brain_radii) + wobble < 1
    white = ellipsoid(centre, brain_radii * 0.7) + wobble < 1
    ventricles = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        offset = np.array([side * brain_radii[0] * 0.15, 0, 0])
        ventricles |= ellipsoid(centre + offset, brain_radii * np.array([0.08, 0.3, 0.12])) < 1

    # Tumour: a random centre inside the brain; edema contains the core, whose rim enhances. Proportions as in
    # BraTS: the core about a third of the whole tumour, the enhancing rim about half of the core.
    t_centre = centre + rng.uniform(-0.35, 0.35, size=3) * brain_radii
    t_radius = fov * rng.uniform(0.10, 0.16)
    edema_d = ellipsoid(t_centre, t_radius * rng.uniform(1.3, 1.7, size=3), jitter=0.25)
    core_d = ellipsoid(t_centre, t_radius * rng.uniform(0.8, 1.2, size=3), jitter=0.15)
    edema = (edema_d < 1) & brain
    core = (core_d < 1) & brain
    enhancing = core & (core_d > rng.uniform(0.6, 0.8))

    label = np.zeros(shape, dtype=np.uint8)
    label[edema] = 1
    label[core] = 2
    label[enhancing] = 3

    image = np.zeros((*shape, len(MODALITIES)), dtype=np.float32)
    masks = [
        (brain & ~white, "grey"),
        (white, "white"),
        (ventricles & brain, "csf"),
        (label == 1, "edema"),
        (label == 2, "necrosis"),
        (label == 3, "enhancing"),
    ]
    for mask, name in masks:  # later masks paint over earlier ones
        image[mask] = site.tissues[name]
    bias = np.exp(0.2 * _smooth_noise(rng, shape, cells=3))[..., None]  # smooth multiplicative field
    image = image * bias * rng.uniform(0.8, 1.2, size=len(MODALITIES))
    image += rng.normal(0, 0.03, size=image.shape).astype(np.float32)
    image = (image + site.offset) * site.scale
    image[~brain] = 0  # skull-stripped: zero background, as in BraTS
    image = np.clip(image * 1000, 0, np.iinfo(np.int16).max).astype(np.int16)
    if task == "anatomy":
        tissue = np.zeros(shape, dtype=np.uint8)
        tissue[white & brain] = 1
        tissue[ventricles & brain] = 2
        tissue[label > 0] = 0
        label = tissue
    return image, label, affine


def _choice(options: dict, value: str, what: str):
    if value not in options:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return options[value]


def _check_existing(out: Path, settings: dict) -> None:
    """A folder may be completed by the same settings, never mixed with other data."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DataSetError(f"{out} is a file; expected a folder for the synthetic data set")
    meta_path = out / "dataset.json"
    if not meta_path.exists():
        if any(out.iterdir()):
            raise DataSetError(f"{out} holds other files; write the synthetic data set into an empty or new folder")
        return
    try:
        made = json.loads(meta_path.read_text()).get("synthetic")
    except (OSError, json.JSONDecodeError, AttributeError):
        made = None
    if not isinstance(made, dict):
        raise DataSetError(
            f"{out} holds another data set (its dataset.json is not the generator's); use another folder"
        )
    made = {"domain": "brats", "task": "tumour", **made}  # sets written before the variants
    made = {k: made.get(k) for k in settings}
    if made != settings:
        shown = ", ".join(f"{k} {v}" for k, v in made.items())
        asked = ", ".join(f"{k} {v}" for k, v in settings.items())
        raise DataSetError(
            f"{out} holds synthetic cases of {shown}; asked for {asked}: use another folder, or the same settings "
            "to complete it"
        )


def make_dataset(
    out_dir: str | os.PathLike,
    n_cases: int = 8,
    shape: Sequence[int] = (96, 96, 96),
    seed: int = 0,
    *,
    domain: str = "brats",
    task: str = "tumour",
    progress: bool = False,
) -> Path:
    """Write a BraTS-like data set in MSD Task01 layout: ``dataset.json``, ``imagesTr/``, ``labelsTr/``.

    Images are 4-D NIfTI (X, Y, Z, 4 modalities), labels 3-D with the ``msd_task01`` values. Every file is
    written atomically; cases already present are kept, so an interrupted run can simply be repeated. The seed
    and shape are recorded in dataset.json, and a folder made with other settings (or holding other files) is
    refused.

    Args:
        out_dir: Folder to create or complete.
        n_cases: Number of cases (``BRATS_000`` ...).
        shape: Voxel grid of every case.
        seed: Seed; the same seed gives the same data set.
        domain: ``"brats"`` or ``"other_scanner"`` (another site's contrasts, scale, grid and field of view).
        task: ``"tumour"`` (``msd_task01`` labels) or ``"anatomy"`` (1 white matter, 2 ventricles).
        progress: A progress bar over cases.

    Returns:
        The data-set folder.

    Raises:
        DataSetError: If the folder holds other data, or synthetic cases of other settings.
    """
    if isinstance(n_cases, bool) or not isinstance(n_cases, int) or n_cases < 1:
        raise ValueError(f"n_cases must be a positive integer, got {n_cases!r}")
    shape = tuple(shape)
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 8 for s in shape):
        raise ValueError(f"shape must be three integers >= 8, got {shape!r}")
    _choice(DOMAINS, domain, "domain")
    _choice(TASKS, task, "task")
    settings = {"seed": seed, "shape": list(shape), "domain": domain, "task": task}
    out = Path(out_dir)
    _check_existing(out, settings)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in tqdm(range(n_cases), desc="synthetic cases", unit="case", disable=None if progress else True):
        name = f"BRATS_{i:03d}.nii.gz"
        image_path, label_path = out / "imagesTr" / name, out / "labelsTr" / name
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        if image_path.exists() and label_path.exists():
            continue
        image, label, affine = make_case(shape, seed=seed * 100_003 + i, domain=domain, task=task)
        for path, data in ((label_path, label), (image_path, image)):
            img = nib.Nifti1Image(data, affine)
            atomic_write(path, lambda tmp, img=img: nib.save(img, tmp))
    dataset = {
        "name": "SyntheticBraTS",
        "description": f"Synthetic BraTS-like data from medseg_zoo.data.synthetic (seed {seed})",
        "synthetic": settings,
        "tensorImageSize": "4D",
        "modality": {str(i): m for i, m in enumerate(MODALITIES)},
        "labels": TASKS[task],
        "numTraining": n_cases,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    atomic_write(out / "dataset.json", lambda tmp: Path(tmp).write_text(json.dumps(dataset, indent=2)))
    return out


def make_ct_dataset(
    out_dir: str | os.PathLike, n_cases: int = 8, shape: Sequence[int] = (96, 96, 24), seed: int = 0
) -> Path:
    """Write an abdominal CT-like data set in nnU-Net v2's raw layout (``imagesTr/CASE_0000.nii.gz``,
    ``labelsTr/CASE.nii.gz``, ``dataset.json`` with the channel ``CT``): a body of soft tissue (about 40 HU) in
    air (-1000 HU) holding one organ (about 120 HU, label 1), at 0.8 x 0.8 mm in plane and slices of 3 to 5 mm,
    the grid ``shape`` with as many more slices as the thinner ones need. Anisotropic in spacing and voxels, as
    nnU-Net's planner treats such data sets.

    Raises:
        DataSetError: If the folder holds other files.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DataSetError(f"{out} holds other files; write the synthetic CT data set into an empty or new folder")
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        thickness = float(rng.choice([3.0, 4.0, 4.5, 5.0]))
        grid = (shape[0], shape[1], round(shape[2] * 5.0 / thickness))
        axes = np.meshgrid(*(np.linspace(-1, 1, s, dtype=np.float32) for s in grid), indexing="ij")

        def inside(centre: np.ndarray, radii: np.ndarray, axes: list = axes) -> np.ndarray:
            return sum(((a - c) / r) ** 2 for a, c, r in zip(axes, centre, radii, strict=True)) < 1

        body = inside(rng.uniform(-0.05, 0.05, 3), rng.uniform(0.75, 0.9, 3))
        organ = inside(rng.uniform(-0.2, 0.2, 3), rng.uniform(0.2, 0.35, 3)) & body
        image = np.where(body, 40.0, -1000.0) + rng.normal(0, 12, grid)
        image[organ] = 120 + rng.normal(0, 15, int(organ.sum()))
        affine = np.diag([0.8, 0.8, thickness, 1.0])
        name = f"CT_{i:03d}"
        for path, data in (
            (out / "labelsTr" / f"{name}.nii.gz", organ.astype(np.uint8)),
            (out / "imagesTr" / f"{name}_0000.nii.gz", image.astype(np.int16)),
        ):
            img = nib.Nifti1Image(data, affine)
            atomic_write(path, lambda tmp, img=img: nib.save(img, tmp))
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "numTraining": n_cases,
            "file_ending": ".nii.gz", "synthetic": {"seed": seed, "shape": list(shape), "kind": "ct"}}  # fmt: skip
    atomic_write(out / "dataset.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return out
