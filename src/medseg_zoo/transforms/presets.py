"""MONAI pipelines built from a model's task contract: training, validation and inference preprocessing.

Every pipeline starts with the same deterministic prefix (load, channel-first, reorient, resample, normalise,
labels to the model's outputs), so inference sees what training saw and MONAI's CacheDataset /
PersistentDataset can cache it; the random transforms come after.

Two deliberate departures from the seed tutorial's order: it resampled before reorienting, which puts the 2.0 mm
target spacing on whichever voxel axis came third (not the superior axis on non-RAS files); and it normalised
intensities after the random crop, so training statistics came from crops while inference normalised whole
volumes. Here the volume is reoriented, then resampled, then normalised as a whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.data import CacheDataset, Dataset, MetaTensor, PersistentDataset
from monai.data.utils import pickle_hashing
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    ScaleIntensityd,
    ScaleIntensityRanged,
    SpatialPadd,
)
from torch import nn

from medseg_zoo._contract import TaskContract, config_of
from medseg_zoo.transforms.labels import LabelScheme, LabelsToRegionsd, LabelValueError, get_scheme
from medseg_zoo.transforms.resample import SeparableSpacingd

__all__ = [
    "cached_dataset",
    "data_scheme",
    "inference_transforms",
    "preprocessing_key",
    "preprocessing_transforms",
    "training_transforms",
    "validation_transforms",
]

IMAGE, LABEL = "image", "label"


class _Pipeline(Compose):
    """MONAI's ``Compose`` that lets the zoo's own data errors through as they are: MONAI wraps every error of
    a transform in a ``RuntimeError`` naming the transform, which hid the message naming the file and its label
    values under a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except RuntimeError as exc:
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, LabelValueError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from None


def _contract(source: TaskContract | nn.Module) -> TaskContract:
    if isinstance(source, TaskContract):
        return source
    return config_of(source, "a TaskContract or a model").contract


def _normalize(contract: TaskContract) -> list[MapTransform]:
    """The contract's intensity normalisation (its value was checked when the contract was made)."""
    if contract.normalization == "zscore_nonzero_channelwise":
        return [NormalizeIntensityd(IMAGE, nonzero=True, channel_wise=True)]
    if contract.normalization == "zscore_channelwise":
        return [NormalizeIntensityd(IMAGE, nonzero=False, channel_wise=True)]
    if contract.normalization == "none":
        return []
    kind, low, high, *statistics = contract.normalization.split(":")
    if kind == "clip_zscore":  # clip to [low, high], then (x - mean) / std: [low, high] maps linearly
        mean, std = map(float, statistics)
        bounds = {"a_min": float(low), "a_max": float(high)}
        return [ScaleIntensityRanged(IMAGE, **bounds, b_min=(bounds["a_min"] - mean) / std,
                                     b_max=(bounds["a_max"] - mean) / std, clip=True)]  # fmt: skip
    if kind == "clip_scale":  # CT windows: clip to [low, high], scale to [0, 1]
        return [ScaleIntensityRanged(IMAGE, a_min=float(low), a_max=float(high), b_min=0.0, b_max=1.0, clip=True)]
    # z-score over non-zero voxels, then the volume's min-max range to [low, high] (MONAI wholeBody_ct)
    return [NormalizeIntensityd(IMAGE, nonzero=True), ScaleIntensityd(IMAGE, minv=float(low), maxv=float(high))]


def _load_images(keys: list[str]) -> LoadImaged:
    """``LoadImaged`` without the note MONAI's GPU DICOM reader logs and warns each time it is set up where pydicom is
    installed without nvImageCodec (MONAI sets up every reader it has, whichever is asked for); data sets are NIfTI."""
    plugin = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = plugin.level
    plugin.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
            return LoadImaged(keys, image_only=True)
    finally:
        plugin.setLevel(level)


def preprocessing_transforms(
    source: TaskContract | nn.Module,
    *,
    label_scheme: str | LabelScheme | None = None,
    with_label: bool = True,
    load: bool = True,
) -> list[MapTransform]:
    """The deterministic prefix: load, channel-first, reorient, resample, normalise, labels -> outputs, and the
    spatial axes in the contract's ``axis_order``.

    Args:
        source: The model (its ``pretrained_cfg.contract``) or a contract.
        label_scheme: The scheme of the data's label maps; defaults to the contract's. For region outputs the
            label map becomes the contract's regions (e.g. TC, WT, ET from BraTS 2021 or MSD Task01 labels).
        with_label: Include the ``"label"`` key.
        load: Start by loading files; without, the items are channel-first ``MetaTensor``s with their affine.
    """
    contract = _contract(source)
    keys = [IMAGE, LABEL] if with_label else [IMAGE]
    steps: list[MapTransform] = [_load_images(keys), EnsureChannelFirstd(keys)] if load else []
    if contract.orientation is not None:
        ras = (("L", "R"), ("P", "A"), ("I", "S"))
        # Lazy when a resampling follows: SeparableSpacingd folds the flips into its own pass.
        steps.append(Orientationd(keys, axcodes=contract.orientation, labels=ras, lazy=contract.spacing is not None))
    if contract.spacing is not None:
        steps.append(SeparableSpacingd(keys, pixdim=contract.spacing, mode=["bilinear", "nearest"][: len(keys)]))
    steps += _normalize(contract)
    if with_label:
        steps.append(LabelsToRegionsd(LABEL, data_scheme(contract, label_scheme)))
    if contract.axis_order == "zyx":
        steps.append(_ReverseSpatialAxesd(keys))
    return steps


