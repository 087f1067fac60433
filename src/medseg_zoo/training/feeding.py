"""What feeds a run: the split of the cases, seeded random crops, the sampler shared out among processes, the
training loader and the validation volumes."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import list_data_collate
from monai.transforms import Compose
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from medseg_zoo._contract import TaskContract
from medseg_zoo.data.discovery import Case, DataSet, discover
from medseg_zoo.data.splits import k_folds, train_val_split
from medseg_zoo.errors import TrainingError
from medseg_zoo.training.recipes import TrainConfig
from medseg_zoo.transforms.labels import LabelScheme
from medseg_zoo.transforms.presets import (
    cached_dataset,
    preprocessing_key,
    preprocessing_transforms,
    training_transforms,
)

__all__ = [
    "EpochSampler",
    "check_batch",
    "check_val_data",
    "data_set",
    "plain",
    "roi_warning",
    "split_cases",
    "train_loader",
    "validation_data",
]


def plain(x: torch.Tensor) -> torch.Tensor:
    """MONAI MetaTensors as plain tensors: the network needs no metadata, and metadata costs per operation."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def data_set(data: str | os.PathLike | DataSet, label_scheme: str | LabelScheme | None) -> DataSet:
    """The data set to train on: a `DataSet`, or a folder discovered with ``label_scheme``.

    Raises:
        TrainingError: A scheme given beside a DataSet (it has its own), or neither a folder nor a DataSet.
    """
    if isinstance(data, DataSet):
        if label_scheme is not None:
            raise TrainingError(
                f"label_scheme={label_scheme!r} applies to a data set folder; a DataSet already has its scheme "
                f"({data.scheme.name}): use discover(root, label_scheme=...)"
            )
        return data
    if isinstance(data, str | os.PathLike):
        return discover(data, label_scheme=label_scheme)
    raise TrainingError(
        f"data must be a data set folder (MSD, nnU-Net v2, image/label pairs) or a DataSet, got "
        f"{type(data).__name__} {data!r}"
    )


def check_batch(config: TrainConfig, world: int, cases: int) -> None:
    """Refuse a batch larger than the training cases (every process takes ``batch_size`` of them per step).

    Raises:
        TrainingError: With the largest batch size that fits.
    """
    if config.batch_size * world > cases:
        raise TrainingError(
            f"batch size {config.batch_size}{f' x {world} processes' if world > 1 else ''} is larger "
            f"than the {cases} training cases: use --batch-size {max(1, cases // world)} or fewer"
        )


def check_val_data(dataset: DataSet, val_dataset: DataSet | None) -> None:
    """A separate validation set must be another folder with the training set's channels and labels.

    Raises:
        TrainingError: Naming both folders and what differs.
    """
    if val_dataset is None:
        return
    if val_dataset.root.resolve() == dataset.root.resolve():
        raise TrainingError(
            f"val_data {val_dataset.root} is the training set itself: its cases would validate what they train; "
            "give another folder, or leave val_data out to hold out val_fraction of the cases"
        )
    for what, ours, theirs in (
        ("channels", dataset.channels, val_dataset.channels),
        ("labels", dataset.scheme.labels, val_dataset.scheme.labels),
    ):
        if ours != theirs:
            raise TrainingError(
                f"val_data {val_dataset.root} has other {what} than {dataset.root}: {theirs} against {ours}"
            )


def split_cases(
    dataset: DataSet,
    config: TrainConfig,
    recorded: Mapping[str, Sequence[str]] | None = None,
    val_dataset: DataSet | None = None,
) -> tuple[list[Case], list[Case]]:
    """The training and validation cases: a resumed run's recorded split; with a separate validation set, every
    labelled case of each; else a fold or a seeded fraction of the labelled cases.

    Raises:
        TrainingError: A recorded case that is gone, or too few cases for two parts.
    """
    by_name = {c.name: c for c in dataset.cases}
    val_by_name = {c.name: c for c in val_dataset.cases} if val_dataset is not None else by_name
    if recorded is not None:
        missing = [
            f"{n} ({root})"
            for names, known, root in (
                (recorded["train"], by_name, dataset.root),
                (recorded["val"], val_by_name, (val_dataset or dataset).root),
            )
            for n in names
            if n not in known
        ]
        if missing:
            raise TrainingError(f"resume: cases of the run are no longer there: {', '.join(missing)}")
        return [by_name[n] for n in recorded["train"]], [val_by_name[n] for n in recorded["val"]]
    if val_dataset is not None:
        labelled = [[c for c in d.cases if c.label is not None] for d in (dataset, val_dataset)]
        for cases, d in zip(labelled, (dataset, val_dataset), strict=True):
            if not cases:
                raise TrainingError(f"{d.root}: no labelled cases to {'train' if d is dataset else 'validate'} on")
        return labelled[0], labelled[1]
    names = [c.name for c in dataset.cases if c.label is not None]
    try:
        if config.fold is not None:
            k, n = config.fold
            train, val = k_folds(names, n, seed=config.seed)[k]
        else:
            train, val = train_val_split(names, config.val_fraction, seed=config.seed)
    except ValueError as exc:
        raise TrainingError(
            f"{dataset.root}: {len(names)} labelled case(s) cannot give a training and a validation part "
            f"({exc}); add cases, or change --val-fraction / --fold"
        ) from None
    return [by_name[n] for n in sorted(train)], [by_name[n] for n in sorted(val)]


