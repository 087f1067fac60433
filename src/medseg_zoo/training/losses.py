"""The training loss built from a model's contract, on MONAI's losses."""

from __future__ import annotations

from monai.losses import DiceCELoss
from torch import nn

from medseg_zoo._contract import TaskContract

__all__ = ["loss_for"]


def loss_for(contract: TaskContract) -> nn.Module:
    """Dice + cross-entropy for the contract's outputs, taking logits ``(B, C, ...)`` and binary targets of the
    same shape (the pipelines turn label maps into the output channels).

    Sigmoid contracts (overlapping regions) get Dice + binary cross-entropy per region; softmax contracts
    (exclusive classes) get Dice + cross-entropy over the one-hot classes.
    """
    if contract.activation == "sigmoid":
        return DiceCELoss(sigmoid=True)
    return DiceCELoss(softmax=True)
