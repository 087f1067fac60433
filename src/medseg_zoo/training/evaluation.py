"""Evaluating a model on labelled cases: each case predicted on its own grid, Dice and HD95 per output."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from torch import nn
from tqdm import tqdm

from medseg_zoo._atomic import atomic_write
from medseg_zoo._contract import channel_order, config_of
from medseg_zoo.data.checks import DataCheckError, check_cases
from medseg_zoo.data.discovery import Case
from medseg_zoo.errors import OutputError
from medseg_zoo.inference.io import check_output, load_volume, save_nifti
from medseg_zoo.inference.predictor import Predictor
from medseg_zoo.metrics import BRATS_POLICY, EMPTY_POLICY, brats_evaluator, brats_metrics, dice, hd95
from medseg_zoo.transforms.labels import LabelScheme, get_scheme, labels_to_regions, regions_to_labels
from medseg_zoo.transforms.presets import data_scheme

__all__ = ["Evaluation", "check_table_output", "evaluate", "foreground", "model_grid_dice"]


def foreground(channels: Sequence[str], scheme: LabelScheme) -> list[str]:
    """The outputs a mean Dice averages: every region, or every class but the background (label 0)."""
    return list(channels) if not scheme.exclusive else list(channels[1:])


def model_grid_dice(
    predictor: Predictor, data: Sequence[dict], scheme: LabelScheme, *, rank: int = 0, world: int = 1
) -> dict[str, float]:
    """Mean Dice per scored output (and their mean) of preprocessed cases ``{"image", "label"}`` on the model grid,
    as validation during training measures it; under ``torchrun`` each process predicts its share."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    contract = predictor.contract
    channels = list(contract.out_channels)
    scored = foreground(channels, scheme)
    index = [channels.index(c) for c in scored]
    mine = []
    for i in range(rank, len(data), world):
        item = data[i]
        image = item["image"].as_tensor() if hasattr(item["image"], "as_tensor") else item["image"]
        label = item["label"].as_tensor() if hasattr(item["label"], "as_tensor") else item["label"]
        probs = predictor.probabilities(image[None])
        if contract.activation == "sigmoid":
            masks = probs > 0.5
        else:
            masks = F.one_hot(probs.argmax(0), len(channels)).movedim(-1, 0)
        mine.append(dice(masks[index], torch.as_tensor(label).to(masks.device)[index]).tolist())
    scores = mine
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, mine)
        scores = [s for part in gathered for s in part]
    means = np.mean(np.asarray(scores, dtype=np.float64), axis=0)
    row = {f"dice_{c}": float(v) for c, v in zip(scored, means, strict=True)}
    row["mean_dice"] = float(means.mean())
    return row


METRICS = ("default", "brats")
_LABELS = {"dice": "Dice", "hd95": "HD95", "lesion_dice": "lesion Dice", "lesion_hd95": "lesion HD95"}


