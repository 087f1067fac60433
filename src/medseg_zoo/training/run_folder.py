"""The run folder: what a training run writes, when a folder may be replaced, and what a resume reads.

A run writes ``config.json`` (its format and version say it is a run), ``trainer_state.pt``, ``metrics.csv``,
``curves.png``, ``train.log``, the checkpoints ``best/`` and ``last/`` (``save_pretrained`` folders),
``tensorboard/`` and ``run.lock`` (held while the run trains: `medseg_zoo._lock`). ``overwrite`` deletes exactly
those (the lock excepted), and only in a folder whose ``config.json`` says it is a run that nobody is training; a
folder holding anything else is refused before anything is written, naming what it holds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg_zoo._guard import check_output_folder
from medseg_zoo._lock import LOCK_NAME
from medseg_zoo.errors import OutputError, TrainingError
from medseg_zoo.hub import CHECKPOINT_FORMAT

__all__ = ["RUN_CONFIG", "RUN_FORMAT", "RUN_FORMAT_VERSION", "STATE_NAME", "RunFolder", "is_checkpoint"]

RUN_FORMAT = "medseg-zoo-run"
RUN_FORMAT_VERSION = 1
RUN_CONFIG = "config.json"
STATE_NAME = "trainer_state.pt"
RUN_FILES = (RUN_CONFIG, STATE_NAME, "metrics.csv", "curves.png", "train.log", LOCK_NAME)
CHECKPOINTS = ("best", "last")
CHECKPOINT_FILES = ("config.json", "model.safetensors", "README.md")
TENSORBOARD = "tensorboard"
# Leftovers of an interrupted atomic write (medseg_zoo._atomic): ".<name>.<random>.tmp<suffixes>" and the
# temporary folders of a first checkpoint save.
_TEMPORARY = re.compile(r"\.(?P<name>[^/]+?)\.[^./]+\.tmp.*")


def is_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether a folder is a saved model (``save_pretrained``'s ``model.safetensors`` or its ``config.json``)."""
    folder = Path(folder)
    if (folder / "model.safetensors").exists():
        return True
    return _format(folder / "config.json") == CHECKPOINT_FORMAT


