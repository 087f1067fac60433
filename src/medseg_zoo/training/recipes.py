"""The training configuration and its named recipes.

``TrainConfig()`` holds the defaults, chosen by measurement: ``benchmarks/sweep_defaults.py`` trains ``unet_brats``
for 400 steps on 8 synthetic cases with six optimiser settings. With Dice + binary cross-entropy per region, AdamW
at 1e-2 with cosine decay reached a validation Dice of 0.875, within run-to-run noise of the best (AdamW 3e-3,
0.879; SGD with Nesterov momentum 0.99 at 3e-2, 0.874; nnU-Net's SGD at 1e-2, 0.869), and the seed's AdamW at
1e-4 reached 0.25: small data sets give few steps, and low rates learn too little in them. (With MONAI's
``DiceCELoss``, softmax across the regions, only the rates of 1e-2 and above learned: 0.58 and 0.56.) The named
recipes reproduce the seed tutorial's runs exactly.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

from medseg_zoo._device import AMP_MODES
from medseg_zoo.errors import TrainingError
from medseg_zoo.training.losses import LOSSES

__all__ = ["RECIPES", "RESUMABLE_CHANGES", "TrainConfig", "list_recipes", "recipe"]


# Fields a resumed run may change: where and how fast it runs, how long, how often it validates. The others
# decide what is learned; a run resumed with other values would not be the run it continues.
RESUMABLE_CHANGES = (
    "output",
    "epochs",
    "device",
    "num_workers",
    "cache_dir",
    "val_every",
    "overlap",
    "early_stopping",
    "max_minutes",
    "progress",
    "compile",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run besides the model and the data.

    Attributes:
        output: Run folder (``best/``, ``last/``, ``trainer_state.pt``, ``metrics.csv``, ``curves.png``,
            ``config.json``, ``train.log``).
        epochs: Passes over the training cases (one random roi crop per case and pass).
        batch_size: Crops per optimiser step and process.
        optimizer: ``"sgd"`` (Nesterov momentum) or ``"adamw"``.
        lr: Peak learning rate.
        weight_decay: Weight decay (decoupled for AdamW).
        momentum: SGD momentum.
        schedule: ``"poly"`` (nnU-Net's (1 - t)^0.9), ``"cosine"`` or ``"constant"``, after the warm-up.
        warmup_epochs: Linear warm-up from 0 over this many epochs (again for the whole network when a frozen
            encoder joins).
        grad_accumulation: Batches whose gradients are summed before each optimiser step.
        grad_clip: Maximum gradient norm, or ``None``.
        loss: ``"dice_ce"`` (Dice + binary cross-entropy per region for sigmoid contracts, Dice + cross-entropy
            for softmax ones) or ``"monai_dice_ce"`` (MONAI's ``DiceCELoss`` as the seed tutorial called it); see
            `medseg_zoo.training.loss_for`.
        amp: ``"auto"`` (bf16 on CUDA, fp16 with a gradient scaler on GPUs without bf16, float32 on the CPU),
            ``"bf16"``, ``"fp16"`` (CUDA only) or ``"off"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``; under ``torchrun`` each process takes its local
            rank's GPU.
        val_every: Validate every this many epochs (and after the last).
        val_fraction: Fraction of the cases held out for validation (ignored with ``fold``).
        fold: ``(k, n)`` or ``"k/n"``: validate on fold ``k`` (0-based) of ``n``.
        seed: Seeds the split, the initial order and every random crop and augmentation.
        num_workers: DataLoader worker processes; ``None`` picks 0 on the CPU (the workers would take the cores
            the network needs) and up to 8 with a GPU.
        cache_dir: Folder for the preprocessed cases (MONAI PersistentDataset); ``None`` keeps them in memory.
        foreground_ratio: Fraction of crops centred on a labelled voxel; 0 draws crops uniformly.
        early_stopping: Stop after this many validations without a better mean Dice; ``None`` never stops early.
        freeze_encoder_epochs: Epochs at the start during which the encoder (the configuration's ``encoder``
            parameters) keeps its weights (learning rate 0) and the fresh parts train alone; the schedule starts
            when it joins (see `medseg_zoo.training.learning.lr_factor`).
        layer_decay: Layer-wise learning-rate decay for transformer encoders: block ``i`` of ``L`` trains at
            ``lr * layer_decay ** (L + 1 - i)``; ``None`` for a flat rate.
        pretrained_lr_scale: Learning-rate factor of loaded pretrained parameters against re-initialised ones
            (the head after ``out_channels`` changed).
        max_minutes: Stop before an epoch that would end after this budget (validating the last one); the
            learning-rate schedule then ends where the budget is expected to end.
        overlap: Sliding-window overlap of validation.
        progress: Progress bars and epoch lines on the console.
        compile: Run the training step and validation through ``torch.compile`` (the same numbers within float
            rounding; faster on GPUs after a warm-up of tens of seconds, per process and roi).
        recipe: Name of the recipe the values came from.
    """

    output: str | os.PathLike = "runs/medseg"
    epochs: int = 100
    batch_size: int = 2
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 1e-2
    weight_decay: float = 1e-5
    momentum: float = 0.99
    schedule: Literal["poly", "cosine", "constant"] = "cosine"
    warmup_epochs: int = 0
    grad_accumulation: int = 1
    grad_clip: float | None = 12.0
    loss: Literal["dice_ce", "monai_dice_ce"] = "dice_ce"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    device: str = "auto"
    val_every: int = 5
    val_fraction: float = 0.2
    fold: tuple[int, int] | str | None = None
    seed: int = 0
    num_workers: int | None = None
    cache_dir: str | None = None
    foreground_ratio: float = 0.33
    early_stopping: int | None = None
    freeze_encoder_epochs: int = 0
    layer_decay: float | None = None
    pretrained_lr_scale: float = 1.0
    max_minutes: float | None = None
    overlap: float = 0.5
    progress: bool = True
    recipe: str = "default"
    compile: bool = False

    def __post_init__(self) -> None:
        problems = []

        def need(ok: bool, field: str, expected: str) -> None:
            if not ok:
                problems.append(f"{field}={getattr(self, field)!r} (expected {expected})")

        def integer(field: str, low: int) -> None:
            value = getattr(self, field)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= low, field, f"an integer >= {low}")

        def number(field: str, low: float, high: float = math.inf, *, open_low: bool = False, open_high=False) -> None:
            value = getattr(self, field)
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
            bounds = f"{'>' if open_low else '>='} {low}"
            if high != math.inf:
                bounds += f" and {'<' if open_high else '<='} {high}"
            need(ok, field, f"a finite number {bounds}")

        output = self.output
        need(isinstance(output, str | os.PathLike) and str(output).strip() != "", "output", "a folder path")
        if isinstance(output, os.PathLike):
            object.__setattr__(self, "output", os.fspath(output))
        object.__setattr__(self, "fold", _fold(self.fold))
        for field in ("epochs", "batch_size", "grad_accumulation", "val_every"):
            integer(field, 1)
        for field in ("warmup_epochs", "freeze_encoder_epochs", "seed"):
            integer(field, 0)
        number("lr", 0, open_low=True)
        number("weight_decay", 0)
        number("momentum", 0, 1)
        number("foreground_ratio", 0, 1)
        number("pretrained_lr_scale", 0)
        number("overlap", 0, 1, open_high=True)
        number("val_fraction", 0, 1, open_low=True, open_high=True)
        need(self.optimizer in ("sgd", "adamw"), "optimizer", "'sgd' or 'adamw'")
        need(self.loss in LOSSES, "loss", " or ".join(map(repr, LOSSES)))
        need(self.schedule in ("poly", "cosine", "constant"), "schedule", "'poly', 'cosine' or 'constant'")
        need(self.amp in AMP_MODES, "amp", " or ".join(map(repr, AMP_MODES)))
        need(isinstance(self.device, str), "device", "a device name such as 'auto', 'cpu' or 'cuda:0'")
        need(isinstance(self.progress, bool), "progress", "True or False")
        need(isinstance(self.compile, bool), "compile", "True or False")
        need(isinstance(self.recipe, str), "recipe", "a recipe name")
        need(
            self.cache_dir is None or (isinstance(self.cache_dir, str | os.PathLike) and str(self.cache_dir).strip()),
            "cache_dir",
            "a folder path or None",
        )
        if isinstance(self.cache_dir, os.PathLike):
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
        if self.grad_clip is not None:
            number("grad_clip", 0, open_low=True)
        if self.num_workers is not None:
            integer("num_workers", 0)
        if self.early_stopping is not None:
            integer("early_stopping", 1)
        if self.layer_decay is not None:
            number("layer_decay", 0, 1, open_low=True)
        if self.max_minutes is not None:
            number("max_minutes", 0, open_low=True)
        f = self.fold
        if f is not None:
            ok = (
                isinstance(f, tuple)
                and len(f) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in f)
                and f[1] >= 2
                and 0 <= f[0] < f[1]
            )
            need(
                ok,
                "fold",
                "k/n or (k, n) with n >= 2 and 0 <= k < n: '0/5' or (0, 5) validates on the first of 5 folds",
            )
        if problems:
            raise TrainingError(f"invalid training configuration: {'; '.join(problems)}")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (checked again)."""
        fields = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise TrainingError(f"TrainConfig has no field {', '.join(unknown)}; its fields: {', '.join(fields)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-serialisable values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The inverse of `to_dict` (unknown keys are refused)."""
        return cls().replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# The seed tutorial's loop: AdamW at a constant 1e-4, weight decay 1e-5, batch 2, uniform roi crops, no clipping,