@dataclass
class Evaluation:
    """Per-case scores for each output, measured on each case's own grid.

    Attributes:
        channels: The outputs scored (regions, or classes without the background).
        cases: One row per case: ``{"case": name, "<metric>_<output>": ..., "mean_<metric>": ...}``; the default
            metrics are ``dice`` and ``hd95`` (mm); ``metrics="brats"`` gives ``lesion_dice``, ``lesion_nsd``,
            ``lesion_hd95``, ``dice``, ``nsd``, ``hd95`` and lesion counts ``tp``, ``fp``, ``fn``.
        metrics: ``"default"`` or ``"brats"``.
        spacing: Each case's voxel size in mm (distances are measured on it).
        policy: How empty masks and infinite distances are scored.
    """

    channels: list[str]
    cases: list[dict[str, float | str]]
    metrics: str = "default"
    spacing: dict[str, tuple[float, ...]] = field(default_factory=dict)
    policy: str = EMPTY_POLICY

    @property
    def mean(self) -> dict[str, float]:
        """The mean over cases of every column (``mean_dice`` and ``mean_hd95`` among them); NaN scores (a
        region empty in prediction and ground truth, under ``"brats"``) are left out."""
        keys = [k for k in self.cases[0] if k != "case"]
        out = {}
        for key in keys:
            values = np.array([row[key] for row in self.cases], dtype=float)
            out[key] = float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")
        return out

    def rows(self) -> list[dict[str, float | str]]:
        """The case rows followed by a ``mean`` row, every row with every column."""
        return [*self.cases, {"case": "mean", **self.mean}]

    def to_csv(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write `rows` as CSV and, beside it (``scores.csv`` -> ``scores.json``), what the numbers mean: the
        metrics, units, empty-mask policy, label outputs and each case's voxel size; both atomically.

        Args:
            path: The ``.csv`` file.
            overwrite: Replace a table written before by `to_csv` and unchanged since (its sidecar says so); any
                other existing file is refused.

        Raises:
            OutputError: If the table or its sidecar exists and may not be replaced (see `check_table_output`).
        """
        target = check_table_output(path, overwrite=overwrite)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.rows()[-1]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        about = {
            "format": _TABLE_FORMAT,
            "table_sha256": hashlib.sha256(buffer.getvalue().encode()).hexdigest(),
            "metrics": self.metrics,
            "outputs": self.channels,
            "distances": "mm, on each case's own grid",
            "empty_mask_policy": self.policy,
            "mean_row": "the mean over cases of each column; NaN scores left out",
            "spacing_mm": {case: list(s) for case, s in self.spacing.items()},
        }
        atomic_write(sidecar_path(target), lambda tmp: Path(tmp).write_text(json.dumps(about, indent=2)))
        return atomic_write(target, lambda tmp: Path(tmp).write_text(buffer.getvalue()))

    def __str__(self) -> str:
        shown = ("dice", "hd95") if self.metrics == "default" else ("lesion_dice", "lesion_hd95", "dice", "hd95")
        header = ["case", *(f"{_LABELS[m]} {c}" for m in shown for c in self.channels)]
        rows = [header]
        for row in self.rows():
            cells = [
                f"{row[f'{m}_{c}']:.4f}" if "dice" in m else f"{row[f'{m}_{c}']:.2f}"
                for m in shown
                for c in self.channels
            ]
            rows.append([str(row["case"]), *cells])
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows
        ]
        return "\n".join([*lines, f"(HD95 in mm; empty masks: {self.policy})"])


def sidecar_path(csv_path: str | os.PathLike) -> Path:
    """Where `Evaluation.to_csv` says what its numbers mean: ``scores.csv`` -> ``scores.json``."""
    return Path(csv_path).with_suffix(".json")


_TABLE_FORMAT = "medseg-zoo evaluation table"


def _written_by_to_csv(path: Path) -> bool:
    """Whether ``path`` and its sidecar are a pair `Evaluation.to_csv` wrote, the table unchanged since."""
    try:
        about = json.loads(sidecar_path(path).read_text())
        return about.get("format") == _TABLE_FORMAT and about.get("table_sha256") == (
            hashlib.sha256(path.read_bytes()).hexdigest()
        )
    except (OSError, ValueError, AttributeError):
        return False


def check_table_output(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse a results table whose ``.csv`` or ``.json`` sidecar exists, unless ``overwrite`` and the pair is
    one `Evaluation.to_csv` wrote and nobody changed: a user's own file of that name is never replaced.

    Raises:
        OutputError: Naming the existing file and what to do.
    """
    target = Path(path)
    existing = [p for p in (target, sidecar_path(target)) if p.exists()]
    if not existing:
        return target
    names = " and ".join(str(p) for p in existing)
    if not overwrite:
        raise OutputError(f"{names} exists; pass --overwrite (overwrite=True) to replace an earlier evaluation table")
    if not (target.is_file() and _written_by_to_csv(target)):
        raise OutputError(
            f"{names} exists and is not an evaluation table written by medseg-zoo (or was changed since): "
            "refusing to replace it; choose another --output"
        )
    return target


def _inputs(case: Case, channels: Sequence[str]) -> str | dict[str, str]:
    if len(case.images) == 1:
        return str(case.images[0])
    return {name: str(path) for name, path in zip(channels, case.images, strict=True)}


def _grid(img: nib.Nifti1Image) -> tuple[tuple[int, ...], np.ndarray]:
    return tuple(img.shape[:3]), np.asarray(img.affine)


def _prediction_files(folder: Path, cases: Sequence[Case], scheme: LabelScheme) -> list[Path]:
    """Each case's prediction file in ``folder``, checked against its label file before anything is scored: present,
    readable, on the label's grid (shape and affine within 1e-3 mm), values in ``scheme``."""
    from medseg_zoo.inference.io import AFFINE_TOLERANCE_MM
    from medseg_zoo.transforms.labels import LabelValueError

    if not folder.is_dir():
        raise DataCheckError(f"{folder}: no such folder of predictions")
    files, problems = [], []
    for case in cases:
        path = next(
            (folder / f"{case.name}{s}" for s in (".nii.gz", ".nii") if (folder / f"{case.name}{s}").is_file()), None
        )
        if path is None:
            problems.append(f"{case.name}: no prediction {folder / case.name}.nii.gz")
            continue
        files.append(path)
        try:
            pred, label = nib.load(path), nib.load(case.label)
            (shape, affine), (label_shape, label_affine) = _grid(pred), _grid(label)
            if shape != label_shape or not np.allclose(affine, label_affine, atol=AFFINE_TOLERANCE_MM):
                problems.append(
                    f"{path}: grid {shape} with affine {np.round(affine, 3).tolist()} differs from its label "
                    f"{case.label} {label_shape}, {np.round(label_affine, 3).tolist()}; predictions are scored on the "
                    "label's grid"
                )
                continue
            scheme.check(np.asarray(pred.dataobj), str(path))
        except LabelValueError as exc:
            problems.append(str(exc))
        except Exception as exc:  # nibabel raises many types for unreadable files
            problems.append(f"{path}: cannot read it ({type(exc).__name__}: {exc})")
    if problems:
        raise DataCheckError("cannot score these predictions:\n" + "\n".join(f"  {p}" for p in problems))
    return files


def evaluate(
    model: nn.Module | str | os.PathLike,
    cases: Sequence[Case],
    scheme: LabelScheme | str,
    *,
    metrics: str = "default",
    device: str = "auto",
    amp: bool | str | None = None,
    overlap: float = 0.5,
    progress: bool = False,
    predictions: str | os.PathLike | None = None,
    channels: Sequence[str] | None = None,
) -> Evaluation:
    """Score label maps against the cases' label files, each case on its own grid: a model's predictions (made as
    ``predict`` makes them), or the label maps in a folder written by any tool.

    With a model whose contract has a label scheme, the label map is predicted (and written to ``predictions`` when
    given, as ``<case>.nii.gz`` with the input's grid and header) and that label map is scored, so the numbers are
    those of the files a user gets; without one, the output channels are scored. A folder's files are
    ``<case>.nii.gz`` label maps in ``scheme``, on their label's grid.

    Args:
        model: A zoo model, or a folder of prediction files (``<case>.nii.gz``) to score without a model.
        cases: Labelled cases, e.g. ``discover(root).cases``.
        scheme: The label scheme of the cases' label maps (and of a folder's predictions), or a built-in scheme's
            name; it must give the model's outputs.
        metrics: ``"default"``: Dice and HD95 (MONAI's, `medseg_zoo.metrics.EMPTY_POLICY`); ``"brats"``: the BraTS
            challenges' lesion-wise and global Dice, NSD and HD95 through panoptica
            (`medseg_zoo.metrics.brats_metrics`; the ``[brats]`` extra), for schemes with BraTS regions.
        device: Where the model runs.
        amp: Mixed precision, as for `Predictor`.
        overlap: Sliding-window overlap.
        progress: A progress bar over cases.
        predictions: A folder for a model's predicted label maps (``<case>.nii.gz``); an existing file there is
            replaced only if medseg-zoo wrote it, and never when it is one of the cases' own files.
        channels: The cases' channel names in their files' order (a data set's ``channels``); by default the
            model's.

    Every case is checked before anything is predicted or scored (`medseg_zoo.data.check_cases`: readable files,
    the model's channel count, label grid and affine equal to the image's, label values in ``scheme``; a folder's
    predictions: present, readable, on the label's grid, values in ``scheme``).

    Raises:
        TypeError: If ``cases`` is not a sequence of `Case` (a data set's ``cases``).
        ValueError: If there are no cases, the scheme does not give the model's outputs, ``metrics`` is unknown, or
            ``"brats"`` is asked for a scheme without regions.
        MissingExtraError: ``"brats"`` without panoptica (one line naming the extra).
        DataCheckError: If a case has no label or fails a check (every problem, each naming its file).
        OutputError: A ``predictions`` file that must not be written (a case's own file, a user's file).
    """
    if metrics not in METRICS:
        raise ValueError(f"metrics must be one of {', '.join(METRICS)}, got {metrics!r}")
    if isinstance(cases, str | os.PathLike) or not all(isinstance(c, Case) for c in cases):
        raise TypeError(
            f"cases must be a data set's cases (discover(folder).cases), got {type(cases).__name__} {cases!r:.80}"
        )
    if not cases:
        raise ValueError("no cases to evaluate")
    scheme = get_scheme(scheme)
    if metrics == "brats" and scheme.regions is None:
        raise ValueError(
            f"metrics='brats' scores BraTS regions (TC, WT, ET, ...); label scheme {scheme.name!r} ({scheme.edition}) "
            f"has classes {', '.join(scheme.labels.values())} and no regions"
        )
    evaluator = brats_evaluator(dict(scheme.regions)) if metrics == "brats" else None
    if isinstance(model, str | os.PathLike):
        if predictions is not None:
            raise ValueError("predictions= is where a model's label maps are written; a folder of them is scored as is")
        missing = [c.name for c in cases if c.label is None]
        if missing:
            raise DataCheckError(f"cannot score cases without labels: {', '.join(missing)}")
        files = _prediction_files(Path(model), cases, scheme)
        scored = foreground(scheme.channels, scheme)
        predicted_maps = ((case, np.asarray(nib.load(f).dataobj), scheme) for case, f in zip(cases, files, strict=True))
        return _score(predicted_maps, scheme, scored, metrics, evaluator, progress)
    contract = config_of(model).contract
    data_scheme(contract, scheme)
    # The files' channel names, where they name the model's channels (in any order); otherwise the model's order.
    names = contract.in_channels
    if channels is not None and channel_order(tuple(channels), contract.in_channels) is not None:
        names = tuple(channels)
    errors = [p for p in check_cases(cases, names, scheme) if p.severity == "error"]
    if errors:
        raise DataCheckError("cannot evaluate these cases:\n" + "\n".join(f"  {p}" for p in errors))
    own = contract.scheme
    if predictions is not None and own is None:
        raise ValueError("the model's contract names no label scheme, so it predicts no label maps to write")
    if metrics == "brats" and own is None:
        raise ValueError("metrics='brats' scores label maps; the model's contract names no label scheme")
    if predictions is not None:  # before any work: never onto a case's own files or a file medseg-zoo did not write
        for case in cases:
            check_output(Path(predictions) / f"{case.name}.nii.gz", [*case.images, case.label])
    predictor = Predictor(model, device=device, amp=amp, overlap=overlap)
    scored = foreground(contract.out_channels, scheme)

    def predicted() -> Iterator[tuple[Case, np.ndarray, LabelScheme | None]]:
        for case in cases:
            inputs = _inputs(case, names)
            volume = load_volume(inputs, contract.in_channels, names if isinstance(inputs, str) else None)
            if own is None:
                regions = np.moveaxis(predictor.predict_volume(volume, "regions"), -1, 0)
                yield case, regions[[contract.out_channels.index(c) for c in scored]], None
                continue
            labels = predictor.predict_volume(volume, "labels")
            if predictions is not None:
                save_nifti(labels, volume, Path(predictions) / f"{case.name}.nii.gz")
            yield case, labels, own

    return _score(predicted(), scheme, scored, metrics, evaluator, progress)


def _score(
    predicted: Iterable[tuple[Case, np.ndarray, LabelScheme | None]],
    scheme: LabelScheme,
    scored: list[str],
    metrics: str,
    evaluator: object,
    progress: bool,
) -> Evaluation:
    """Score ``(case, label map in its scheme, or already the scored channels when the scheme is None)``."""
    rows, spacings = [], {}
    for case, prediction, prediction_scheme in tqdm(
        predicted, desc="evaluate", unit="case", total=None, disable=None if progress else True
    ):
        label = nib.load(case.label)
        truth_labels = np.asarray(label.dataobj).reshape(label.shape[:3])
        spacing = tuple(float(v) for v in np.sqrt((np.asarray(label.affine)[:3, :3] ** 2).sum(axis=0)))
        spacings[case.name] = spacing
        row: dict[str, float | str] = {"case": case.name}
        if metrics == "brats":
            zooms = tuple(float(z) for z in label.header.get_zooms()[:3])  # what panoptica reads from a NIfTI file
            scores = brats_metrics(_in_scheme(prediction, prediction_scheme, scheme), truth_labels, evaluator, zooms)
            for metric in ("lesion_dice", "lesion_nsd", "lesion_hd95", "dice", "nsd", "hd95", "tp", "fp", "fn"):
                row |= {f"{metric}_{c}": scores[c.lower()][metric] for c in scored}
            for metric in ("lesion_dice", "lesion_hd95"):
                row[f"mean_{metric}"] = float(np.nanmean([row[f"{metric}_{c}"] for c in scored]))
        else:
            index = [scheme.channels.index(c) for c in scored]
            truth = labels_to_regions(truth_labels, scheme)[index]
            if prediction_scheme is None:
                pred = prediction
            else:
                own_index = [prediction_scheme.channels.index(c) for c in scored]
                pred = labels_to_regions(prediction, prediction_scheme)[own_index]
            d, h = dice(pred, truth), hd95(pred, truth, spacing)
            row |= {f"dice_{c}": float(v) for c, v in zip(scored, d, strict=True)}
            row |= {f"hd95_{c}": float(v) for c, v in zip(scored, h, strict=True)}
        row["mean_dice"] = float(np.nanmean([row[f"dice_{c}"] for c in scored]))
        row["mean_hd95"] = float(np.nanmean([row[f"hd95_{c}"] for c in scored]))
        rows.append(row)
    policy = BRATS_POLICY if metrics == "brats" else EMPTY_POLICY
    return Evaluation(scored, rows, metrics, spacings, policy)


def _in_scheme(labels: np.ndarray, source: LabelScheme | None, target: LabelScheme) -> np.ndarray:
    """Label values of ``source``'s scheme as ``target``'s (a model predicting MSD Task01 values scored against
    BraTS 2021 labels), through the regions both schemes name."""
    if source is None or source == target:
        return labels
    return regions_to_labels(
        labels_to_regions(labels, source)[[source.channels.index(c) for c in target.channels]], target
    )
