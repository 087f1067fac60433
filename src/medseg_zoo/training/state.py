"""A run's state in its folder: ``config.json`` (what trains, on what, how, from where), the checkpoints ``best/``
and ``last/``, and ``trainer_state.pt`` (optimiser, schedule, random generators, history) that a resume reads.
The folder's rules (what may be replaced, what a run writes) are `medseg_zoo.training.run_folder`'s."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg_zoo._atomic import atomic_write
from medseg_zoo._contract import ModelConfig, config_of
from medseg_zoo._version import __version__
from medseg_zoo.errors import TrainingError
from medseg_zoo.hub import save_pretrained
from medseg_zoo.training.recipes import RESUMABLE_CHANGES, TrainConfig
from medseg_zoo.training.run_folder import RUN_FORMAT, RUN_FORMAT_VERSION
from medseg_zoo.transforms.labels import LabelScheme, get_scheme, list_schemes

# The functions take the `medseg_zoo.training.Trainer` whose state they save or restore (typed Any: the trainer
# imports this module, and this module stays below it).
Trainer = Any

__all__ = [
    "STATE_FORMAT",
    "check_val_data",
    "load_state",
    "read_run",
    "save_model",
    "save_state",
    "scheme_value",
    "write_run_config",
]

logger = logging.getLogger("medseg_zoo.training")

STATE_FORMAT = 1


def scheme_value(scheme: LabelScheme) -> str | LabelScheme:
    """A built-in scheme by name (readable config.json), a data set's own scheme whole."""
    return scheme.name if scheme.name in list_schemes() and get_scheme(scheme.name) == scheme else scheme


def read_run(trainer: Trainer, cfg: ModelConfig) -> dict[str, Any]:
    """The run config of the run to resume, checked against the model and settings given for it.

    Raises:
        TrainingError: Another model, unreadable settings, or settings a resumed run may not change.
    """
    run = trainer.run_folder.read()
    name = run.get("model", {}).get("name")
    if name != cfg.name:
        raise TrainingError(
            f"resume: the run in {trainer.output} trains {name}, the model given is {cfg.name}; a resumed run "
            "keeps its model (medseg-zoo train --output RUN --resume needs no --model)"
        )
    try:
        saved = TrainConfig.from_dict({**run["config"], "output": trainer.config.output})
    except (KeyError, TypeError, TrainingError) as exc:
        raise TrainingError(f"resume: cannot read the settings in {trainer.run_folder.config_path} ({exc})") from None
    changed = [
        f"{f}={getattr(trainer.config, f)!r} (the run's: {getattr(saved, f)!r})"
        for f in saved.to_dict()
        if f not in RESUMABLE_CHANGES and getattr(trainer.config, f) != getattr(saved, f)
    ]
    if changed:
        raise TrainingError(
            f"resume: settings differ from the run in {trainer.output}: {'; '.join(changed)}. A resumed run keeps "
            f"its settings; only {', '.join(RESUMABLE_CHANGES)} may change. Start a new run from "
            f"{trainer.output / 'last'} with --checkpoint for other settings"
        )
    return run


def check_val_data(trainer: Trainer, run: dict[str, Any]) -> None:
    """A resumed run validates on the set it validated on: a separate one again (it may have moved), or a split.

    Raises:
        TrainingError: A validation set given for a run that split its data, or missing for one that had one.
    """
    recorded = run.get("data", {}).get("val_root")
    if (recorded is None) != (trainer.val_dataset is None):
        had = f"validated on {recorded}: give it again as val_data (--val-data)" if recorded else "split its data"
        raise TrainingError(f"resume: the run in {trainer.output} {had}")


