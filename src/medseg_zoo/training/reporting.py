"""What a run reports: ``metrics.csv``, ``curves.png``, TensorBoard scalars, and the epoch lines of ``train.log``
and the console. Each is a `Callback`, the same kind of thing a user passes to the Trainer."""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from medseg_zoo._atomic import atomic_write
from medseg_zoo._contract import config_of
from medseg_zoo.errors import TrainingError
from medseg_zoo.training.recipes import TrainConfig

__all__ = [
    "Callback",
    "Curves",
    "EpochLog",
    "MetricsTable",
    "TensorBoard",
    "check_callbacks",
    "default_callbacks",
    "start_logging",
]

logger = logging.getLogger("medseg_zoo.training")


class Trainer(Protocol):
    """What a callback reads of the `medseg_zoo.training.Trainer` that calls it (the whole Trainer is passed)."""

    config: TrainConfig
    output: Path
    model: torch.nn.Module
    device: torch.device
    world: int
    epoch: int  # completed epochs
    history: list[dict[str, float]]  # the rows of metrics.csv so far
    improved: bool  # whether the last epoch's validation was the best yet
    train_cases: list[Any]
    val_cases: list[Any]

    @property
    def is_main(self) -> bool: ...


class Callback:
    """Hooks the Trainer calls on every process; override the ones you need (``trainer.is_main`` tells rank 0)."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first epoch (after a resume: before the first epoch still to run)."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        """After an epoch's checkpoints are written; ``row`` is its line of ``metrics.csv``."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last epoch."""


def check_callbacks(callbacks: object) -> None:
    """Refuse anything but a list (or tuple) of `Callback` objects.

    Raises:
        TrainingError: Naming the first item that is not one.
    """
    listed = isinstance(callbacks, list | tuple)
    bad = [c for c in callbacks if not isinstance(c, Callback)] if listed else [callbacks]
    if bad:
        raise TrainingError(
            "callbacks must be a list of Callback objects (subclass medseg_zoo.training.Callback and override "
            f"its hooks), got {bad[0]!r}"
        )


class MetricsTable(Callback):
    """``metrics.csv``: one row per epoch (loss, learning rate, speed; Dice where validated), rewritten whole."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        if not trainer.is_main:
            return
        columns: list[str] = []
        for r in trainer.history:
            columns += [k for k in r if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(trainer.history)
        atomic_write(trainer.output / "metrics.csv", lambda tmp: Path(tmp).write_text(buffer.getvalue()))


class Curves(Callback):
    """``curves.png``: training loss and validation Dice against epochs, after each validation (drawing costs
    ~0.3 s)."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        if not trainer.is_main or "mean_dice" not in row:
            return
        from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

        history = trainer.history
        val = [r for r in history if "mean_dice" in r]
        fig = Figure(figsize=(10, 4))
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.22)
        left, right = fig.subplots(1, 2)
        left.plot([r["epoch"] for r in history], [r["train_loss"] for r in history], color="black")
        left.set(xlabel="epoch", ylabel="training loss (Dice + CE)", title="Loss")
        epochs = [r["epoch"] for r in val]
        for key in [k for k in val[0] if k.startswith("dice_")]:
            right.plot(epochs, [r[key] for r in val], marker="o", label=key.removeprefix("dice_"))
        right.plot(epochs, [r["mean_dice"] for r in val], color="black", lw=2, label="mean")
        right.legend(loc="lower right")
        right.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0, 1))
        atomic_write(trainer.output / "curves.png", lambda tmp: fig.savefig(tmp, dpi=100))


class TensorBoard(Callback):
    """Every number of an epoch's row as a TensorBoard scalar in ``tensorboard/`` (when TensorBoard is installed)."""

    def __init__(self) -> None:
        self._writer = None
        self._tried = False

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        if not trainer.is_main:
            return
        if not self._tried:
            self._tried = True
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional
                return
            self._writer = SummaryWriter(str(trainer.output / "tensorboard"))
        if self._writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    self._writer.add_scalar(key, value, int(row["epoch"]))
            self._writer.flush()


class EpochLog(Callback):
    """The run's lines in ``train.log`` and on the console: what trains on what, then one line per epoch."""

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.is_main and trainer.epoch == 0:
            logger.info(
                "training %s on %d cases, validating on %d; %s on %s%s",
                config_of(trainer.model).name,
                len(trainer.train_cases),
                len(trainer.val_cases),
                trainer.config.recipe,
                trainer.device,
                f" ({trainer.world} processes)" if trainer.world > 1 else "",
            )

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        if not trainer.is_main:
            return
        logger.info(
            "epoch %d/%d: loss %.4f%s, %.2f samples/s, %.0f s%s",
            row["epoch"],
            trainer.config.epochs,
            row["train_loss"],
            "".join(f", {k.removeprefix('dice_')} {v:.4f}" for k, v in row.items() if k.startswith("dice_"))
            + (f", mean Dice {row['mean_dice']:.4f}" if "mean_dice" in row else ""),
            row["samples_per_second"],
            row["seconds"],
            " (best)" if trainer.improved else "",
        )


def default_callbacks() -> list[Callback]:
    """The reports every run writes: the metrics table, the curves, TensorBoard and the epoch lines."""
    return [MetricsTable(), Curves(), TensorBoard(), EpochLog()]


class _ConsoleHandler(logging.Handler):
    """Log lines printed through tqdm, so they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def start_logging(output: Path, progress: bool) -> None:
    """The run's log: every line into ``output/train.log``; warnings always on the console, epoch lines there
    only with ``progress``."""
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    file = logging.FileHandler(output / "train.log")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(file)
    console = _ConsoleHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    console.setLevel(logging.INFO if progress else logging.WARNING)
    logger.addHandler(console)
