"""Evaluating a model on labelled cases: each case predicted on its own grid, Dice and HD95 per output."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from torch import nn
from tqdm import tqdm

from medseg_zoo._atomic import atomic_write
from medseg_zoo._contract import channel_order, config_of
from medseg_zoo.data.checks import DataCheckError, check_cases
from medseg_zoo.data.discovery import Case
from medseg_zoo.inference.io import load_volume, save_nifti
from medseg_zoo.inference.predictor import Predictor
from medseg_zoo.metrics import EMPTY_POLICY, dice, hd95
from medseg_zoo.transforms.labels import LabelScheme, labels_to_regions
from medseg_zoo.transforms.presets import data_scheme

__all__ = ["Evaluation", "evaluate", "foreground"]


def foreground(channels: Sequence[str], scheme: LabelScheme) -> list[str]:
    """The outputs a mean Dice averages: every region, or every class but the background (label 0)."""
    return list(channels) if not scheme.exclusive else list(channels[1:])


@dataclass
class Evaluation:
    """Per-case Dice and HD95 (mm) for each output, measured on each case's own grid.

    Attributes:
        channels: The outputs scored (regions, or classes without the background).
        cases: One row per case: ``{"case": name, "dice_<output>": ..., "hd95_<output>": ...}``.
    """

    channels: list[str]
    cases: list[dict[str, float | str]]

    @property
    def mean(self) -> dict[str, float]:
        """The mean over cases of every column, and ``mean_dice`` / ``mean_hd95`` over the outputs."""
        keys = [f"{m}_{c}" for m in ("dice", "hd95") for c in self.channels]
        out = {k: float(np.mean([row[k] for row in self.cases])) for k in keys}
        out["mean_dice"] = float(np.mean([out[f"dice_{c}"] for c in self.channels]))
        out["mean_hd95"] = float(np.mean([out[f"hd95_{c}"] for c in self.channels]))
        return out

    def rows(self) -> list[dict[str, float | str]]:
        """The case rows followed by a ``mean`` row."""
        return [*self.cases, {"case": "mean", **self.mean}]  # the mean row adds mean_dice and mean_hd95

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write `rows` as CSV, atomically."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.rows()[-1]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        return atomic_write(path, lambda tmp: Path(tmp).write_text(buffer.getvalue()))

    def __str__(self) -> str:
        header = ["case", *(f"Dice {c}" for c in self.channels), *(f"HD95 {c}" for c in self.channels)]
        rows = [header]
        for row in self.rows():
            dices = [f"{row[f'dice_{c}']:.4f}" for c in self.channels]
            hds = [f"{row[f'hd95_{c}']:.2f}" for c in self.channels]
            rows.append([str(row["case"]), *dices, *hds])
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows
        ]
        return "\n".join([*lines, f"(HD95 in mm; empty masks: {EMPTY_POLICY})"])


def _inputs(case: Case, channels: Sequence[str]) -> str | dict[str, str]:
    if len(case.images) == 1:
        return str(case.images[0])
    return {name: str(path) for name, path in zip(channels, case.images, strict=True)}


def evaluate(
    model: nn.Module,
    cases: Sequence[Case],
    scheme: LabelScheme,
    *,
    device: str = "auto",
    amp: bool | str | None = None,
    overlap: float = 0.5,
    progress: bool = False,
    predictions: str | os.PathLike | None = None,
    channels: Sequence[str] | None = None,
) -> Evaluation:
    """Predict every case on its own grid (as ``predict`` does) and score it against its label file.

    With a label scheme in the model's contract, the label map is predicted (and written to ``predictions`` when
    given, as ``<case>.nii.gz`` with the input's grid and header) and that label map is scored, so the numbers are
    those of the files a user gets; without one, the output channels are scored.

    Args:
        model: A zoo model.
        cases: Labelled cases, e.g. ``discover(root).cases``.
        scheme: The label scheme of the cases' label maps; it must give the model's outputs.
        device: Where the model runs.
        amp: Mixed precision, as for `Predictor`.
        overlap: Sliding-window overlap.
        progress: A progress bar over cases.
        predictions: A folder for the predicted label maps.
        channels: The cases' channel names in their files' order (a data set's ``channels``); by default the
            model's.

    Every case is checked before anything is predicted (`medseg_zoo.data.check_cases`: readable files, the
    model's channel count, label grid and affine equal to the image's, label values in ``scheme``).

    Raises:
        ValueError: If there are no cases, or the scheme does not give the model's outputs.
        DataCheckError: If a case has no label or fails a check (every problem, each naming its file).
    """
    contract = config_of(model).contract
    data_scheme(contract, scheme)
    if not cases:
        raise ValueError("no cases to evaluate")
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
    predictor = Predictor(model, device=device, amp=amp, overlap=overlap)
    scored = foreground(contract.out_channels, scheme)
    index = [contract.out_channels.index(c) for c in scored]
    rows = []
    for case in tqdm(cases, desc="evaluate", unit="case", disable=None if progress else True):
        inputs = _inputs(case, names)
        volume = load_volume(inputs, contract.in_channels, names if isinstance(inputs, str) else None)
        if own is None:
            predicted = np.moveaxis(predictor.predict_volume(volume, "regions"), -1, 0)[index]
        else:
            labels = predictor.predict_volume(volume, "labels")
            if predictions is not None:
                save_nifti(labels, volume, Path(predictions) / f"{case.name}.nii.gz")
            predicted = labels_to_regions(labels, own)[index]
        label = nib.load(case.label)
        truth = labels_to_regions(np.asarray(label.dataobj).reshape(label.shape[:3]), scheme)[index]
        spacing = np.sqrt((np.asarray(volume.affine)[:3, :3] ** 2).sum(axis=0))
        d, h = dice(predicted, truth), hd95(predicted, truth, spacing)
        row: dict[str, float | str] = {"case": case.name}
        row |= {f"dice_{c}": float(v) for c, v in zip(scored, d, strict=True)}
        row |= {f"hd95_{c}": float(v) for c, v in zip(scored, h, strict=True)}
        rows.append(row)
    return Evaluation(scored, rows)
