"""The Trainer: fine-tune a zoo model on a discovered data set, with validation, checkpoints and resume.

The loop is plain PyTorch a user can read and copy: a DataLoader of random roi crops, forward under autocast, a
loss from the model's contract, backward, clip, step; sliding-window validation on whole volumes every few epochs;
``best/`` and ``last/`` checkpoints in the ``save_pretrained`` layout. Under ``torchrun`` the same code runs with
DistributedDataParallel, one process per GPU (or gloo processes on the CPU). What feeds it is
`medseg_zoo.training.feeding`'s, how parameters learn `medseg_zoo.training.learning`'s, what it reports
`medseg_zoo.training.reporting`'s callbacks, and what it keeps `medseg_zoo.training.state`'s.

Customise by overriding `Trainer.build_loss`, `Trainer.build_optimizer` or `Trainer.training_step`, or by
passing `Callback` objects:

```python
class FocalTrainer(Trainer):
    def build_loss(self):
        return monai.losses.DiceFocalLoss(sigmoid=True)
```
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from torch import nn
from tqdm import tqdm

from medseg_zoo._contract import config_of
from medseg_zoo._device import agree, amp_dtype, barrier, process
from medseg_zoo._guard import check_output_folder
from medseg_zoo._lock import RunLock, refuse_owned
from medseg_zoo.data.checks import check_dataset
from medseg_zoo.data.discovery import DataSet
from medseg_zoo.errors import TrainingError
from medseg_zoo.hub import from_pretrained
from medseg_zoo.inference.predictor import Predictor
from medseg_zoo.training import feeding, learning, reporting, state
from medseg_zoo.training.evaluation import Evaluation, evaluate, model_grid_dice
from medseg_zoo.training.feeding import plain
from medseg_zoo.training.losses import loss_for
from medseg_zoo.training.recipes import TrainConfig
from medseg_zoo.training.reporting import Callback, default_callbacks, start_logging
from medseg_zoo.training.run_folder import RunFolder
from medseg_zoo.transforms.labels import LabelScheme
from medseg_zoo.transforms.presets import data_scheme

__all__ = ["Callback", "Trainer"]

logger = logging.getLogger("medseg_zoo.training")
AMP_NAMES = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}


class Trainer:
    """Fine-tunes a zoo model on a data set.

    Args:
        model: From `medseg_zoo.create_model` or `medseg_zoo.from_pretrained`; its contract decides
            preprocessing, loss and outputs. Its label scheme becomes the data's.
        data: A data set folder (MSD, nnU-Net v2 raw, or image/label pairs with ``label_scheme``) or a
            `DataSet`.
        config: How to train (default ``TrainConfig()``); see `medseg_zoo.training.recipe` for named ones.
        label_scheme: The label scheme of a folder of pairs (or to override a dataset.json's).
        val_data: A separate validation set (a folder or `DataSet` with the same channels and labels): every
            labelled case of ``data`` then trains, and ``val_fraction`` / ``fold`` do not apply.
        resume: Continue the run in ``config.output`` from its last completed epoch.
        overwrite: Replace an existing run in ``config.output``.
        callbacks: `Callback` objects, called after the built-in reports (metrics table, curves, TensorBoard,
            epoch lines: `medseg_zoo.training.reporting`).

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
        val_data: str | os.PathLike | DataSet | None = None,
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
        reporting.check_callbacks(callbacks)
        self.dataset = feeding.data_set(data, label_scheme)
        cfg = config_of(model)
        me, self.device = process(config.device)
        self.rank, self.world = me.rank, me.world
        self.amp_dtype = amp_dtype(self.device, config.amp, cpu_auto=False)
        self.output = Path(config.output)
        if self.rank == 0:  # one owner at a time, this process's other runs included; under torchrun rank 0 owns
            refuse_owned(self.output, allow_self=False)
        self.run_folder = RunFolder(self.output)
        self.lock = RunLock(self.output)
        self.callbacks = [*default_callbacks(), *callbacks]
        self.resume = resume

        self.run_record = state.read_run(self, cfg) if resume else None
        self.val_dataset = feeding.data_set(val_data, label_scheme) if val_data is not None else None
        self.warnings = []
        for dataset in filter(None, (self.dataset, self.val_dataset)):
            report = check_dataset(dataset, cfg.contract)
            report.raise_for_errors()
            self.warnings += [str(p) for p in report.problems]
        if self.run_record is not None:
            state.check_val_data(self, self.run_record)
        feeding.check_val_data(self.dataset, self.val_dataset)
        self.scheme = data_scheme(cfg.contract, self.dataset.scheme)
        outputs = self.scheme.channels if self.scheme.exclusive else cfg.contract.out_channels
        self.contract = dataclasses.replace(
            cfg.contract, out_channels=outputs, label_scheme=state.scheme_value(self.scheme)
        )
        self.model = model
        learning.check_model_options(cfg, config)

        recorded = self.run_record["split"] if self.run_record is not None else None
        self.train_cases, self.val_cases = feeding.split_cases(self.dataset, config, recorded, self.val_dataset)
        roi = feeding.roi_warning(self.train_cases, self.contract)
        self.warnings += [roi] if roi else []
        self.warnings += learning.schedule_warnings(config)
        feeding.check_batch(config, self.world, len(self.train_cases))
        protected = {"the data set": self.dataset.root}
        if self.val_dataset is not None:
            protected["the validation set"] = self.val_dataset.root
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
        self.improved = False  # whether the last epoch's validation was the best yet
        self._prepared = False

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.rank == 0

    def origin(self) -> tuple[bool, set[str]]:
        """Whether the weights were loaded pretrained, and which were re-initialised: from the model's load
        report, or from the run folder when resuming (a resumed model is rebuilt from ``last/`` without one)."""
        if self.run_record is not None:
            model = self.run_record["model"]
            return bool(model.get("pretrained")), set(model.get("reinitialized", []))
        report = getattr(self.model, "load_report", None)
        return report is not None, set(getattr(report, "reinitialized", []))

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
            start_logging(self.output, config.progress)
            if not self.resume:  # a resumed run's record is updated once its state has been read
                state.write_run_config(self)
        barrier(self.world)
        if self.is_main:
            for warning in self.warnings:
                logger.warning(warning)
            if not self.resume:  # what the run starts from, in one line (config.json records it too)
                report = getattr(self.model, "load_report", None)
                logger.info("start: %s %s", config_of(self.model).name, report or "from scratch (nothing loaded)")

        # The trained model's outputs map to the data's labels: its checkpoints carry the data's label scheme.
        self.model.pretrained_cfg = config_of(self.model).replace(contract=self.contract)
        self.model.to(self.device)
        self.loss = self.build_loss()
        pretrained, reinitialized = self.origin()
        groups = learning.parameter_groups(self.model, config, pretrained=pretrained, reinitialized=reinitialized)
        self.optimizer = self.build_optimizer(groups)
        self.train_loader, self.sampler = feeding.train_loader(
            self.train_cases, self.contract, self.scheme, config, device=self.device, world=self.world, rank=self.rank
        )
        self.steps_per_epoch = math.ceil(len(self.train_loader) / config.grad_accumulation)
        factors = [
            learning.lr_factor(config, group, self.steps_per_epoch, lambda: self.horizon)
            for group in self.optimizer.param_groups
        ]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factors)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.val_data = feeding.validation_data(self.val_cases, self.contract, self.scheme, config)
        if self.resume:
            state.load_state(self)
            if self.is_main:
                state.write_run_config(self)
        self.network = (
            nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if self.world > 1
            else self.model
        )
        if config.compile:  # the parameters stay the model's: checkpoints and the optimizer see no wrapper
            self.network = torch.compile(self.network)

    # --- what users override --------------------------------------------------------------------------------------

    def build_loss(self) -> nn.Module:
        """The loss: ``config.loss`` for the contract's outputs (`loss_for`)."""
        return loss_for(self.contract, self.config.loss)

    def build_optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """The optimiser over parameter groups (each with its ``lr``; see
        `medseg_zoo.training.learning.parameter_groups`)."""
        return learning.build_optimizer(self.config, groups, self.device)

    def training_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one batch (forward under autocast; the loss in float32)."""
        image = plain(batch["image"]).to(self.device, non_blocking=True)
        target = plain(batch["label"]).to(self.device, non_blocking=True).float()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = self.network(image)
        return self.loss(logits.float(), target)

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
        self._call("on_train_start")
        validated = bool(self.history) and "mean_dice" in self.history[-1]
        while self.epoch < config.epochs:
            if config.max_minutes is not None and durations:
                expected = time.perf_counter() - started + max(durations[-3:])
                if agree(expected > config.max_minutes * 60, self.world, self.device):
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
                self.horizon = int(agree(min(config.epochs, fits), self.world, self.device))
            self._end_epoch(row)
            if config.early_stopping is not None and self.stale >= config.early_stopping:
                logger.info("early stopping: %d validations without a better mean Dice", self.stale)
                break
        if not validated and self.history:  # stopped by the budget between validations: score the last epoch
            row = dict(self.history.pop())
            row |= self.validate()
            self.epoch -= 1
            self._end_epoch(row)
        self._call("on_train_end")
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
                    learning.step(self.optimizer, self.scheduler, self.scaler, self.model, self.config.grad_clip)
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

    def validate(self) -> dict[str, float]:
        """Mean Dice per output over the validation cases, whole volumes on the model grid (sliding windows, as
        `Predictor` runs them); cases are shared out among processes."""
        start = time.perf_counter()
        predictor = Predictor(
            self.model,
            device=self.device,
            amp=AMP_NAMES[self.amp_dtype],
            overlap=self.config.overlap,
            compile=self.config.compile,
        )
        row = model_grid_dice(predictor, self.val_data, self.scheme, rank=self.rank, world=self.world)
        self.model.train()
        return {**row, "val_seconds": time.perf_counter() - start}

    def _end_epoch(self, row: dict[str, float]) -> None:
        """Checkpoints and state of a completed epoch (rank 0), then the callbacks (the reports first)."""
        self.history.append(row)
        self.epoch += 1
        self.improved = "mean_dice" in row and row["mean_dice"] > self.best
        if self.improved:
            self.best, self.stale = row["mean_dice"], 0
        elif "mean_dice" in row:
            self.stale += 1
        if self.is_main:
            with self._writing():
                if self.improved:
                    state.save_model(self, self.output / "best")
                state.save_model(self, self.output / "last")
                state.save_state(self)
        barrier(self.world)
        self._call("on_epoch_end", row)

    def _call(self, hook: str, *args: Any) -> None:
        with self._writing():
            for callback in self.callbacks:
                getattr(callback, hook)(self, *args)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write (a full disk, a folder gone) as a TrainingError saying how to go on; every write is
        atomic, so nothing written is partial."""
        try:
            yield
        except (OSError, SafetensorError) as exc:
            raise TrainingError(
                f"cannot write epoch {self.epoch}'s results into {self.output} ({type(exc).__name__}: {exc}); "
                f"nothing written is partial. {self.run_folder.resume_hint()}"
            ) from None

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
        return evaluate(
            model,
            cases[split],
            self.scheme,
            device=str(self.device),
            amp=AMP_NAMES[self.amp_dtype],
            overlap=self.config.overlap,
            progress=self.config.progress and self.is_main,
            channels=self.dataset.channels,
        )
