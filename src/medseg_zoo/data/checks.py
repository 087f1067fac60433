"""Checks of a data set before training: every problem of every case in one report."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from torch import nn

from medseg_zoo._contract import TaskContract, channel_order, config_of, is_generic
from medseg_zoo.data.discovery import Case, DataSet
from medseg_zoo.transforms.labels import LabelScheme

__all__ = ["CheckReport", "DataCheckError", "Problem", "check_cases", "check_dataset"]

AFFINE_TOLERANCE_MM = 1e-3


class DataCheckError(ValueError):
    """A data set with errors; the message is the whole report."""


@dataclass(frozen=True)
class Problem:
    """One problem: the case, the file, what is wrong, and whether it stops training."""

    case: str
    file: Path | None
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.case}: {self.file}" if self.file else self.case
        return f"{self.severity}: {where}: {self.message}"


@dataclass
class CheckReport:
    """The result of `check_dataset`."""

    dataset: DataSet
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        """True when nothing stops training (warnings allowed)."""
        return not self.errors

    def __str__(self) -> str:
        ds = self.dataset
        head = (
            f"{ds.root} ({ds.layout} layout): {len(ds.cases)} cases, channels {', '.join(ds.channels)}, "
            f"label scheme {ds.scheme.name}"
        )
        if not self.problems:
            return f"{head}\nno problems found"
        bad = len({p.case for p in self.errors})
        lines = [
            head,
            f"{len(self.errors)} error(s) in {bad} case(s), {len(self.problems) - len(self.errors)} warning(s):",
        ]
        return "\n".join([*lines, *(f"  {p}" for p in self.problems)])

    def raise_for_errors(self) -> None:
        """Raise `DataCheckError` with the report if any problem is an error."""
        if not self.ok:
            raise DataCheckError(str(self))


def _load(path: Path, case: str, problems: list[Problem]) -> tuple[nib.spatialimages.SpatialImage, np.ndarray] | None:
    if not path.exists():
        problems.append(Problem(case, path, "file not found"))
        return None
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for truncated or corrupt files
        problems.append(Problem(case, path, f"cannot read the image ({type(exc).__name__}: {exc})"))
        return None
    return img, data


def _check_case(case: Case, names: Sequence[str], scheme: LabelScheme, problems: list[Problem]) -> None:
    n = len(names)
    loaded = [_load(p, case.name, problems) for p in case.images]
    if any(x is None for x in loaded):
        return
    first_img = loaded[0][0]
    if len(case.images) == 1:
        data = loaded[0][1]
        spatial = data.shape[:3]
        channels = data.shape[3] if data.ndim == 4 else 1
        if data.ndim not in (3, 4):
            problems.append(
                Problem(
                    case.name,
                    case.images[0],
                    f"image shape {data.shape} is {data.ndim}-D; expected a 3-D volume (X, Y, Z) or a 4-D one with "
                    f"{n} channel(s) (X, Y, Z, {n})",
                )
            )
            return
        if channels != n:
            problems.append(
                Problem(
                    case.name,
                    case.images[0],
                    f"image shape {data.shape} has {channels} channel(s), expected {n} ({', '.join(names)})",
                )
            )
    else:
        spatial = loaded[0][1].shape[:3]
        for path, (img, data) in zip(case.images, loaded, strict=True):
            if data.ndim != 3 or data.shape != spatial:
                problems.append(
                    Problem(
                        case.name,
                        path,
                        f"channel file shape {data.shape}, expected 3-D {spatial} like {case.images[0].name}",
                    )
                )
            elif not np.allclose(img.affine, first_img.affine, atol=AFFINE_TOLERANCE_MM):
                problems.append(Problem(case.name, path, f"affine differs from {case.images[0].name}"))
    for path, (_, data) in zip(case.images, loaded, strict=True):
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            problems.append(Problem(case.name, path, f"{int((~np.isfinite(data)).sum())} NaN/inf voxel(s)"))

    if case.label is None:
        problems.append(Problem(case.name, None, "no label file"))
        return
    loaded_label = _load(case.label, case.name, problems)
    if loaded_label is None:
        return
    label_img, label = loaded_label
    if label.ndim == 4 and label.shape[3] == 1:
        label = label[..., 0]
    if label.shape != spatial:
        problems.append(Problem(case.name, case.label, f"label shape {label.shape} differs from image shape {spatial}"))
    elif not np.allclose(label_img.affine, first_img.affine, atol=AFFINE_TOLERANCE_MM):
        diff = np.abs(label_img.affine - first_img.affine).max()
        problems.append(
            Problem(case.name, case.label, f"label affine differs from the image's (max difference {diff:.3g} mm)")
        )
    try:
        scheme.check(label, source="labels")
    except ValueError as exc:
        problems.append(Problem(case.name, case.label, str(exc).removeprefix("labels: ")))
    else:
        if not label.any():
            problems.append(Problem(case.name, case.label, "label map is empty (background only)", "warning"))


def _compare_channels(dataset: DataSet, names: tuple[str, ...]) -> Problem | None:
    """The data's channels against the model's: count, then names and order where both name them."""
    data = dataset.channels
    listed = f"{', '.join(data)}"
    if len(data) != len(names):
        return Problem(
            "(data set)",
            None,
            f"the data has {len(data)} channel(s) ({listed}), the model reads {len(names)} ({', '.join(names)}); "
            f"make a model for the data's channels: create_model(..., in_channels={list(data)}) (medseg-zoo "
            f"train --in-channels {','.join(data)}); a pretrained stem is adapted",
        )
    if is_generic(data) or is_generic(names) or [channel_order(data, names)] == [list(range(len(data)))]:
        return None
    if channel_order(data, names) is not None:
        return Problem(
            "(data set)",
            None,
            f"the data's channels are {listed}, the model reads {', '.join(names)}: the same channels in another "
            f"order. Reorder the model to the data: create_model(..., in_channels={list(data)}) (medseg-zoo train "
            f"--in-channels {','.join(data)}) permutes a pretrained stem",
        )
    return Problem(
        "(data set)",
        None,
        f"the data's channels are {listed}, the model reads {', '.join(names)}; if they hold other images, make a "
        f"model for them: create_model(..., in_channels={list(data)})",
        "warning",
    )


def _compare_labels(dataset: DataSet, contract: TaskContract) -> Problem | None:
    """The data's label scheme against the model's outputs and label scheme."""
    from medseg_zoo.transforms.presets import data_scheme

    data = dataset.scheme
    values = ", ".join(map(str, sorted(data.labels)))
    try:
        data_scheme(contract, data)
    except ValueError as exc:
        how = "sigmoid regions" if not data.exclusive else "softmax classes"
        return Problem(
            "(data set)",
            None,
            f"{exc}. Make a model for the data's labels: create_model(..., out_channels={len(data.channels)}, "
            f"label_scheme=...) with the data's scheme ({data.name}: {how} {', '.join(data.channels)}); its head "
            "is re-initialised",
        )
    model = contract.scheme
    if model is None or (model.labels == data.labels and model.regions == data.regions):
        return None
    return Problem(
        "(data set)",
        None,
        f"the model writes labels of scheme {model.name!r} (values {', '.join(map(str, sorted(model.labels)))}), the "
        f"data's are {data.name!r} ({values}). Training converts the data's labels to the outputs "
        f"{', '.join(contract.out_channels)} and the fine-tuned model writes the data's values; the model as it is "
        f"writes {model.name!r} values",
        "warning",
    )


def check_cases(cases: Sequence[Case], channels: Sequence[str], scheme: LabelScheme) -> list[Problem]:
    """The problems of each case (readable files, channel count, image/label grids and affines, finite voxels,
    label values against ``scheme``, empty labels), as `check_dataset` finds them."""
    problems: list[Problem] = []
    for case in cases:
        _check_case(case, channels, scheme, problems)
    return problems


def check_dataset(
    dataset: DataSet | str | os.PathLike,
    model: TaskContract | nn.Module | None = None,
    *,
    scheme: LabelScheme | None = None,
) -> CheckReport:
    """Check every case of a data set; nothing is raised, every problem goes into the report.

    Checks: files readable (not truncated), channel count, image/label shape and affine agreement (within
    1e-3 mm), NaN/inf voxels, label values against the scheme, empty label maps (a warning). With a model (or its
    contract): the data's channels against the model's (count; names and order where both name them) and the
    data's labels against the model's outputs and label scheme, each with the fix.

    Args:
        dataset: From `medseg_zoo.data.discover`, or a data set folder (discovered with its own metadata).
        model: A zoo model or a ``TaskContract`` the data is meant for.
        scheme: Label scheme to check the label values against; defaults to the data set's.

    Raises:
        TypeError: If ``dataset`` is neither a `DataSet` nor a path.
    """
    if isinstance(dataset, str | os.PathLike):
        from medseg_zoo.data.discovery import discover

        dataset = discover(dataset)
    if not isinstance(dataset, DataSet):
        raise TypeError(f"check_dataset expects a DataSet (from discover) or a folder, got {type(dataset).__name__}")
    report = CheckReport(dataset)
    if model is not None:
        contract = model if isinstance(model, TaskContract) else config_of(model).contract
        for problem in (_compare_channels(dataset, contract.in_channels), _compare_labels(dataset, contract)):
            if problem is not None:
                report.problems.append(problem)
    if not dataset.cases:
        report.problems.append(Problem("(data set)", None, "no cases found"))
    report.problems += [
        Problem("(data set)", path, "a label file no case uses (no image of that name?); it is left out", "warning")
        for path in dataset.unused_labels
    ]
    report.problems += check_cases(dataset.cases, dataset.channels, scheme or dataset.scheme)
    return report