# MONAI's DiceCELoss(sigmoid=True), validation every 5 epochs; 180 epochs (170 for the UNet). Its roi
# (128 x 128 x 64) and spacing (1.5 x 1.5 x 2.0) are the models' contract. Target numbers: UNet 76.6 %, UNETR
# (self-attention-cv) 76.9 %, MONAI UNETR 76.1 %.
_SEED = {
    "optimizer": "adamw",
    "lr": 1e-4,
    "weight_decay": 1e-5,
    "schedule": "constant",
    "warmup_epochs": 0,
    "batch_size": 2,
    "grad_clip": None,
    "loss": "monai_dice_ce",
    "foreground_ratio": 0.0,
    "val_every": 5,
}

# The publishers' fine-tuning settings of the pretrained starting points (roi and spacing are the models' contract).
_OPENMIND = {  # TaWald/nnUNet PretrainedTrainer: nnU-Net's SGD from 1e-3 after a 50-epoch linear warm-up, poly
    "optimizer": "sgd",
    "lr": 1e-3,
    "momentum": 0.99,
    "weight_decay": 3e-5,
    "schedule": "poly",
    "warmup_epochs": 50,
    "epochs": 1000,
    "batch_size": 2,
}
# nnU-Net's supervised transfer (documentation/pretraining_and_finetuning.md, run/load_pretrained_weights.py): every
# tensor but the segmentation layers loaded (a missing or mis-shaped one is an error), then its ordinary recipe.
_NNUNET = {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.99, "weight_decay": 3e-5, "schedule": "poly", "epochs": 1000}
_MONAI_FINE_TUNING = {  # research-contributions' SwinUNETR scripts: AdamW 1e-4, warm-up then cosine, batch 1
    "optimizer": "adamw",
    "lr": 1e-4,
    "weight_decay": 1e-5,
    "schedule": "cosine",
    "warmup_epochs": 50,
    "batch_size": 1,
}

RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("the zoo's defaults (AdamW 1e-2, cosine decay, clipping at 12; measured, see Benchmarks)", {}),
    "unetr_brats": (
        "the seed tutorial's UNETR (self-attention-cv) run on MSD Task01, 180 epochs",
        {**_SEED, "epochs": 180},
    ),
    "unetr_monai": ("the seed tutorial's MONAI UNETR run on MSD Task01, 180 epochs", {**_SEED, "epochs": 180}),
    "unet_brats": ("the seed tutorial's MONAI UNet run on MSD Task01, 170 epochs", {**_SEED, "epochs": 170}),
    "openmind": (
        "OpenMind's ResEnc-L fine-tuning (nnssl's PretrainedTrainer): SGD 1e-3, 50-epoch warm-up, poly",
        _OPENMIND,
    ),
    "openmind_sawtooth": (
        "nnssl's PretrainedTrainer_sawtooth: the decoder alone for 50 epochs (encoder frozen, warming up), then a "
        "50-epoch warm-up of the whole network, SGD 1e-3, poly, 1000 epochs",
        {**_OPENMIND, "freeze_encoder_epochs": 50},
    ),
    "nnunet": (
        "nnU-Net's supervised fine-tuning (-pretrained_weights): its ordinary recipe, SGD 1e-2 with Nesterov "
        "momentum 0.99, poly, 1000 epochs",
        _NNUNET,
    ),
    "openmind_primus": (
        "OpenMind's Primus fine-tuning (PretrainedTrainer_Primus): AdamW 1e-4, weight decay 5e-2, 50-epoch warm-up, "
        "poly, clipping at 1",
        {**_OPENMIND, "optimizer": "adamw", "lr": 1e-4, "weight_decay": 5e-2, "grad_clip": 1.0},
    ),
    "swin_unetr_ssl": (
        "research-contributions' Swin UNETR BTCV fine-tuning from the self-supervised encoder: AdamW 1e-4, cosine",
        {**_MONAI_FINE_TUNING, "epochs": 5000, "val_every": 100},
    ),
    "swin_unetr_brats21": (
        "research-contributions' Swin UNETR BraTS 2021 training: AdamW 1e-4, cosine, 300 epochs",
        {**_MONAI_FINE_TUNING, "epochs": 300},
    ),
    "suprem": (
        "SuPreM's target-task fine-tuning: AdamW 1e-4, weight decay 1e-5, 20-epoch warm-up, cosine, 201 epochs",
        {**_MONAI_FINE_TUNING, "warmup_epochs": 20, "epochs": 201},
    ),
}


def _fold(value: Any) -> Any:
    """``"k/n"`` or a list as ``(k, n)``; anything else is left for the check to name."""
    if isinstance(value, str):
        parts = value.split("/")
        if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            return (int(parts[0]), int(parts[1]))
        return value
    if isinstance(value, list):
        return tuple(value)
    return value


def list_recipes() -> list[str]:
    """Names of the training recipes."""
    return sorted(RECIPES)


def recipe(name: str, **changes: Any) -> TrainConfig:
    """The configuration of a named recipe, with ``changes`` applied on top.

    Raises:
        TrainingError: For an unknown recipe (the message lists them) or an invalid change.
    """
    if name not in RECIPES:
        raise TrainingError(f"unknown recipe {name!r}; recipes: {', '.join(list_recipes())}")
    return TrainConfig(recipe=name, **RECIPES[name][1]).replace(**changes)
