"""A data set's fingerprint: what nnU-Net reads before planning (spacings, shapes after cropping to the non-zero
region, the labelled foreground's intensities per channel), in one pass over the cases, cached in the zoo's cache.

The rules follow nnU-Net v2's ``DatasetFingerprintExtractor``: each case is cropped to the bounding box of the
voxels non-zero in any channel (holes filled); the foreground is the voxels labelled above 0; its intensities are
sampled per case (10^8 voxels over the data set, every voxel of a case whose foreground is smaller than its share)
and pooled per channel for the mean, standard deviation, median and the 0.5 / 99.5 percentiles.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy.ndimage import binary_fill_holes
from tqdm import tqdm

from medseg_zoo._atomic import atomic_write
from medseg_zoo.data.discovery import Case, DataSet

__all__ = ["CaseFingerprint", "ChannelStatistics", "Fingerprint", "fingerprint", "is_ct"]

FOREGROUND_SAMPLES = 10**8  # nnU-Net: num_foreground_voxels_for_intensitystats = 10e7, over all cases
_VERSION = 1


@dataclass(frozen=True)
class CaseFingerprint:
    """One case: ``spacing`` (mm) and ``shape`` per axis of the oriented volume, its ``orientation`` as stored,
    the ``shape_after_crop`` to the non-zero region and the fraction of voxels that keeps."""

    name: str
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    orientation: str
    shape_after_crop: tuple[int, int, int]
    relative_size_after_crop: float


@dataclass(frozen=True)
class ChannelStatistics:
    """The labelled foreground's intensities of one channel over the data set."""

    mean: float
    std: float
    median: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float
    samples: int


