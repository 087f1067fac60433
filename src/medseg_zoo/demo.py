"""The demo: synthetic BraTS-like data in, a model fine-tuned, segmentations out, offline on a CPU in minutes.

Every step is the code a user runs: ``make_dataset`` writes an MSD-layout data set (cases on random grids, LPS and
anisotropic ones among them), the `Trainer` trains on all but a few cases, and
`evaluate` segments the held-out cases on their own grids, writes the NIfTI label maps
and scores them. The demo adds an overlay PNG per held-out case and a ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from medseg_zoo._atomic import atomic_write
from medseg_zoo._device import resolve_device
from medseg_zoo._factory import create_model
from medseg_zoo._guard import check_output_folder
from medseg_zoo._registry import get_config
from medseg_zoo.data.discovery import discover
from medseg_zoo.data.synthetic import make_dataset
from medseg_zoo.errors import OutputError, TrainingError
from medseg_zoo.hub import from_pretrained
from medseg_zoo.inference.preview import canonical, planes
from medseg_zoo.training import TrainConfig, Trainer, evaluate

__all__ = ["DEMO_MODEL", "EPOCHS", "overlay", "run_demo"]

DEMO_MODEL = "unet_brats_small"
MARKER = ".medseg-zoo-demo"
CASES, HELD_OUT = 20, 4  # synthetic cases, of which the last HELD_OUT are never trained on
EPOCHS = 100  # a fixed number, so the result does not depend on how busy the machine is
SHAPE, SEED = (96, 96, 80), 2026
# Colours of the overlay: ground truth and prediction, one line style per region.
TRUTH, PREDICTION = "#00e000", "#ff00ff"
STYLES = {"WT": "solid", "TC": "dashed", "ET": "dotted"}


def _check_output(output: Path) -> None:
    """The folder is new, empty, or a previous demo's (reused); anything else is refused."""
    check_output_folder(output, what="--output")
    if output.is_dir() and any(output.iterdir()) and not (output / MARKER).exists():
        content = ", ".join(sorted(p.name for p in output.iterdir())[:5])
        raise OutputError(f"--output {output} holds other files ({content}); choose a new folder for the demo")