class _ReverseSpatialAxesd(MapTransform):
    """The spatial axes in reverse order (SimpleITK's arrays, which nnU-Net and nnssl train on), the affine's
    columns with them: the same voxels at the same places, read by the network in the order it was trained on."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            reversed_axes = value.permute(0, 3, 2, 1).contiguous()
            if isinstance(value, MetaTensor):
                meta = {**value.meta, "affine": value.affine[:, [2, 1, 0, 3]]}
                reversed_axes = MetaTensor(reversed_axes.as_tensor(), meta=meta)
            d[key] = reversed_axes
        return d


def data_scheme(source: TaskContract | nn.Module, label_scheme: str | LabelScheme | None = None) -> LabelScheme:
    """The scheme of the data's label maps (``label_scheme``, else the contract's), checked to give the model's
    outputs: the same regions for sigmoid outputs, one class per output for softmax outputs.

    Raises:
        ValueError: If neither names a scheme, or the scheme's labels do not give the model's outputs.
    """
    contract = _contract(source)
    name = label_scheme if label_scheme is not None else contract.label_scheme
    if name is None:
        raise ValueError("the contract names no label scheme: pass label_scheme for the data's label maps")
    scheme = get_scheme(name)
    try:
        dataclasses.replace(contract, label_scheme=scheme)  # the contract's own consistency rule
    except ValueError as exc:
        raise ValueError(f"the data's labels do not give the model's outputs: {exc}") from None
    return scheme


def training_transforms(
    source: TaskContract | nn.Module,
    *,
    label_scheme: str | LabelScheme | None = None,
    foreground_ratio: float = 0.0,
) -> Compose:
    """The seed tutorial's training pipeline: the deterministic prefix, pad to the roi, a random roi crop, a flip
    along the first axis (p=0.5), random intensity scale and shift by up to 0.1 (each p=0.5).

    Args:
        source: The model or its contract.
        label_scheme: The scheme of the data's label maps; defaults to the contract's.
        foreground_ratio: Fraction of crops centred on a labelled voxel (nnU-Net oversamples a third); 0 gives
            the tutorial's uniform crops.
    """
    contract = _contract(source)
    keys = [IMAGE, LABEL]
    if not 0 <= foreground_ratio <= 1:
        raise ValueError(f"foreground_ratio must be in [0, 1], got {foreground_ratio}")
    crop = (
        RandCropByPosNegLabeld(
            keys, LABEL, contract.roi_size, pos=foreground_ratio, neg=1 - foreground_ratio, num_samples=1
        )
        if foreground_ratio
        else RandSpatialCropd(keys, roi_size=contract.roi_size, random_size=False)
    )
    return _Pipeline(
        [
            *preprocessing_transforms(contract, label_scheme=label_scheme),
            SpatialPadd(keys, spatial_size=contract.roi_size),
            crop,
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandScaleIntensityd(IMAGE, factors=0.1, prob=0.5),
            RandShiftIntensityd(IMAGE, offsets=0.1, prob=0.5),
        ]
    )


def validation_transforms(
    source: TaskContract | nn.Module, *, label_scheme: str | LabelScheme | None = None
) -> Compose:
    """The seed's validation pipeline: prefix, pad to the roi, centre roi crop."""
    contract = _contract(source)
    keys = [IMAGE, LABEL]
    return _Pipeline(
        [
            *preprocessing_transforms(contract, label_scheme=label_scheme),
            SpatialPadd(keys, spatial_size=contract.roi_size),
            CenterSpatialCropd(keys, roi_size=contract.roi_size),
        ]
    )


def inference_transforms(source: TaskContract | nn.Module) -> Compose:
    """The prefix for images alone; every step is invertible, so predictions can be mapped back to the input
    grid with ``monai.transforms.Invertd`` or ``Compose.inverse``."""
    return _Pipeline(preprocessing_transforms(source, with_label=False))


def preprocessing_key(source: TaskContract | nn.Module, label_scheme: str | LabelScheme | None = None) -> str:
    """A short hash of everything the deterministic prefix depends on, to key a preprocessing cache."""
    contract = _contract(source)
    name = label_scheme if label_scheme is not None else contract.label_scheme
    scheme = get_scheme(name) if name is not None else None
    config = {
        "orientation": contract.orientation,
        "spacing": contract.spacing,
        "normalization": contract.normalization,
        "scheme": dataclasses.asdict(scheme) if scheme else None,
        "axis_order": contract.axis_order,
        "format": 3,  # bump when the prefix itself changes
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_identity(item: dict) -> bytes:
    """A cache key for a data item: every file it names with its size and modification time."""

    def stamp(path: str) -> list:
        info = os.stat(path)
        return [path, info.st_size, info.st_mtime_ns]

    stamped = {k: [stamp(p) for p in v] if isinstance(v, list) else stamp(v) for k, v in sorted(item.items())}
    return pickle_hashing(stamped)


def cached_dataset(
    data: Sequence[dict],
    transform: Compose,
    *,
    cache_dir: str | os.PathLike | None = None,
    key: str | None = None,
    in_memory: bool = True,
) -> Dataset:
    """A MONAI dataset that caches the deterministic prefix of ``transform``.

    With ``cache_dir`` the prefix is stored on disk under ``cache_dir/key`` (MONAI PersistentDataset; use
    `preprocessing_key` so a changed contract never reads stale files), each entry keyed by its files' paths,
    sizes and modification times, so a corrected file is preprocessed again; else in memory (CacheDataset) when
    ``in_memory``, or not at all.
    """
    if cache_dir is not None:
        if key is None:
            raise ValueError("cache_dir needs key=preprocessing_key(model) so changed preprocessing is not mixed up")
        return PersistentDataset(list(data), transform, cache_dir=Path(cache_dir) / key, hash_func=_file_identity)
    if in_memory:
        return CacheDataset(list(data), transform, cache_rate=1.0, progress=False)
    return Dataset(list(data), transform)
