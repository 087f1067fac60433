"""Third-party checkpoint layouts -> the zoo's layouts: pure state-dict mappings, one module per source.

Each converter maps every key of its source: a key it does not know is an error, and a key it leaves out (a
pretraining head, a buffer the network computes) is left out by name. Converters take the configuration that
receives the weights, since some layouts depend on its arguments. Building a model from a converted file is
`medseg_zoo.checkpoints.convert_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from medseg_zoo._contract import ModelConfig
from medseg_zoo.convert import monai, nnssl, self_attention_cv, suprem, swin_ssl
from medseg_zoo.convert._common import ConversionError

__all__ = ["FORMATS", "ConversionError", "convert_state_dict"]

Converter = Callable[[Mapping[str, torch.Tensor], ModelConfig], dict[str, torch.Tensor]]

FORMATS: dict[str, tuple[Converter, str]] = {
    "safetensors": (monai.convert_monai, "a medseg-zoo model.safetensors"),
    "monai-bundle": (monai.convert_monai, "a MONAI model-zoo bundle (configs/inference.json, models/model.pt)"),
    "monai": (monai.convert_monai, "a state dict of a MONAI network (UNETR, SwinUNETR, SegResNet, UNet)"),
    "self-attention-cv": (self_attention_cv.convert, "a state dict of self-attention-cv 1.2.3's UNETR"),
    "swin-ssl": (swin_ssl.convert, "Tang et al.'s self-supervised Swin UNETR encoder (model_swinvit.pt)"),
    "suprem": (suprem.convert, "a SuPreM checkpoint (['net'], module.backbone.)"),
    "nnssl": (nnssl.convert, "an nnssl / OpenMind checkpoint_final.pth (['network_weights'])"),
}


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], fmt: str, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint of format ``fmt`` in the layout of ``cfg``'s architecture.

    Raises:
        ConversionError: An unknown format, or a key the format's converter does not know.
    """
    if fmt not in FORMATS:
        raise ConversionError(f"unknown checkpoint format {fmt!r}; formats: {', '.join(FORMATS)}")
    return FORMATS[fmt][0](state_dict, cfg)
