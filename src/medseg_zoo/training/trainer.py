"""The Trainer: fine-tune a zoo model on a discovered data set, with validation, checkpoints and resume.

The loop is plain PyTorch a user can read and copy: a DataLoader of random roi crops, forward under autocast, a
loss from the model's contract, backward, clip, step; sliding-window validation on whole volumes every few epochs;
``best/`` and ``last/`` checkpoints in the ``save_pretrained`` layout. Under ``torchrun`` the same code runs with
DistributedDataParallel, one process per GPU (or gloo processes on the CPU).

Customise by overriding `Trainer.build_loss`, `Trainer.build_optimizer` or `Trainer.training_step`, or by
passing `Callback` objects:

```python
class FocalTrainer(Trainer):
    def build_loss(self):
        return monai.losses.DiceFocalLoss(sigmoid=True)
```
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.data import list_data_collate
from monai.transforms import Compose
from safetensors import SafetensorError
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

import medseg_zoo
from medseg_zoo._atomic import atomic_write
from medseg_zoo._contract import config_of
from medseg_zoo._device import amp_dtype, process
from medseg_zoo._guard import check_output_folder
from medseg_zoo._lock import RunLock, refuse_owned
from medseg_zoo.data.checks import check_dataset
from medseg_zoo.data.discovery import Case, DataSet, discover
from medseg_zoo.data.splits import k_folds, train_val_split
from medseg_zoo.errors import TrainingError
from medseg_zoo.hub import from_pretrained, save_pretrained
from medseg_zoo.inference.predictor import Predictor
from medseg_zoo.metrics import dice
from medseg_zoo.training.evaluation import Evaluation, evaluate, foreground
from medseg_zoo.training.losses import loss_for
from medseg_zoo.training.recipes import RESUMABLE_CHANGES, TrainConfig
from medseg_zoo.training.run_folder import RUN_FORMAT, RUN_FORMAT_VERSION, RunFolder
from medseg_zoo.transforms.labels import LabelScheme, get_scheme, list_schemes
from medseg_zoo.transforms.presets import (
    cached_dataset,
    data_scheme,
    preprocessing_key,
    preprocessing_transforms,
    training_transforms,
)

__all__ = ["Callback", "Trainer"]

logger = logging.getLogger("medseg_zoo.training")

STATE_FORMAT = 1


class Callback:
    """Hooks the Trainer calls on every process; override the ones you need (``trainer.is_main`` tells rank 0)."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first epoch (after a resume: before the first epoch still to run)."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        """After an epoch's checkpoints are written; ``row`` is its line of ``metrics.csv``."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last epoch."""


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


class _EpochSampler(Sampler):
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


class _ConsoleHandler(logging.Handler):
    """Log lines printed through tqdm, so they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def _plain(x: torch.Tensor) -> torch.Tensor:
    """MONAI MetaTensors as plain tensors: the network needs no metadata, and metadata costs per operation."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def _scheme_value(scheme: LabelScheme) -> str | LabelScheme:
    """A built-in scheme by name (readable config.json), a data set's own scheme whole."""
    return scheme.name if scheme.name in list_schemes() and get_scheme(scheme.name) == scheme else scheme


