"""Tang et al.'s self-supervised Swin UNETR encoder (``model_swinvit.pt``) -> the ``swinViT`` of MONAI's SwinUNETR.

The file holds ``{"state_dict": ...}`` with the encoder under ``module.`` (``module.patch_embed.*``,
``module.layers{1..4}.0.blocks.{n}.*``, ``module.layers{i}.0.downsample.*``) and the MLPs named ``fc1``/``fc2``,
where MONAI's ``SwinUNETR.load_from`` reads them into ``swinViT.*`` with ``mlp.linear1``/``mlp.linear2``.
Research-contributions' fine-tuning script renamed ``module.`` to ``swinViT.`` but kept ``fc1``/``fc2`` and loaded
with ``strict=False``, so the MLPs silently kept their random weights; here every key is mapped, or conversion
fails. Pretraining heads (rotation, contrastive, reconstruction), should a file hold them, are dropped by name.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from medseg_zoo._contract import ModelConfig
from medseg_zoo.convert._common import map_keys, strip_prefix

__all__ = ["convert"]

_BLOCK = r"layers([1-4])\.0\.blocks\.(\d+)\."
_RULES = [
    (r"patch_embed\.proj\.(weight|bias)", r"swinViT.patch_embed.proj.\1"),
    (_BLOCK + r"mlp\.fc([12])\.(weight|bias)", r"swinViT.layers\1.0.blocks.\2.mlp.linear\3.\4"),
    (_BLOCK + r"attn\.relative_position_index", lambda m: None),  # computed by the network
    (
        _BLOCK + r"(norm[12]\.\w+|attn\.(?:qkv|proj)\.\w+|attn\.relative_position_bias_table)",
        r"swinViT.layers\1.0.blocks.\2.\3",
    ),
    (r"layers([1-4])\.0\.downsample\.(reduction\.weight|norm\.(?:weight|bias))", r"swinViT.layers\1.0.downsample.\2"),
    (r"(rotation_head|contrastive_head|rotation_pre|contrastive_pre|conv)\..+", lambda m: None),  # SSL heads
]


def convert(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig | None = None) -> dict[str, torch.Tensor]:
    """Map the encoder of a Swin UNETR self-supervised checkpoint to ``swinViT.*`` of MONAI's SwinUNETR.

    Keys may carry ``module.``, ``swinViT.`` or ``swin_vit.`` prefixes (the released file, and the renames of
    scripts that read it).

    Raises:
        ConversionError: If a key is not part of the encoder's layout.
    """
    plain = strip_prefix(state_dict, ("module.swinViT.", "module.swin_vit.", "module.", "swinViT.", "swin_vit."))
    return map_keys(plain, _RULES, source="Swin UNETR self-supervised encoder")
