"""Deterministic train/validation splits and k folds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

__all__ = ["k_folds", "train_val_split"]

T = TypeVar("T")


def _shuffled(items: Sequence[T], seed: int) -> list[T]:
    return [items[i] for i in np.random.default_rng(seed).permutation(len(items))]


def train_val_split(items: Sequence[T], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[T], list[T]]:
    """Split into training and validation items; the same items and seed always give the same split.

    ``val_fraction=0`` keeps every item for training (in the shuffled order) and validates on none.

    Raises:
        ValueError: If ``val_fraction`` is not in [0, 1) or, above 0, either part would be empty.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be at least 0 and below 1 (0: no validation items), got {val_fraction!r}")
    if val_fraction == 0:
        return _shuffled(items, seed), []
    n_val = round(len(items) * val_fraction)
    if n_val == 0 or n_val == len(items):
        raise ValueError(f"cannot split {len(items)} item(s) with val_fraction={val_fraction}: a part would be empty")
    order = _shuffled(items, seed)
    return order[n_val:], order[:n_val]


def k_folds(items: Sequence[T], k: int = 5, seed: int = 0) -> list[tuple[list[T], list[T]]]:
    """``k`` (train, validation) splits; each item is validated in exactly one fold.

    Raises:
        ValueError: If ``k`` is below 2 or above the number of items.
    """
    if not 2 <= k <= len(items):
        raise ValueError(f"k must be between 2 and the number of items ({len(items)}), got {k}")
    folds = np.array_split(np.arange(len(items)), k)
    order = _shuffled(items, seed)
    return [
        ([order[i] for j, f in enumerate(folds) if j != fold for i in f], [order[i] for i in folds[fold]])
        for fold in range(k)
    ]
