"""SuPreM checkpoints (Li et al., ICLR 2024; AbdomenAtlas 1.1) -> MONAI's SwinUNETR and SegResNet, and the zoo's
`medseg_zoo.models.UNet3D`.

Every file holds its weights under ``["net"]``. The Swin UNETR and U-Net files are SuPreM's universal model:
the backbone under ``module.backbone.``, beside the text-driven heads (``precls_conv``, ``GAP``, ``controller``,
``organ_embedding``, ``text_to_vision``) that only that model uses; the Swin UNETR backbone's own ``out``
convolution is never used by it (its features feed the heads), so it is dropped too. The SegResNet file is a
plain SegResNet under ``module.``; its 25-class ``conv_final`` is the pretraining task's head.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from medseg_zoo._contract import ModelConfig
from medseg_zoo.convert._common import ConversionError, is_computed, map_keys, strip_prefix

__all__ = ["convert"]

_UNIVERSAL_HEADS = (r"(precls_conv|GAP|controller|organ_embedding|text_to_vision|class_num)(\..+)?", lambda m: None)


# Models Genesis' level names -> the zoo's UNet3D.
_LEVELS = {f"down_tr{c}": f"encoder.{i}" for i, c in enumerate((64, 128, 256, 512))}
_LEVELS |= {f"up_tr{c}": f"decoders.{i}" for i, c in enumerate((256, 128, 64))}
_UNET3D_RULES = [
    (
        r"backbone\.(\w+)\.ops\.([01])\.conv1\.(weight|bias)",
        lambda m: f"{_LEVELS[m[1]]}.conv{int(m[2]) + 1}.conv.{m[3]}",
    ),
    (r"backbone\.(\w+)\.ops\.([01])\.bn1\.(\w+)", lambda m: f"{_LEVELS[m[1]]}.conv{int(m[2]) + 1}.norm.{m[3]}"),
    (r"backbone\.up_tr(256|128|64)\.up_conv\.(weight|bias)", lambda m: f"ups.{(256, 128, 64).index(int(m[1]))}.{m[2]}"),
    (r"backbone\.out_tr\.final_conv\.(weight|bias)", r"head.\1"),
]


def convert(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Map a SuPreM checkpoint to the zoo layout of ``cfg``'s architecture.

    Raises:
        ConversionError: If a key is not part of the layout.
    """
    state = strip_prefix(state_dict, ("module.",))
    name = cfg.builder.__name__
    if name == "SwinUNETR":
        rules = [
            (r"backbone\.out\..+", lambda m: None),
            (r"backbone\..+relative_position_index", lambda m: None),
            (r"backbone\.(.+)", r"\1"),
            _UNIVERSAL_HEADS,
        ]
        return map_keys(state, rules, source="SuPreM Swin UNETR")
    if name == "UNet3D":
        return map_keys(state, [*_UNET3D_RULES, _UNIVERSAL_HEADS], source="SuPreM U-Net")
    if name == "SegResNet":
        return {k: v for k, v in state.items() if not is_computed(k)}
    raise ConversionError(f"SuPreM checkpoints fill SwinUNETR, SegResNet and UNet3D; {cfg.name} is {cfg.architecture}")
