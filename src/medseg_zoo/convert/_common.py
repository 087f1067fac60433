"""Exhaustive key mapping shared by the converters: every source key is consumed, or conversion fails."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import torch

__all__ = ["COMPUTED_BUFFERS", "ConversionError", "is_computed", "map_keys", "strip_prefix"]

Rule = tuple[str, str | Callable[[re.Match], str | None]]


COMPUTED_BUFFERS = ("relative_position_index",)  # buffers networks compute themselves: rebuilt, never stored


class ConversionError(ValueError):
    """A checkpoint that does not have the layout the converter expects."""


def is_computed(key: str) -> bool:
    """Whether a state-dict key is a buffer the network rebuilds itself (Swin's relative_position_index)."""
    return key.endswith(COMPUTED_BUFFERS)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """The keys without the first of ``prefixes`` each starts with (DataParallel's ``module.``, a wrapper's
    ``backbone.``); keys with none of them keep their name."""
    prefixes = tuple(prefixes)
    return {next((k[len(p) :] for p in prefixes if k.startswith(p)), k): v for k, v in state_dict.items()}


def map_keys(state_dict: Mapping[str, torch.Tensor], rules: Iterable[Rule], *, source: str) -> dict[str, torch.Tensor]:
    """Rename every key of ``state_dict`` by the first rule whose regex matches it in full.

    A rule's target is a ``re.Match.expand`` template, or a function of the match returning the new key or
    ``None`` to drop the key (only for keys the target model has no use for).

    Raises:
        ConversionError: If any key matches no rule, naming the keys left over.
    """
    compiled = [(re.compile(pattern), target) for pattern, target in rules]
    out: dict[str, torch.Tensor] = {}
    left = []
    for key, value in state_dict.items():
        for pattern, target in compiled:
            match = pattern.fullmatch(key)
            if match:
                new = target(match) if callable(target) else match.expand(target)
                if new is not None:
                    out[new] = value
                break
        else:
            left.append(key)
    if left:
        shown = ", ".join(left[:8]) + (f" (+{len(left) - 8} more)" if len(left) > 8 else "")
        raise ConversionError(f"{source}: {len(left)} key(s) not understood by the converter: {shown}")
    return out