class Trainer:
    """Fine-tunes a zoo model on a data set.

    Args:
        model: From `medseg_zoo.create_model` or `medseg_zoo.from_pretrained`; its contract decides
            preprocessing, loss and outputs. Its label scheme becomes the data's.
        data: A data set folder (MSD, nnU-Net v2 raw, or image/label pairs with ``label_scheme``) or a
            `DataSet`.
        config: How to train (default ``TrainConfig()``); see `medseg_zoo.training.recipe` for named ones.
        label_scheme: The label scheme of a folder of pairs (or to override a dataset.json's).
        resume: Continue the run in ``config.output`` from its last completed epoch.
        overwrite: Replace an existing run in ``config.output``.
        callbacks: `Callback` objects.

    Everything is checked before anything is written: the data (`check_dataset` against
    the model), the split, the batch size, the device, the run folder.

    Raises:
        TrainingError: Bad settings, a run folder in the way, nothing to resume.
        DataCheckError: The data set has errors (the message is the whole report).
    """

    def __init__(
        self,
        model: nn.Module,
        data: str | os.PathLike | DataSet,
        config: TrainConfig | None = None,
        *,
        label_scheme: str | LabelScheme | None = None,
        resume: bool = False,
        overwrite: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.config = config = config if config is not None else TrainConfig()
        if not isinstance(config, TrainConfig):
            raise TrainingError(f"config must be a TrainConfig, got {type(config).__name__}")
        if resume and overwrite:
            raise TrainingError(
                "resume and overwrite exclude each other: resume continues the run, overwrite deletes it"
            )
        listed = isinstance(callbacks, list | tuple)
        bad = [c for c in callbacks if not isinstance(c, Callback)] if listed else [callbacks]
        if bad:
            raise TrainingError(
                "callbacks must be a list of Callback objects (subclass medseg_zoo.training.Callback and override "
                f"its hooks), got {bad[0]!r}"
            )
        if isinstance(data, DataSet):
            if label_scheme is not None:
                raise TrainingError(
                    f"label_scheme={label_scheme!r} applies to a data set folder; a DataSet already has its scheme "
                    f"({data.scheme.name}): use discover(root, label_scheme=...)"
                )
            self.dataset = data
        elif isinstance(data, str | os.PathLike):
            self.dataset = discover(data, label_scheme=label_scheme)
        else:
            raise TrainingError(
                f"data must be a data set folder (MSD, nnU-Net v2, image/label pairs) or a DataSet, got "
                f"{type(data).__name__} {data!r}"
            )
        cfg = config_of(model)
        me, self.device = process(config.device)
        self.rank, self.world = me.rank, me.world
        self.amp_dtype = amp_dtype(self.device, config.amp, cpu_auto=False)
        self.output = Path(config.output)
        if self.rank == 0:  # one owner at a time, this process's other runs included; under torchrun rank 0 owns
            refuse_owned(self.output, allow_self=False)
        self.run_folder = RunFolder(self.output)
        self.lock = RunLock(self.output)
        self.callbacks = list(callbacks)
        self.resume = resume

        self._run_config = self._read_run(cfg) if resume else None
        report = check_dataset(self.dataset, cfg.contract)
        report.raise_for_errors()
        self.warnings = [str(p) for p in report.problems]
        self.scheme = data_scheme(cfg.contract, self.dataset.scheme)
        outputs = self.scheme.channels if self.scheme.exclusive else cfg.contract.out_channels
        self.contract = dataclasses.replace(cfg.contract, out_channels=outputs, label_scheme=_scheme_value(self.scheme))
        self.model = model
        self._check_model_options(cfg)

        self.train_cases, self.val_cases = self._split()
        self._check_roi()
        if config.warmup_epochs >= config.epochs:
            self.warnings.append(
                f"warning: warmup_epochs={config.warmup_epochs} is not fewer than epochs={config.epochs}: the learning "
                f"rate never reaches lr={config.lr:g}; use fewer warm-up epochs (--warmup-epochs) or more epochs"
            )
        if config.batch_size * self.world > len(self.train_cases):
            raise TrainingError(
                f"batch size {config.batch_size}{f' x {self.world} processes' if self.world > 1 else ''} is larger "
                f"than the {len(self.train_cases)} training cases: use --batch-size "
                f"{max(1, len(self.train_cases) // self.world)} or fewer"
            )
        protected = {"the data set": self.dataset.root}
        if not resume and self.rank == 0:  # the other ranks write nothing there, and rank 0 may have begun
            self.run_folder.check_new(overwrite=overwrite, protected=protected)
        if config.cache_dir is not None:
            check_output_folder(config.cache_dir, protected=protected, what="cache_dir")
        self.overwrite = overwrite
        self.history: list[dict[str, float]] = []
        self.epoch = 0
        self.horizon = config.epochs  # epochs the learning-rate schedule spans
        self.best = -math.inf
        self.stale = 0
        self._prepared = False

    # --- checks before anything is written ------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.rank == 0

    def _check_model_options(self, cfg: Any) -> None:
        if (self.config.freeze_encoder_epochs or self.config.layer_decay) and not cfg.encoder:
            raise TrainingError(
                f"{cfg.name} names no encoder ({cfg.architecture}), so freeze_encoder_epochs and layer_decay do "
                "not apply: use a model whose configuration names its encoder (unetr_*, swin_unetr_*, segresnet_*)"
            )
        if self.config.layer_decay and not cfg.encoder_blocks:
            raise TrainingError(f"{cfg.name} names no encoder blocks, so layer_decay does not apply")

    def _check_roi(self) -> None:
        """Warn when the roi is larger than every training volume on the model grid (read from the headers)."""
        largest = np.zeros(3)
        for case in self.train_cases:
            header = nib.load(case.images[0]).header
            affine, shape = header.get_best_affine(), header.get_data_shape()[:3]
            sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
            grid = np.array(shape, dtype=float)
            if self.contract.orientation is not None:  # reoriented: voxel axis j lies along world axis argmax |A[:, j]|
                axes = np.abs(affine[:3, :3]).argmax(axis=0)
                grid, sizes = grid[np.argsort(axes)], sizes[np.argsort(axes)]
            if self.contract.spacing is not None:
                grid = grid * sizes / np.asarray(self.contract.spacing)
            if self.contract.axis_order == "zyx":
                grid = grid[::-1]
            largest = np.maximum(largest, grid)
        roi = np.asarray(self.contract.roi_size)
        if (roi > np.round(largest)).any():
            self.warnings.append(
                f"warning: the roi {'x'.join(map(str, roi))} is larger than every training volume on the model grid "
                f"(largest {'x'.join(f'{v:.0f}' for v in largest)}): crops are zero-padded to the roi; a "
                "smaller roi trains faster (create_model(..., roi_size=...), or train --roi-size)"
            )

    def _read_run(self, cfg: Any) -> dict[str, Any]:
        """The run config of the run to resume, checked against the model and settings given for it."""
        run = self.run_folder.read()
        name = run.get("model", {}).get("name")
        if name != cfg.name:
            raise TrainingError(
                f"resume: the run in {self.output} trains {name}, the model given is {cfg.name}; a resumed run "
                "keeps its model (medseg-zoo train --output RUN --resume needs no --model)"
            )
        try:
            saved = TrainConfig.from_dict({**run["config"], "output": self.config.output})
        except (KeyError, TypeError, TrainingError) as exc:
            raise TrainingError(f"resume: cannot read the settings in {self.run_folder.config_path} ({exc})") from None
        changed = [
            f"{f}={getattr(self.config, f)!r} (the run's: {getattr(saved, f)!r})"
            for f in saved.to_dict()
            if f not in RESUMABLE_CHANGES and getattr(self.config, f) != getattr(saved, f)
        ]
        if changed:
            raise TrainingError(
                f"resume: settings differ from the run in {self.output}: {'; '.join(changed)}. A resumed run keeps "
                f"its settings; only {', '.join(RESUMABLE_CHANGES)} may change. Start a new run from "
                f"{self.output / 'last'} with --checkpoint for other settings"
            )
        return run

    def _split(self) -> tuple[list[Case], list[Case]]:
        by_name = {c.name: c for c in self.dataset.cases}
        if self._run_config is not None:
            split = self._run_config["split"]
            missing = [n for n in [*split["train"], *split["val"]] if n not in by_name]
            if missing:
                raise TrainingError(
                    f"resume: cases of the run are no longer in {self.dataset.root}: {', '.join(missing)}"
                )
            return [by_name[n] for n in split["train"]], [by_name[n] for n in split["val"]]
        names = [c.name for c in self.dataset.cases if c.label is not None]
        try:
            if self.config.fold is not None:
                k, n = self.config.fold
                train, val = k_folds(names, n, seed=self.config.seed)[k]
            else:
                train, val = train_val_split(names, self.config.val_fraction, seed=self.config.seed)
        except ValueError as exc:
            raise TrainingError(
                f"{self.dataset.root}: {len(names)} labelled case(s) cannot give a training and a validation part "
                f"({exc}); add cases, or change --val-fraction / --fold"
            ) from None
        return [by_name[n] for n in sorted(train)], [by_name[n] for n in sorted(val)]

    # --- set-up ---------------------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Distributed group, run folder, data loaders, optimiser, schedule; the state of a resumed run."""
        if self._prepared:
            return
        self._prepared = True
        config = self.config
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(config.seed)
        if self.is_main:
            if self.overwrite:
                self.run_folder.clear()
            self.run_folder.remove_leftovers()
            self._start_logging()
            if not self.resume:  # a resumed run's record is updated once its state has been read
                self._write_run_config()
        self._barrier()
        if self.is_main:
            for warning in self.warnings:
                logger.warning(warning)

        # The trained model's outputs map to the data's labels: its checkpoints carry the data's label scheme.
        self.model.pretrained_cfg = config_of(self.model).replace(contract=self.contract)
        self.model.to(self.device)
        self.loss = self.build_loss()
        self.optimizer = self.build_optimizer(self._parameter_groups())
        self.train_loader = self._train_loader()
        self.steps_per_epoch = math.ceil(len(self.train_loader) / config.grad_accumulation)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, [self._lr_factor(group) for group in self.optimizer.param_groups]
        )
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.val_data = cached_dataset(
            [c.to_dict() for c in self.val_cases],
            Compose(preprocessing_transforms(self.contract, label_scheme=self.scheme)),
            cache_dir=Path(config.cache_dir) / "val" if config.cache_dir else None,
            key=preprocessing_key(self.contract, self.scheme),
        )
        if self.resume:
            self._load_state()
            if self.is_main:
                self._write_run_config()
        self.network = (
            nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if self.world > 1
            else self.model
        )
        if config.compile:  # the parameters stay the model's: checkpoints and the optimizer see no wrapper
            self.network = torch.compile(self.network)

    def _start_logging(self) -> None:
        logger.setLevel(logging.INFO)
        logger.propagate = False
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        file = logging.FileHandler(self.output / "train.log")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(file)
        console = _ConsoleHandler()  # warnings always reach the console; epoch lines only with progress
        console.setFormatter(logging.Formatter("%(message)s"))
        console.setLevel(logging.INFO if self.config.progress else logging.WARNING)
        logger.addHandler(console)

    def _write_run_config(self) -> None:
        """``config.json``: what the run trains, on what, how, from where it started. A resumed run keeps its
        record and updates the settings that may change (the epochs, above all) and where its data lies."""
        if self._run_config is not None:
            run = dict(self._run_config)
            run["config"] = self.config.to_dict()
            run["data"] = {**run["data"], "root": str(self.dataset.root.resolve())}
            run["resumed"] = [*run.get("resumed", []), {"command": sys.argv, "epochs": self.config.epochs}]
        else:
            cfg = config_of(self.model)
            pretrained, reinitialized = self._origin()
            report = getattr(self.model, "load_report", None)
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
                "data": {
                    "root": str(self.dataset.root.resolve()),
                    "layout": self.dataset.layout,
                    "channels": list(self.dataset.channels),
                    "label_scheme": self.scheme.name
                    if isinstance(_scheme_value(self.scheme), str)
                    else dataclasses.asdict(self.scheme),
                },
                "split": {"train": [c.name for c in self.train_cases], "val": [c.name for c in self.val_cases]},
                "config": self.config.to_dict(),
                "world_size": self.world,
                "versions": {"medseg_zoo": medseg_zoo.__version__, "torch": torch.__version__},
                "command": sys.argv,
            }
        text = json.dumps(run, indent=2, default=str)
        atomic_write(self.run_folder.config_path, lambda tmp: Path(tmp).write_text(text))

    def _train_loader(self) -> DataLoader:
        config = self.config
        transform = training_transforms(
            self.contract, label_scheme=self.scheme, foreground_ratio=config.foreground_ratio
        )
        data = cached_dataset(
            [c.to_dict() for c in self.train_cases],
            transform,
            cache_dir=Path(config.cache_dir) / "train" if config.cache_dir else None,
            key=preprocessing_key(self.contract, self.scheme),
        )
        workers = config.num_workers
        if workers is None:
            workers = (
                0 if self.device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) // max(self.world, 1) - 1))
            )
        self.sampler = _EpochSampler(len(data), self.world, self.rank, config.seed)
        return DataLoader(
            _Crops(data, transform, config.seed),
            batch_size=config.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=list_data_collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )

    # --- what users override --------------------------------------------------------------------------------------

    def build_loss(self) -> nn.Module:
        """The loss: ``config.loss`` for the contract's outputs (`loss_for`)."""
        return loss_for(self.contract, self.config.loss)

    def build_optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """The optimiser over parameter groups (each with its ``lr``; see `_parameter_groups`)."""
        c = self.config
        # One fused kernel over all parameters: 52 ms against 304 ms per AdamW step of unetr_brats on the CPU.
        fused = self.device.type in ("cpu", "cuda")
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                groups,
                lr=c.lr,
                momentum=c.momentum,
                nesterov=c.momentum > 0,
                weight_decay=c.weight_decay,
                fused=fused,
            )
        return torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay, fused=fused)

    def training_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one batch (forward under autocast; the loss in float32)."""
        image = _plain(batch["image"]).to(self.device, non_blocking=True)
        target = _plain(batch["label"]).to(self.device, non_blocking=True).float()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = self.network(image)
        return self.loss(logits.float(), target)

    # --- learning rates -------------------------------------------------------------------------------------------

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """Parameters grouped by learning-rate factor: layer-wise decay in the encoder, a factor for pretrained
        parameters; each group notes whether it belongs to the encoder (held while it is frozen)."""
        cfg = config_of(self.model)
        c = self.config
        pretrained, reinitialized = self._origin()
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        encoder = {n for n, _ in named if n.startswith(cfg.encoder)} if cfg.encoder else set()
        depth = self._depths([n for n, _ in named if n in encoder], cfg.encoder_blocks) if c.layer_decay else {}
        layers = max(depth.values(), default=0)
        groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
        for name, param in named:
            scale = c.layer_decay ** (layers + 1 - depth[name]) if name in depth else 1.0
            if pretrained and name not in reinitialized:
                scale *= c.pretrained_lr_scale
            groups.setdefault((scale, name in encoder), []).append(param)
        return [
            {"params": params, "lr": c.lr * scale, "encoder": is_encoder, "lr_scale": scale}
            for (scale, is_encoder), params in groups.items()
        ]

    def _origin(self) -> tuple[bool, set[str]]:
        """Whether the weights were loaded pretrained, and which were re-initialised: from the model's load
        report, or from the run folder when resuming (a resumed model is rebuilt from ``last/`` without one)."""
        if self._run_config is not None:
            model = self._run_config["model"]
            return bool(model.get("pretrained")), set(model.get("reinitialized", []))
        report = getattr(self.model, "load_report", None)
        return report is not None, set(getattr(report, "reinitialized", []))

    @staticmethod
    def _depths(names: list[str], pattern: str | None) -> dict[str, int]:
        """Encoder depth of each parameter: 0 before the first block (patch embedding), block ``i`` -> its rank
        among the blocks + 1, after the last block (a final norm) -> the number of blocks."""
        blocks = sorted({int(m.group(1)) for n in names if (m := re.match(pattern, n))})
        out, seen = {}, 0
        for name in names:
            match = re.match(pattern, name)
            seen = blocks.index(int(match.group(1))) + 1 if match else (seen and len(blocks))
            out[name] = seen
        return out

    def _lr_factor(self, group: dict[str, Any]) -> Any:
        """The schedule of one group as a function of the optimiser step: warm-up, then poly / cosine / constant;
        0 for the encoder while it is frozen."""
        c = self.config
        warmup = c.warmup_epochs * self.steps_per_epoch
        frozen = c.freeze_encoder_epochs * self.steps_per_epoch if group["encoder"] else 0

        def factor(step: int) -> float:
            if step < frozen:
                return 0.0
            if step < warmup:
                return (step + 1) / warmup
            total = max(1, self.horizon * self.steps_per_epoch)  # the budget may shorten the run as it goes
            t = min(1.0, (step - warmup) / max(1, total - warmup))
            if c.schedule == "poly":
                return (1 - t) ** 0.9
            if c.schedule == "cosine":
                return 0.5 * (1 + math.cos(math.pi * t))
            return 1.0

        return factor

    # --- the loop -------------------------------------------------------------------------------------------------

    def fit(self) -> list[dict[str, float]]:
        """Train until ``config.epochs`` (or early stopping, or the time budget); returns the metrics rows.

        Raises:
            TrainingError: A NaN/inf loss (with the epoch and batch; the last good checkpoint stays), or out of
                GPU memory (with the settings that lower it).
        """
        if self.is_main:  # the run folder's owner from before anything is deleted or written to the last epoch
            self.lock.acquire()
        try:
            return self._fit()
        finally:
            self.lock.release()

    def _fit(self) -> list[dict[str, float]]:
        self._prepare()
        config = self.config
        started = time.perf_counter()
        durations: list[float] = []
        if self.is_main and self.epoch == 0:
            logger.info(
                "training %s on %d cases, validating on %d; %s on %s%s",
                config_of(self.model).name,
                len(self.train_cases),
                len(self.val_cases),
                config.recipe,
                self.device,
                f" ({self.world} processes)" if self.world > 1 else "",
            )
        for callback in self.callbacks:
            callback.on_train_start(self)
        validated = bool(self.history) and "mean_dice" in self.history[-1]
        while self.epoch < config.epochs:
            if config.max_minutes is not None and durations:
                expected = time.perf_counter() - started + max(durations[-3:])
                if self._agree(expected > config.max_minutes * 60):
                    logger.info(
                        "stopping before epoch %d: the next epoch would pass the %g min budget",
                        self.epoch + 1,
                        config.max_minutes,
                    )
                    break
            epoch_start = time.perf_counter()
            row = self._train_epoch(self.epoch)
            last = self.epoch + 1 == config.epochs
            validated = (self.epoch + 1) % config.val_every == 0 or last
            if validated:
                row |= self.validate()
            row["seconds"] = time.perf_counter() - epoch_start
            durations.append(row["seconds"])
            if config.max_minutes is not None:  # the schedule ends where the budget is expected to end
                left = config.max_minutes * 60 - (time.perf_counter() - started)
                fits = self.epoch + 1 + max(0, int(left // statistics.mean(durations)))
                self.horizon = int(self._agree(min(config.epochs, fits)))
            self._end_epoch(row)
            if config.early_stopping is not None and self.stale >= config.early_stopping:
                logger.info("early stopping: %d validations without a better mean Dice", self.stale)
                break
        if not validated and self.history:  # stopped by the budget between validations: score the last epoch
            row = dict(self.history.pop())
            row |= self.validate()
            self.epoch -= 1
            self._end_epoch(row)
        for callback in self.callbacks:
            callback.on_train_end(self)
        return self.history

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        config = self.config
        self.network.train()
        self.sampler.set_epoch(epoch)
        total = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss sum, samples
        start = time.perf_counter()
        batches = len(self.train_loader)
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=None if self.is_main and config.progress else True,  # None: off where stderr is no terminal
            leave=False,
        )
        for i, batch in enumerate(bar):
            sync = (i + 1) % config.grad_accumulation == 0 or i + 1 == batches
            no_sync = self.network.no_sync if self.world > 1 and not sync else nullcontext
            try:
                with no_sync():
                    loss = self.training_step(batch)
                    self._check_finite(loss, epoch, i)
                    scaled = loss / config.grad_accumulation
                    (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                if sync:
                    self._optimizer_step()
            except torch.cuda.OutOfMemoryError:
                raise TrainingError(
                    f"out of GPU memory in epoch {epoch + 1}, batch {i + 1} ({self.device}): lower --batch-size "
                    f"(now {config.batch_size}; --grad-accumulation keeps the effective batch), use --amp bf16, or "
                    "a smaller roi"
                ) from None
            n = len(batch["image"])
            total += torch.tensor([loss.item() * n, n], dtype=torch.float64, device=self.device)
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{loss.item():.4f}", samples_per_s=f"{total[1].item() * self.world / elapsed:.2f}")
        bar.close()
        if self.world > 1:
            dist.all_reduce(total)
        seconds = time.perf_counter() - start
        return {
            "epoch": epoch + 1,
            "train_loss": total[0].item() / total[1].item(),
            "lr": max(g["lr"] for g in self.optimizer.param_groups),
            "samples_per_second": total[1].item() / seconds,
        }

    def _check_finite(self, loss: torch.Tensor, epoch: int, batch: int) -> None:
        finite = torch.isfinite(loss.detach()).to(torch.float32)
        if self.world > 1:  # every process stops together, or the others would wait in the gradient reduction
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not finite.item():
            raise TrainingError(
                f"the loss is {loss.item()} in epoch {epoch + 1}, "
                f"batch {batch + 1}; training stopped and {self.output / 'last'} keeps the last good epoch. "
                "Lower --lr, keep --grad-clip, or check the data (check-data)"
            )

    def _optimizer_step(self) -> None:
        clip = self.config.grad_clip
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    # --- validation -------------------------------------------------------------------------------------------------

    def validate(self) -> dict[str, float]:
        """Mean Dice per output over the validation cases, whole volumes on the model grid (sliding windows, as
        `Predictor` runs them); cases are shared out among processes."""
        start = time.perf_counter()
        mode = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        predictor = Predictor(
            self.model, device=self.device, amp=mode, overlap=self.config.overlap, compile=self.config.compile
        )
        channels = list(self.contract.out_channels)
        scored = foreground(channels, self.scheme)
        index = [channels.index(c) for c in scored]
        mine = []
        for i in range(self.rank, len(self.val_data), self.world):
            item = self.val_data[i]
            probs = predictor.probabilities(_plain(item["image"])[None])
            if self.contract.activation == "sigmoid":
                masks = probs > 0.5
            else:
                masks = F.one_hot(probs.argmax(0), len(channels)).movedim(-1, 0)
            mine.append(dice(masks[index], _plain(item["label"]).to(masks.device)[index]).tolist())
        scores = mine
        if self.world > 1:
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, mine)
            scores = [s for part in gathered for s in part]
        self.model.train()
        means = np.mean(np.asarray(scores, dtype=np.float64), axis=0)
        row = {f"dice_{c}": float(v) for c, v in zip(scored, means, strict=True)}
        row["mean_dice"] = float(means.mean())
        row["val_seconds"] = time.perf_counter() - start
        return row

    # --- end of an epoch: checkpoints, metrics, state ---------------------------------------------------------------

    def _end_epoch(self, row: dict[str, float]) -> None:
        self.history.append(row)
        self.epoch += 1
        improved = "mean_dice" in row and row["mean_dice"] > self.best
        if improved:
            self.best, self.stale = row["mean_dice"], 0
        elif "mean_dice" in row:
            self.stale += 1
        if self.is_main:
            try:
                if improved:
                    self._save_model(self.output / "best", row)
                self._save_model(self.output / "last", row)
                self._save_state()
                self._write_metrics()
            except (OSError, SafetensorError) as exc:  # a full disk, a folder gone: every write is atomic
                raise TrainingError(
                    f"cannot write epoch {self.epoch}'s results into {self.output} ({type(exc).__name__}: {exc}); "
                    f"nothing written is partial. {self.run_folder.resume_hint()}"
                ) from None
            logger.info(
                "epoch %d/%d: loss %.4f%s, %.2f samples/s, %.0f s%s",
                row["epoch"],
                self.config.epochs,
                row["train_loss"],
                "".join(f", {k.removeprefix('dice_')} {v:.4f}" for k, v in row.items() if k.startswith("dice_"))
                + (f", mean Dice {row['mean_dice']:.4f}" if "mean_dice" in row else ""),
                row["samples_per_second"],
                row["seconds"],
                " (best)" if improved else "",
            )
        self._barrier()
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)

    def _save_model(self, folder: Path, row: dict[str, float]) -> None:
        validated = next((r for r in reversed(self.history) if "mean_dice" in r), None)
        cfg = config_of(self.model)
        metrics = {k: round(v, 4) for k, v in (validated or {}).items() if k.startswith(("dice_", "mean_dice"))}
        if validated:
            metrics["data"] = (
                f"validation split of {self.dataset.root.name} ({len(self.val_cases)} cases), epoch "
                f"{validated['epoch']}, on the model grid"
            )
        self.model.pretrained_cfg = cfg.replace(metrics=metrics)
        save_pretrained(self.model, folder)

    def _save_state(self) -> None:
        state = {
            "format": STATE_FORMAT,
            "epoch": self.epoch,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "best": self.best,
            "stale": self.stale,
            "horizon": self.horizon,
            "history": self.history,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                "numpy_pos": int(np.random.get_state()[2]),
                "python": random.getstate(),
            },
        }
        atomic_write(self.run_folder.state_path, lambda tmp: torch.save(state, tmp))

    def _load_state(self) -> None:
        path = self.run_folder.state_path
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"format {state.get('format')!r}, expected {STATE_FORMAT}")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state["scaler"] is not None:
                self.scaler.load_state_dict(state["scaler"])
            rng = state["rng"]
        except Exception as exc:  # torch.load raises many types for damaged files
            last = self.output / "last"
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
        self.epoch, self.best, self.stale = int(state["epoch"]), float(state["best"]), int(state["stale"])
        self.horizon = int(state["horizon"])
        planned = int(self._run_config["config"]["epochs"])
        if self.config.epochs != planned:
            # The schedule spanned the planned epochs (and ended at its last rate, 0 for cosine and poly): it is
            # stretched over the new number, so the added epochs train at the rates of that longer schedule.
            self.horizon = self.config.epochs
            step = self.scheduler.last_epoch
            for group, factor in zip(self.optimizer.param_groups, self.scheduler.lr_lambdas, strict=True):
                group["lr"] = group["initial_lr"] * factor(step)  # the next step's rate, on the new schedule
            logger.info(
                "epochs changed from %d to %d: the learning-rate schedule now spans %d epochs",
                planned,
                self.config.epochs,
                self.config.epochs,
            )
        self.history = [dict(r) for r in state["history"]]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_pos"]))
        random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in rng["python"]))
        if self.epoch >= self.config.epochs:
            logger.info("the run has completed %d of %d epochs; nothing to do", self.epoch, self.config.epochs)

    def _write_metrics(self) -> None:
        columns: list[str] = []
        for row in self.history:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write(self.output / "metrics.csv", lambda tmp: Path(tmp).write_text(buffer.getvalue()))
        if "mean_dice" in self.history[-1]:  # drawing costs ~0.3 s: once per validation
            self._plot()
        self._tensorboard(self.history[-1])

    def _plot(self) -> None:
        from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

        val = [r for r in self.history if "mean_dice" in r]
        fig = Figure(figsize=(10, 4))
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.22)
        left, right = fig.subplots(1, 2)
        left.plot([r["epoch"] for r in self.history], [r["train_loss"] for r in self.history], color="black")
        left.set(xlabel="epoch", ylabel="training loss (Dice + CE)", title="Loss")
        epochs = [r["epoch"] for r in val]
        for key in [k for k in val[0] if k.startswith("dice_")]:
            right.plot(epochs, [r[key] for r in val], marker="o", label=key.removeprefix("dice_"))
        right.plot(epochs, [r["mean_dice"] for r in val], color="black", lw=2, label="mean")
        right.legend(loc="lower right")
        right.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0, 1))
        atomic_write(self.output / "curves.png", lambda tmp: fig.savefig(tmp, dpi=100))

    def _tensorboard(self, row: dict[str, float]) -> None:
        if not hasattr(self, "_writer"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional
                self._writer = None
            else:
                self._writer = SummaryWriter(str(self.output / "tensorboard"))
        if self._writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    self._writer.add_scalar(key, value, int(row["epoch"]))
            self._writer.flush()

    def _agree(self, value: float) -> float:
        """Rank 0's value on every process (decisions from timings, which differ between processes)."""
        if self.world > 1:
            shared = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
            dist.broadcast(shared, src=0)
            return shared.item()
        return value

    def _barrier(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    # --- after training -------------------------------------------------------------------------------------------

    def evaluate(self, split: str = "val", *, checkpoint: str = "best") -> Evaluation:
        """Per-case and mean Dice / HD95 of a checkpoint of this run, each case predicted on its own grid.

        Args:
            split: ``"val"`` (the run's validation cases), ``"train"`` or ``"all"`` (every labelled case).
            checkpoint: ``"best"`` or ``"last"``; the model in memory when the run has not saved it yet.
        """
        cases = {"val": self.val_cases, "train": self.train_cases, "all": [c for c in self.dataset.cases if c.label]}
        if split not in cases:
            raise TrainingError(f"unknown split {split!r}; expected val, train or all")
        folder = self.output / checkpoint
        model = from_pretrained(folder) if (folder / "model.safetensors").is_file() else self.model
        mode = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        return evaluate(
            model,
            cases[split],
            self.scheme,
            device=str(self.device),
            amp=mode,
            overlap=self.config.overlap,
            progress=self.config.progress and self.is_main,
            channels=self.dataset.channels,
        )