def roi_warning(cases: Sequence[Case], contract: TaskContract) -> str | None:
    """A warning when the roi is larger than every training volume on the model grid (read from the headers)."""
    largest = np.zeros(3)
    for case in cases:
        header = nib.load(case.images[0]).header
        affine, shape = header.get_best_affine(), header.get_data_shape()[:3]
        sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        grid = np.array(shape, dtype=float)
        if contract.orientation is not None:  # reoriented: voxel axis j lies along world axis argmax |A[:, j]|
            axes = np.abs(affine[:3, :3]).argmax(axis=0)
            grid, sizes = grid[np.argsort(axes)], sizes[np.argsort(axes)]
        if contract.spacing is not None:
            grid = grid * sizes / np.asarray(contract.spacing)
        if contract.axis_order == "zyx":
            grid = grid[::-1]
        largest = np.maximum(largest, grid)
    roi = np.asarray(contract.roi_size)
    if (roi > np.round(largest)).any():
        return (
            f"warning: the roi {'x'.join(map(str, roi))} is larger than every training volume on the model grid "
            f"(largest {'x'.join(f'{v:.0f}' for v in largest)}): crops are zero-padded to the roi; a "
            "smaller roi trains faster (create_model(..., roi_size=...), or train --roi-size)"
        )
    return None


class _Crops(torch.utils.data.Dataset):
    """Training items whose random transforms are seeded by (seed, epoch, index): the same crops whatever the
    number of workers or processes, and again after a resume."""

    def __init__(self, dataset: torch.utils.data.Dataset, transform: Compose, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        self.transform.set_random_state(
            seed=int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        )
        return self.dataset[index]


class EpochSampler(Sampler):
    """A DistributedSampler (one replica outside ``torchrun``) that yields ``(epoch, index)`` pairs."""

    def __init__(self, size: int, world: int, rank: int, seed: int) -> None:
        self.inner = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, i) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def _cache(config: TrainConfig, part: str) -> Path | None:
    return Path(config.cache_dir) / part if config.cache_dir else None


def train_loader(
    cases: Sequence[Case],
    contract: TaskContract,
    scheme: LabelScheme,
    config: TrainConfig,
    *,
    device: torch.device,
    world: int,
    rank: int,
) -> tuple[DataLoader, EpochSampler]:
    """The loader of seeded random roi crops of the training cases (preprocessed once, cached), and its sampler."""
    transform = training_transforms(contract, label_scheme=scheme, foreground_ratio=config.foreground_ratio)
    data = cached_dataset(
        [c.to_dict() for c in cases],
        transform,
        cache_dir=_cache(config, "train"),
        key=preprocessing_key(contract, scheme),
    )
    workers = config.num_workers
    if workers is None:
        workers = 0 if device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) // max(world, 1) - 1))
    sampler = EpochSampler(len(data), world, rank, config.seed)
    loader = DataLoader(
        _Crops(data, transform, config.seed),
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=list_data_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    return loader, sampler


def validation_data(
    cases: Sequence[Case], contract: TaskContract, scheme: LabelScheme, config: TrainConfig
) -> torch.utils.data.Dataset:
    """The validation cases, preprocessed whole (on the model grid) and cached."""
    return cached_dataset(
        [c.to_dict() for c in cases],
        Compose(preprocessing_transforms(contract, label_scheme=scheme)),
        cache_dir=_cache(config, "val"),
        key=preprocessing_key(contract, scheme),
    )
