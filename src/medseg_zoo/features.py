"""Encoders as backbones, as timm's ``features_only`` gives them: the multi-scale maps of a model's encoder.

Every zoo model with an encoder has ``forward_features(x)`` (the encoder's maps, shallow to deep) and
``feature_info`` (channels, stride and source module of each map). ``create_model(name, features_only=True,
out_indices=...)`` returns a `FeatureExtractor`: the encoder alone (the decoder and head are dropped), with the
pretrained weights when asked for, returning the chosen maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["FeatureExtractor", "FeatureInfo"]


class FeatureInfo(list):
    """One dict per feature map, shallow to deep: ``num_chs`` (channels), ``reduction`` (stride against the
    input, per spatial axis) and ``module`` (the module whose output the map is, or is reshaped from)."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[tuple[int, int, int]]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]


def feature_info(entries: Sequence[tuple[int, int | Sequence[int], str]]) -> FeatureInfo:
    """A `FeatureInfo` from ``(channels, stride, module)`` triples (a stride given once holds for every axis)."""
    return FeatureInfo(
        {
            "num_chs": int(c),
            "reduction": tuple(int(s) for s in (r if isinstance(r, Sequence) else (r,) * 3)),
            "module": m,
        }
        for c, r, m in entries
    )


class FeatureExtractor(nn.Module):
    """A model's encoder, returning the maps ``out_indices`` picks from its ``forward_features``.

    Shapes: ``(B, C_in, D, H, W) -> [(B, C_i, D / r_i, H / r_i, W / r_i) for each chosen map i]``.

    Args:
        model: A zoo model with ``forward_features``, ``feature_info`` and ``decoder_modules()`` (the names of
            the modules only the decoder uses).
        out_indices: Indices into ``model.feature_info`` (negative ones count from the deepest); ``None``: all.

    Attributes:
        feature_info: The chosen maps' entries.
        pretrained_cfg: The model's configuration (its contract says how inputs are prepared).
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        info = model.feature_info
        count = len(info)
        indices = list(range(count)) if out_indices is None else [int(i) for i in out_indices]
        wrong = [i for i in indices if not -count <= i < count]
        if wrong or not indices:
            raise ValueError(f"out_indices must pick among the {count} feature maps (0 to {count - 1}), got {indices}")
        self.out_indices = tuple(i % count for i in indices)
        self.feature_info = FeatureInfo(info[i] for i in self.out_indices)
        self.pretrained_cfg = model.pretrained_cfg
        if hasattr(model, "load_report"):
            self.load_report = model.load_report
        for name in model.decoder_modules():  # the maps do not need them: not kept
            _drop(model, name)
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.model.forward_features(x)
        return [maps[i] for i in self.out_indices]


def _drop(model: nn.Module, name: str) -> None:
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    if isinstance(owner, nn.ModuleList | nn.Sequential):
        owner[int(child)] = nn.Identity()
    else:
        setattr(owner, child, nn.Identity())