def run_demo(
    output: str | os.PathLike = "demo-output",
    *,
    epochs: int = EPOCHS,
    minutes: float | None = None,
    device: str = "auto",
    model: str = DEMO_MODEL,
    progress: bool = True,
    cases: int = CASES,
    shape: tuple[int, int, int] = SHAPE,
) -> dict[str, Any]:
    """Write the synthetic data set, train ``model`` for ``epochs``, segment and score the held-out cases.

    Writes into ``output``: ``data/`` (the data set, reused by later runs), ``run/`` (the Trainer's run folder),
    ``predictions/`` (label maps of the held-out cases on their own grids), ``overlays/`` (a PNG per case),
    ``curves.png`` and ``summary.json``. The same seeds and epochs give the same result however busy the machine
    is; a time budget (``minutes``) makes it depend on the machine's speed.

    Args:
        output: The demo folder: new, empty, or a previous demo's (whose files it replaces).
        epochs: Training epochs.
        minutes: Optional training budget: stop before an epoch that would end after it.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        model: A registered model reading FLAIR, T1w, T1gd, T2w and writing TC, WT, ET.
        progress: Progress bars and messages.
        cases: Synthetic cases to write (the last four are held out).
        shape: Their voxel grid.

    Returns:
        The summary (also written to ``summary.json``).

    Raises:
        TrainingError: Bad epochs or budget; OutputError: a folder in the way; UnknownModelError, DeviceError.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise TrainingError(f"--epochs must be a positive whole number, got {epochs!r}")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int | float) or not minutes > 0):
        raise TrainingError(f"--minutes must be a positive number of minutes, got {minutes!r}")
    if cases < HELD_OUT + 3:
        raise TrainingError(f"the demo needs at least {HELD_OUT + 3} cases ({HELD_OUT} held out), got {cases}")
    cfg = get_config(model)
    device = str(resolve_device(device))
    out = Path(output)
    _check_output(out)
    say = print if progress else (lambda *a, **k: None)

    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    say(f"1/3 data: {cases} synthetic BraTS-like cases in {out / 'data'} (MSD layout; some LPS or anisotropic)")
    root = make_dataset(out / "data", n_cases=cases, shape=shape, seed=SEED, progress=progress)
    full = discover(root)
    train = dataclasses.replace(full, cases=full.cases[:-HELD_OUT])
    held_out = full.cases[-HELD_OUT:]
    seconds["data"] = time.perf_counter() - start

    start = time.perf_counter()
    torch.manual_seed(0)
    net = create_model(model)
    parameters = sum(p.numel() for p in net.parameters())
    budget = f" (at most {minutes:g} min)" if minutes else ""
    size = f"{parameters / 1e6:.2f} M parameters"
    say(f"2/3 training {model} ({size}) for {epochs} epochs{budget} on {device}: {cfg.notes}")
    config = TrainConfig(
        output=str(out / "run"), epochs=epochs, val_every=5, max_minutes=minutes, device=device, progress=progress
    )
    trainer = Trainer(net, train, config, overwrite=(out / "run").exists())  # a previous demo's run
    history = trainer.fit()
    seconds["training"] = time.perf_counter() - start

    start = time.perf_counter()
    say(f"3/3 segmenting the {HELD_OUT} held-out cases on their own grids")
    best = from_pretrained(out / "run" / "best")
    result = evaluate(
        best,
        held_out,
        full.scheme,
        device=device,
        predictions=out / "predictions",
        progress=progress,
        channels=full.channels,
    )
    for case in held_out:
        overlay(case, out / "predictions" / f"{case.name}.nii.gz", out / "overlays" / f"{case.name}.png")
    shutil.copy(out / "run" / "curves.png", out / "curves.png")
    seconds["evaluation"] = time.perf_counter() - start

    mean = result.mean
    summary = {
        "model": model,
        "parameters": parameters,
        "epochs": len(history),
        "epochs_planned": epochs,
        "best_epoch": int(max((r for r in history if "mean_dice" in r), key=lambda r: r["mean_dice"])["epoch"]),
        "training_cases": len(trainer.train_cases),
        "validation_cases": len(trainer.val_cases),
        "held_out_cases": [c.name for c in held_out],
        "cases": [{k: v for k, v in row.items() if not k.startswith("hd95")} for row in result.cases],
        "mean": {f"dice_{c}": mean[f"dice_{c}"] for c in result.channels},
        "mean_dice": mean["mean_dice"],
        "seconds": {**seconds, "total": sum(seconds.values())},
        "torch": torch.__version__,
        "device": device,
    }
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    say("")
    say(_table(summary, result.channels))
    say(f"\nmean Dice over {', '.join(result.channels)} on held-out cases: {summary['mean_dice']:.3f}")
    say(", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items()))
    say(f"wrote {out}: predictions/, overlays/, curves.png, summary.json, run/ (checkpoints best/ and last/)")
    return summary


def _table(summary: dict[str, Any], channels: list[str]) -> str:
    rows = [["case", *(f"Dice {c}" for c in channels)]]
    rows += [[r["case"], *(f"{r[f'dice_{c}']:.3f}" for c in channels)] for r in summary["cases"]]
    rows.append(["mean", *(f"{summary['mean'][f'dice_{c}']:.3f}" for c in channels)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows
    ]
    return "\n".join(lines)


def _canonical(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """The volume in RAS voxel order (display orientation) and its voxel sizes."""
    img = nib.load(path)
    return canonical(np.asarray(img.dataobj), img.affine)


def overlay(case: Any, prediction: str | os.PathLike, path: str | os.PathLike) -> Path:
    """A PNG of FLAIR on three orthogonal planes through the tumour, with the ground-truth and predicted region
    contours (TC, WT, ET) in two colours; shown in RAS display orientation whatever the file's.

    Args:
        case: A `Case` with a 4-D image (FLAIR first) and a ``msd_task01`` label.
        prediction: The predicted label map on the case's grid.
        path: The PNG to write.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from medseg_zoo.transforms.labels import labels_to_regions

    image, zooms = _canonical(case.images[0])
    flair = image[..., 0].astype(np.float32)
    truth = labels_to_regions(_canonical(case.label)[0], "msd_task01")
    predicted = labels_to_regions(_canonical(Path(prediction))[0], "msd_task01")
    centre = [s // 2 for s in flair.shape]  # through the whole tumour's centre where there is one
    if truth[1].any():
        centre = np.rint(np.argwhere(truth[1]).mean(axis=0)).astype(int).tolist()
    fig = Figure(figsize=(12, 4.6))
    fig.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.14, wspace=0.05)
    axes = fig.subplots(1, 3)
    scale = np.percentile(flair[flair > 0], 99) if (flair > 0).any() else 1.0
    for ax, (name, (index, (right, up), aspect)) in zip(axes, planes(centre, zooms).items(), strict=True):
        ax.imshow(flair[index].T, cmap="gray", origin="lower", vmin=0, vmax=scale, aspect=aspect)
        for regions, colour in ((truth, TRUTH), (predicted, PREDICTION)):
            for channel, region in enumerate(("TC", "WT", "ET")):
                mask = regions[channel][index].T
                if mask.any() and not mask.all():
                    ax.contour(mask, levels=[0.5], colors=colour, linestyles=STYLES[region], linewidths=1.3)
        ax.set_title(f"{name}: {right} to the right, {up} up", fontsize=10)
        ax.set_axis_off()
    handles = [Line2D([], [], color=TRUTH, label="ground truth"), Line2D([], [], color=PREDICTION, label="prediction")]
    handles += [Line2D([], [], color="grey", linestyle=style, label=region) for region, style in STYLES.items()]
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False)
    fig.suptitle(f"{case.name}: FLAIR with ground-truth and predicted tumour regions")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90))
