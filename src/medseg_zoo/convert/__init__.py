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
        **create_args: Passed to :func:`medseg_zoo.create_model` (e.g. ``in_channels``, ``img_size``) for the
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
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConversionError(f"{source}: the weights do not fit {model_name} ({exc})") from None
    return model