def write_run_config(trainer: Trainer) -> None:
    """``config.json``: what the run trains, on what, how, from where it started. A resumed run keeps its
    record and updates the settings that may change (the epochs, above all) and where its data lies."""
    if trainer.run_record is not None:
        run = dict(trainer.run_record)
        run["config"] = trainer.config.to_dict()
        run["data"] = {**run["data"], "root": str(trainer.dataset.root.resolve())}
        if trainer.val_dataset is not None:
            run["data"]["val_root"] = str(trainer.val_dataset.root.resolve())
        run["resumed"] = [*run.get("resumed", []), {"command": sys.argv, "epochs": trainer.config.epochs}]
    else:
        cfg = config_of(trainer.model)
        pretrained, reinitialized = trainer.origin()
        report = getattr(trainer.model, "load_report", None)
        scheme = trainer.scheme
        run = {
            "format": RUN_FORMAT,
            "format_version": RUN_FORMAT_VERSION,
            "model": {
                "name": cfg.name,
                "pretrained": pretrained,
                "start": {"source": report.source, "sha256": report.sha256} if report else {"source": "scratch"},
                "reinitialized": sorted(reinitialized),
                "load_report": str(report or ""),
            },
            **({"plan": trainer.model.plan} if getattr(trainer.model, "plan", None) else {}),
            "data": {
                "root": str(trainer.dataset.root.resolve()),
                **({"val_root": str(trainer.val_dataset.root.resolve())} if trainer.val_dataset else {}),
                "layout": trainer.dataset.layout,
                "channels": list(trainer.dataset.channels),
                "label_scheme": scheme.name if isinstance(scheme_value(scheme), str) else dataclasses.asdict(scheme),
            },
            "split": {"train": [c.name for c in trainer.train_cases], "val": [c.name for c in trainer.val_cases]},
            "config": trainer.config.to_dict(),
            "world_size": trainer.world,
            "versions": {"medseg_zoo": __version__, "torch": torch.__version__},
            "command": sys.argv,
        }
    text = json.dumps(run, indent=2, default=str)
    atomic_write(trainer.run_folder.config_path, lambda tmp: Path(tmp).write_text(text))


def save_model(trainer: Trainer, folder: Path) -> None:
    """The model as a ``save_pretrained`` folder, its metrics those of the run's latest validation."""
    validated = next((r for r in reversed(trainer.history) if "mean_dice" in r), None)
    cfg = config_of(trainer.model)
    metrics = {k: round(v, 4) for k, v in (validated or {}).items() if k.startswith(("dice_", "mean_dice"))}
    if validated:
        where = (
            f"validation set {trainer.val_dataset.root.name}"
            if trainer.val_dataset is not None
            else f"validation split of {trainer.dataset.root.name}"
        )
        metrics["data"] = f"{where} ({len(trainer.val_cases)} cases), epoch {validated['epoch']}, on the model grid"
    trainer.model.pretrained_cfg = cfg.replace(metrics=metrics)
    save_pretrained(trainer.model, folder)


def save_state(trainer: Trainer) -> None:
    """``trainer_state.pt``: everything a resume needs to continue as if never stopped."""
    state = {
        "format": STATE_FORMAT,
        "epoch": trainer.epoch,
        "model": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler else None,
        "best": trainer.best,
        "stale": trainer.stale,
        "horizon": trainer.horizon,
        "history": trainer.history,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
            "numpy_pos": int(np.random.get_state()[2]),
            "python": random.getstate(),
        },
    }
    atomic_write(trainer.run_folder.state_path, lambda tmp: torch.save(state, tmp))


def load_state(trainer: Trainer) -> None:
    """Restore a run's state into a prepared Trainer; a changed number of epochs stretches the schedule.

    Raises:
        TrainingError: A damaged state file or one from another run (with what the user can do instead).
    """
    path = trainer.run_folder.state_path
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"format {state.get('format')!r}, expected {STATE_FORMAT}")
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        if trainer.scaler is not None and state["scaler"] is not None:
            trainer.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
    except Exception as exc:  # torch.load raises many types for damaged files
        last = trainer.output / "last"
        keep = (
            f"{last} holds the weights of the last completed epoch: start a new run from them with "
            f"medseg-zoo train --checkpoint {last} --data ... --output NEW_FOLDER, or start again with --overwrite"
            if (last / "model.safetensors").is_file()
            else "start again with --overwrite"
        )
        raise TrainingError(
            f"resume: cannot read {path} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"the file is damaged or from another run. {keep}"
        ) from None
    trainer.epoch, trainer.best, trainer.stale = int(state["epoch"]), float(state["best"]), int(state["stale"])
    trainer.horizon = int(state["horizon"])
    planned = int(trainer.run_record["config"]["epochs"])
    if trainer.config.epochs != planned:
        # The schedule spanned the planned epochs (and ended at its last rate, 0 for cosine and poly): it is
        # stretched over the new number, so the added epochs train at the rates of that longer schedule.
        trainer.horizon = trainer.config.epochs
        step = trainer.scheduler.last_epoch
        for group, factor in zip(trainer.optimizer.param_groups, trainer.scheduler.lr_lambdas, strict=True):
            group["lr"] = group["initial_lr"] * factor(step)  # the next step's rate, on the new schedule
        logger.info(
            "epochs changed from %d to %d: the learning-rate schedule now spans %d epochs",
            planned,
            trainer.config.epochs,
            trainer.config.epochs,
        )
    trainer.history = [dict(r) for r in state["history"]]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_pos"]))
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in rng["python"]))
    if trainer.epoch >= trainer.config.epochs:
        logger.info("the run has completed %d of %d epochs; nothing to do", trainer.epoch, trainer.config.epochs)
