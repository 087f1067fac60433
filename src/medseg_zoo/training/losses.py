"""The training loss built from a model's contract, on MONAI's losses."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from medseg_zoo._contract import TaskContract

__all__ = ["LOSSES", "loss_for"]

LOSSES = ("dice_ce", "monai_dice_ce")


class _DiceBCE(nn.Module):
    """Soft Dice over sigmoid probabilities plus binary cross-entropy, each region on its own.

    MONAI's ``DiceCELoss`` takes the binary cross-entropy only for a single output channel; with more it takes
    the softmax cross-entropy across channels, which does not fit overlapping regions (a voxel inside all three
    BraTS regions has the multi-hot target ``[1, 1, 1]``, and no softmax reaches it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target) + self.bce(logits, target.to(logits.dtype))


def loss_for(contract: TaskContract, name: str = "dice_ce") -> nn.Module:
    """The training loss for the contract's outputs, taking logits ``(B, C, ...)`` and binary targets of the same
    shape (the pipelines turn label maps into the output channels).

    Args:
        contract: The model's task contract; its activation decides the cross-entropy.
        name: ``"dice_ce"``: sigmoid contracts (overlapping regions) get Dice + binary cross-entropy per region,
            softmax contracts (exclusive classes) Dice + cross-entropy over the classes. ``"monai_dice_ce"``:
            MONAI's ``DiceCELoss`` with the contract's activation, as the seed tutorial called it; for more than
            one output channel it adds the softmax cross-entropy across channels whatever the activation, so the
            seed recipes keep it to reproduce the seed's runs.

    Raises:
        ValueError: If ``name`` is not one of `LOSSES`.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    sigmoid = contract.activation == "sigmoid"
    if name == "dice_ce" and sigmoid:
        return _DiceBCE()
    return DiceCELoss(sigmoid=sigmoid, softmax=not sigmoid)