@dataclass(frozen=True)
class Fingerprint:
    """The fingerprint of a data set, in the axes of ``orientation`` (``None``: as each case is stored).

    Attributes:
        root: The data set folder.
        orientation: The axis codes the cases were read in (a contract's orientation).
        channels: The channel names, in order.
        cases: One `CaseFingerprint` per labelled case.
        intensities: One `ChannelStatistics` per channel.
    """

    root: str
    orientation: str | None
    channels: tuple[str, ...]
    cases: tuple[CaseFingerprint, ...]
    intensities: tuple[ChannelStatistics, ...] = field(default=())

    @property
    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases], dtype=np.float64)

    @property
    def shapes_after_crop(self) -> np.ndarray:
        return np.array([c.shape_after_crop for c in self.cases], dtype=np.float64)

    @property
    def median_relative_size_after_crop(self) -> float:
        """nnU-Net's ``median_relative_size_after_cropping``."""
        return float(np.median([c.relative_size_after_crop for c in self.cases]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        cases = tuple(CaseFingerprint(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
                      for c in data["cases"])  # fmt: skip
        return cls(
            data["root"],
            data["orientation"],
            tuple(data["channels"]),
            cases,
            tuple(ChannelStatistics(**s) for s in data["intensities"]),
        )

    def summary(self) -> list[str]:
        """A few lines for the console: spacing, shape, cropping, foreground intensities per channel."""
        spacing = np.median(self.spacings, 0)
        lo, hi = self.spacings.min(0), self.spacings.max(0)
        lines = [
            f"fingerprint of {len(self.cases)} cases ({self.orientation or 'stored'} axes): median spacing "
            + " x ".join(f"{s:.3g}" for s in spacing)
            + " mm (from "
            + " x ".join(f"{s:.3g}" for s in lo)
            + " to "
            + " x ".join(f"{s:.3g}" for s in hi)
            + "), median shape after cropping "
            + " x ".join(str(int(s)) for s in np.median(self.shapes_after_crop, 0))
            + f", cropping keeps {self.median_relative_size_after_crop:.0%} of the voxels (median)",
        ]
        for name, s in zip(self.channels, self.intensities, strict=True):
            lines.append(
                f"  {name}{' (CT)' if is_ct(name) else ''}: foreground mean {s.mean:.4g}, std {s.std:.4g}, "
                f"median {s.median:.4g}, 0.5-99.5 % {s.percentile_00_5:.4g} to {s.percentile_99_5:.4g}"
            )
        return lines


def is_ct(channel: str) -> bool:
    """Whether a channel name says CT (nnU-Net: the name ``"CT"``, any case)."""
    return channel.casefold() == "ct"


def _oriented(img: nib.Nifti1Image, orientation: str | None) -> nib.Nifti1Image:
    if orientation is None:
        return img
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(tuple(orientation))
    )
    return img.as_reoriented(ornt)


def _read(case: Case, orientation: str | None) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image, str]:
    """The case's channels (C, X, Y, Z) and label in ``orientation``, the oriented label image, the stored codes."""
    images = [nib.load(p) for p in case.images]
    stored = "".join(nib.aff2axcodes(images[0].affine))
    arrays = []
    for img in images:
        data = np.asanyarray(_oriented(img, orientation).dataobj, dtype=np.float32)
        arrays += [data] if data.ndim == 3 else list(np.moveaxis(data, -1, 0))
    label = _oriented(nib.load(case.label), orientation)
    return np.stack(arrays), np.asarray(label.dataobj), label, stored


def _analyse(case: Case, orientation: str | None, samples: int, seed: int) -> tuple[CaseFingerprint, list]:
    image, label, label_img, stored = _read(case, orientation)
    nonzero = binary_fill_holes((image != 0).any(0))
    if nonzero.any():
        box = tuple(slice(a.min(), a.max() + 1) for a in np.nonzero(nonzero))
    else:
        box = tuple(slice(0, s) for s in nonzero.shape)
    cropped, cropped_label = image[(slice(None), *box)], label[box]
    foreground = cropped_label > 0
    rng = np.random.default_rng(seed)
    chosen = None
    count = int(foreground.sum())
    if count > samples:
        chosen = rng.choice(count, samples, replace=False)
    values = [c[foreground] if chosen is None else c[foreground][chosen] for c in cropped]
    spacing = tuple(float(s) for s in label_img.header.get_zooms()[:3])
    shape = tuple(int(s) for s in label.shape)
    after = tuple(int(s) for s in cropped_label.shape)
    relative = float(np.prod(after) / np.prod(shape))
    return CaseFingerprint(case.name, spacing, shape, stored, after, relative), values


def _cache_path(dataset: DataSet, orientation: str | None, cache_dir: str | os.PathLike | None) -> Path:
    from medseg_zoo._download import cache_root

    digest = hashlib.sha256(f"{_VERSION}|{orientation}|{dataset.root.resolve()}".encode())
    for case in dataset.cases:
        for path in (*case.images, case.label):
            if path is not None:
                stat = path.stat()
                digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return cache_root(cache_dir) / "fingerprints" / f"{digest.hexdigest()[:24]}.json"


def fingerprint(
    dataset: DataSet,
    *,
    orientation: str | None = "RAS",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Fingerprint:
    """The fingerprint of a data set's labelled cases, read once and cached in the zoo's cache (keyed by every
    file's size and modification time, so an edited case is read again).

    Args:
        dataset: From `medseg_zoo.data.discover`.
        orientation: Axis codes to read the cases in (the model's contract's; ``None``: as stored).
        cache_dir: Cache root (default: the Hugging Face cache's ``medseg_zoo`` folder).
        progress: A progress bar over the cases.
    """
    cases = [c for c in dataset.cases if c.label is not None]
    if not cases:
        raise ValueError(f"{dataset.root}: no labelled cases to fingerprint")
    path = _cache_path(dataset, orientation, cache_dir)
    if path.is_file():
        try:
            return Fingerprint.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable cache is read again from the data
    per_case = max(1, FOREGROUND_SAMPLES // len(cases))
    found, pooled = [], [[] for _ in dataset.channels]
    for i, case in enumerate(tqdm(cases, desc="fingerprint", unit="case", disable=None if progress else True)):
        case_print, values = _analyse(case, orientation, per_case, seed=1234 + i)
        found.append(case_print)
        for channel, v in zip(pooled, values, strict=True):
            channel.append(v)
    intensities = []
    for values in pooled:
        v = np.concatenate(values).astype(np.float64)
        if v.size == 0:
            raise ValueError(f"{dataset.root}: no case has labelled voxels; the foreground statistics need some")
        low, median, high = np.percentile(v, (0.5, 50.0, 99.5))
        stats = (v.mean(), v.std(), median, v.min(), v.max(), low, high)
        intensities.append(ChannelStatistics(*map(float, stats), samples=int(v.size)))
    result = Fingerprint(str(dataset.root), orientation, tuple(dataset.channels), tuple(found), tuple(intensities))
    text = json.dumps(result.to_dict(), indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return result
