"""Converters from third-party checkpoint layouts to the zoo's native layouts, one module per source."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from torch import nn

from medseg_zoo.convert._common import ConversionError

__all__ = ["ConversionError", "convert_checkpoint"]

SourceFormat = Literal["monai-bundle", "monai", "self-attention-cv"]


def convert_checkpoint(source: str | os.PathLike, fmt: SourceFormat, model_name: str, **create_args: Any) -> nn.Module:
    """A zoo model with the weights of a third-party checkpoint, loaded strictly.

    Args:
        source: A MONAI bundle folder (``"monai-bundle"``), or a ``.pt``/``.pth`` state dict of
            ``monai.networks.nets.UNETR`` (``"monai"``, research-contributions checkpoints included) or of
            self-attention-cv's UNETR (``"self-attention-cv"``), opened with ``torch.load(weights_only=True)``.
        fmt: The source layout.
        model_name: The registered configuration whose architecture receives the weights.
        **create_args: Passed to `medseg_zoo.create_model` (e.g. ``in_channels``, ``img_size``) for the
            non-bundle formats.
    """
    from medseg_zoo._factory import create_model
    from medseg_zoo._pretrained import read_checkpoint
    from medseg_zoo._registry import get_config

    if fmt == "monai-bundle":
        from medseg_zoo.convert.monai import load_monai_bundle

        return load_monai_bundle(source, model_name)
    state = read_checkpoint(Path(source), fmt)
    if fmt == "monai":
        from medseg_zoo.convert.monai import convert_unetr

        state = convert_unetr(state)
    elif fmt == "self-attention-cv":
        from medseg_zoo.convert.self_attention_cv import convert_unetr

        state = convert_unetr(state, num_heads=get_config(model_name).model_args.get("num_heads", 12))
    else:
        raise ValueError(f"unknown source format {fmt!r}; expected monai-bundle, monai or self-attention-cv")
    model = create_model(model_name, **create_args)
    mismatch = _mismatch(state, model)
    if mismatch:
        raise ConversionError(f"{source}: the weights do not fit {model_name}: {mismatch}{_suggest(state, model_name)}")
    model.load_state_dict(state, strict=True)
    return model


def _mismatch(state: dict[str, Any], model: nn.Module) -> str:
    """What keeps ``state`` from loading into ``model``, in one line; empty when it fits."""
    own = model.state_dict()
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} tensor(s) differ in shape (e.g. {k}: {tuple(state[k].shape)} in the checkpoint, "
                     f"{tuple(own[k].shape)} in the model)")  # fmt: skip
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    return "; ".join(parts)


def _suggest(state: dict[str, Any], model_name: str) -> str:
    """The registered configurations of the same architecture whose embedding width is the checkpoint's."""
    import torch

    from medseg_zoo._factory import create_model
    from medseg_zoo._registry import get_config, list_models

    key = "patch_embed.proj.weight"
    if key not in state:
        return ""
    width = state[key].shape[0]
    fits = []
    for name in list_models():
        if name != model_name and get_config(name).builder is get_config(model_name).builder:
            with torch.device("meta"):
                other = create_model(
                    name, **({} if get_config(name).contract else {"in_channels": 1, "out_channels": 1})
                )
            if other.state_dict()[key].shape[0] == width:
                fits.append(name)
    hint = f"use {' or '.join(fits)}" if fits else "pass the checkpoint's hidden_size to create_model"
    return f". The checkpoint's hidden size is {width}: {hint}"