def _format(config: Path) -> str | None:
    try:
        value = json.loads(config.read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _temporary(name: str, owners: tuple[str, ...]) -> bool:
    match = _TEMPORARY.fullmatch(name)
    return match is not None and match["name"] in owners


def _listing(paths: list[Path], root: Path, most: int = 5) -> str:
    names = [str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in paths[:most]]
    return ", ".join(names) + (f" and {len(paths) - most} more" if len(paths) > most else "")


class RunFolder:
    """The folder of one training run.

    Args:
        path: The run folder (``TrainConfig.output``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / RUN_CONFIG

    @property
    def state_path(self) -> Path:
        return self.path / STATE_NAME

    def run_config(self) -> dict[str, Any] | None:
        """The folder's run config when it provably is a run (format and a known version), else ``None``."""
        try:
            run = json.loads(self.config_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
            return None
        if run.get("format_version") != RUN_FORMAT_VERSION:
            return None
        return run

    def entries(self) -> tuple[list[Path], list[Path]]:
        """The folder's entries a run writes, and every other one (inside ``best/``, ``last/`` and
        ``tensorboard/`` too). A run writes no links: a link is a user's, whatever it points to."""
        ours: list[Path] = []
        foreign: list[Path] = []
        for entry in sorted(self.path.iterdir()):
            name = entry.name
            if entry.is_symlink():
                foreign.append(entry)
            elif name in RUN_FILES and entry.is_file():
                ours.append(entry)
            elif name in (*CHECKPOINTS, TENSORBOARD) and entry.is_dir():
                inside = [p for p in entry.iterdir() if not _written_by_a_run(p, name)]
                foreign.extend(inside)
                if not inside:
                    ours.append(entry)
            elif _temporary(name, (*RUN_FILES, *CHECKPOINTS)):
                ours.append(entry)
            else:
                foreign.append(entry)
        return ours, foreign

    def check_new(self, *, overwrite: bool, protected: Mapping[str, str | os.PathLike] | None = None) -> None:
        """Refuse, before anything is written, a folder a new run must not use.

        A new run takes a new or empty folder; with ``overwrite`` also a medseg-zoo run holding nothing but what
        a run writes. A saved model (``best/``, a ``save_pretrained`` folder) is never a run folder.

        Raises:
            OutputError: A file, a folder overlapping one the run reads, a saved model, a user's folder.
        """
        out = self.path
        check_output_folder(out, protected=protected, what="output")
        if not out.is_dir() or all(e.name == LOCK_NAME for e in out.iterdir()):  # a lock alone: a run that never began
            return
        if is_checkpoint(out):
            raise OutputError(
                f"output {out} is a saved model (config.json and model.safetensors, as save_pretrained and a run's "
                "best/ and last/ hold), not a run folder: give the run a folder of its own"
            )
        run = self.run_config()
        foreign = self.entries()[1]
        if run is None:
            found = _format(self.config_path)
            why = (
                f"its {RUN_CONFIG} is not a medseg-zoo run's ("
                + (f"its format is {found!r}" if found else "it names no format")
                + ")"
                if self.config_path.exists()
                else f"it has no {RUN_CONFIG}"
            )
            kept = (
                " --overwrite deletes only the files of a medseg-zoo run, so nothing was deleted." if overwrite else ""
            )
            raise OutputError(
                f"output {out} already holds files ({_listing(sorted(out.iterdir()), out)}) and is not a medseg-zoo "
                f"run folder: {why}.{kept} Choose an empty or new folder"
            )
        if not overwrite:
            raise OutputError(
                f"output {out} holds a medseg-zoo run. Continue it with --resume, replace it with --overwrite, or "
                "choose another folder"
            )
        if foreign:
            raise OutputError(
                f"output {out} is a medseg-zoo run but also holds files a run does not write "
                f"({_listing(foreign, out)}). --overwrite deletes only a run's own files: move those, or choose "
                "another folder"
            )

    def clear(self) -> None:
        """Delete what a run wrote here (after `check_new` allowed ``overwrite``); nothing else is touched."""
        if not self.path.is_dir():
            return
        ours, foreign = self.entries()
        if foreign:  # checked before; the folder changed since
            raise OutputError(
                f"output {self.path} now holds files a run does not write ({_listing(foreign, self.path)}): "
                "nothing was deleted"
            )
        for entry in ours:
            if entry.name != LOCK_NAME:  # held by this very run
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def read(self) -> dict[str, Any]:
        """The run config of a run to resume, with its split.

        Raises:
            TrainingError: Not a run folder, or no completed epoch.
            OutputError: ``best/`` or ``last/`` is a link.
        """
        run = self.run_config()
        if run is None:
            why = f"its {RUN_CONFIG} is not a medseg-zoo run's" if self.config_path.exists() else f"no {RUN_CONFIG}"
            raise TrainingError(f"resume: {self.path} is not a run folder ({why}); start the run without --resume")
        split = run.get("split")
        if not isinstance(split, dict) or not all(isinstance(split.get(k), list) for k in ("train", "val")):
            raise TrainingError(f"resume: cannot read {self.config_path} (the split's train and val lists are missing)")
        if not self.state_path.is_file():
            raise TrainingError(
                f"resume: {self.path} has no completed epoch ({STATE_NAME} is missing); start again with --overwrite"
            )
        for checkpoint in (self.path / c for c in CHECKPOINTS):
            if checkpoint.is_symlink():  # the run would write its checkpoints into whatever it points to
                raise OutputError(
                    f"resume: {checkpoint} is a link to {os.readlink(checkpoint)}; a run writes its checkpoints into "
                    "folders of its own: replace the link by a copy, or start a new run (--checkpoint "
                    f"{checkpoint} --output NEW)"
                )
        return run

    def remove_leftovers(self) -> None:
        """Delete temporary files an interrupted write of this run left behind."""
        for folder in (self.path, *(self.path / c for c in CHECKPOINTS)):
            if folder.is_dir():
                for entry in folder.iterdir():
                    if _temporary(entry.name, (*RUN_FILES, *CHECKPOINTS, *CHECKPOINT_FILES)):
                        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def resume_hint(self) -> str:
        """What a user can do after a run stopped: resume from its last completed epoch, or start again."""
        if self.state_path.is_file():
            return (
                f"The run continues from its last completed epoch with: medseg-zoo train --output {self.path} --resume"
            )
        return f"No epoch was completed; start again with: medseg-zoo train ... --output {self.path} --overwrite"


def _written_by_a_run(path: Path, folder: str) -> bool:
    """Whether a file inside ``best/``, ``last/`` or ``tensorboard/`` is one a run writes there."""
    if path.is_symlink() or not path.is_file():
        return False
    if folder == TENSORBOARD:
        return path.name.startswith("events.out.tfevents.")
    return path.name in CHECKPOINT_FILES or _temporary(path.name, CHECKPOINT_FILES)
