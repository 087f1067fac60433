"""How parameters learn: groups by learning-rate factor (layer-wise decay in the encoder, a factor for pretrained
parameters), the frozen encoder, the warm-up and the schedule after it, and the optimiser over the groups. The
transfer recipes are settings of these."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection
from typing import Any

import torch
from torch import nn

from medseg_zoo._contract import ModelConfig, config_of
from medseg_zoo.errors import TrainingError
from medseg_zoo.training.recipes import TrainConfig

__all__ = [
    "build_optimizer",
    "check_model_options",
    "encoder_depths",
    "lr_factor",
    "parameter_groups",
    "schedule_warnings",
    "step",
]


def check_model_options(cfg: ModelConfig, config: TrainConfig) -> None:
    """Refuse encoder options for a model whose configuration names no encoder (blocks).

    Raises:
        TrainingError: Naming the model and the option.
    """
    if (config.freeze_encoder_epochs or config.layer_decay) and not cfg.encoder:
        raise TrainingError(
            f"{cfg.name} names no encoder ({cfg.architecture}), so freeze_encoder_epochs and layer_decay do "
            "not apply: use a model whose configuration names its encoder (unetr_*, swin_unetr_*, segresnet_*)"
        )
    if config.layer_decay and not cfg.encoder_blocks:
        raise TrainingError(f"{cfg.name} names no encoder blocks, so layer_decay does not apply")


def schedule_warnings(config: TrainConfig) -> list[str]:
    """Settings that train, but not as the user likely meant: a warm-up as long as the run."""
    if config.warmup_epochs >= config.epochs:
        return [
            f"warning: warmup_epochs={config.warmup_epochs} is not fewer than epochs={config.epochs}: the learning "
            f"rate never reaches lr={config.lr:g}; use fewer warm-up epochs (--warmup-epochs) or more epochs"
        ]
    return []


def encoder_depths(names: list[str], pattern: str | None) -> dict[str, int]:
    """Encoder depth of each parameter: 0 before the first block (patch embedding), block ``i`` -> its rank
    among the blocks + 1, after the last block (a final norm) -> the number of blocks."""
    blocks = sorted({int(m.group(1)) for n in names if (m := re.match(pattern, n))})
    out, seen = {}, 0
    for name in names:
        match = re.match(pattern, name)
        seen = blocks.index(int(match.group(1))) + 1 if match else (seen and len(blocks))
        out[name] = seen
    return out


def parameter_groups(
    model: nn.Module, config: TrainConfig, *, pretrained: bool, reinitialized: Collection[str]
) -> list[dict[str, Any]]:
    """The model's trainable parameters grouped by learning-rate factor: ``lr * layer_decay ** (L + 1 - depth)``
    in the encoder, times ``pretrained_lr_scale`` for loaded (not re-initialised) parameters of a pretrained
    start. Each group notes whether it belongs to the encoder (held while it is frozen) and its factor."""
    cfg = config_of(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    encoder = {n for n, _ in named if n.startswith(cfg.encoder)} if cfg.encoder else set()
    depth = encoder_depths([n for n, _ in named if n in encoder], cfg.encoder_blocks) if config.layer_decay else {}
    layers = max(depth.values(), default=0)
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, param in named:
        scale = config.layer_decay ** (layers + 1 - depth[name]) if name in depth else 1.0
        if pretrained and name not in reinitialized:
            scale *= config.pretrained_lr_scale
        groups.setdefault((scale, name in encoder), []).append(param)
    return [
        {"params": params, "lr": config.lr * scale, "encoder": is_encoder, "lr_scale": scale}
        for (scale, is_encoder), params in groups.items()
    ]


def lr_factor(
    config: TrainConfig, group: dict[str, Any], steps_per_epoch: int, horizon: Callable[[], int]
) -> Callable[[int], float]:
    """The schedule of one group as a function of the optimiser step (``horizon()`` is read at every step: a time
    budget may shorten the run as it goes).

    Without a frozen encoder: a linear warm-up over ``warmup_epochs``, then poly / cosine / constant. With
    ``freeze_encoder_epochs`` (nnssl's "sawtooth"): the fresh parts train alone first (warming up, then at the full
    rate) while the encoder's rate is 0; when the encoder joins, the whole network warms up again and the schedule
    runs from the end of that warm-up.
    """
    warmup = config.warmup_epochs * steps_per_epoch
    joined = config.freeze_encoder_epochs * steps_per_epoch
    frozen = joined if group["encoder"] else 0

    def factor(step: int) -> float:
        if step < frozen:
            return 0.0
        if step < joined:  # the fresh parts alone
            return min(1.0, (step + 1) / warmup) if warmup else 1.0
        if step - joined < warmup:
            return (step - joined + 1) / warmup
        total = max(1, horizon() * steps_per_epoch)
        t = min(1.0, (step - joined - warmup) / max(1, total - joined - warmup))
        if config.schedule == "poly":
            return (1 - t) ** 0.9
        if config.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return factor


def build_optimizer(config: TrainConfig, groups: list[dict[str, Any]], device: torch.device) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or AdamW over the parameter groups (each with its ``lr``)."""
    # One fused kernel over all parameters: 52 ms against 304 ms per AdamW step of unetr_brats on the CPU.
    fused = device.type in ("cpu", "cuda")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
            fused=fused,
        )
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def step(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    model: nn.Module,
    clip: float | None,
) -> None:
    """One optimiser step on the accumulated gradients: unscale (fp16), clip, step, zero, advance the schedule."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
