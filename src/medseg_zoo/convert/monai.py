"""MONAI checkpoints: ``UNETR`` -> `medseg_zoo.models.UNETR`; the MONAI classes the zoo registers as they are.

UNETR: covers ``proj_type`` conv and perceptron, ``conv_block`` true or false, ``res_block`` true or false, and
checkpoints of every MONAI release: before 1.4, 1.4-1.5 (unused ``cross_attn.*`` weights) and 1.6 (unused
``norm_cross_attn`` LayerNorm); the unused weights are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from medseg_zoo._contract import ModelConfig
from medseg_zoo.convert._common import Rule, is_computed, map_keys

__all__ = ["convert_monai", "convert_unetr"]

# Layers of MONAI's UnetResBlock / UnetBasicBlock -> the native ResBlock.
_RES_LAYERS = {
    "conv1.conv": "conv1.conv",
    "norm1": "conv1.norm",
    "conv2.conv": "conv2.conv",
    "norm2": "conv2.norm",
    "conv3.conv": "shortcut.conv",
    "norm3": "shortcut.norm",
}
_RES = r"\.(?P<layer>conv[123]\.conv|norm[123])\.(?P<param>\w+)"


def _res_block(src: str, dst: str) -> Rule:
    """Rule for a residual block under ``src`` (a regex, may have named groups) moved under ``dst`` (format)."""

    def target(m):
        return f"{dst.format(**m.groupdict())}.{_RES_LAYERS[m['layer']]}.{m['param']}"

    return src + _RES, target


def _next_up(dst: str) -> object:
    return lambda m: f"{dst}.ups.{int(m['j']) + 1}.weight"


def _rules() -> list[Rule]:
    rules: list[Rule] = [
        (r"vit\.patch_embedding\.patch_embeddings(?:\.1)?\.(weight|bias)", r"patch_embed.proj.\1"),
        (r"vit\.patch_embedding\.position_embeddings", "patch_embed.pos_embed"),
        (r"vit\.blocks\.(\d+)\.norm([12])\.(weight|bias)", r"encoder.blocks.\1.norm\2.\3"),
        (r"vit\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.blocks.\1.attn.qkv.\2"),
        (r"vit\.blocks\.(\d+)\.attn\.out_proj\.(weight|bias)", r"encoder.blocks.\1.attn.proj.\2"),
        (r"vit\.blocks\.(\d+)\.mlp\.linear([12])\.(weight|bias)", r"encoder.blocks.\1.mlp.fc\2.\3"),
        (r"vit\.blocks\.\d+\.(norm_cross_attn|cross_attn)\..+", lambda m: None),  # never used by UNETR
        (r"vit\.norm\.(weight|bias)", r"encoder.norm.\1"),
        _res_block(r"encoder1\.layer", "stem"),
        (r"out\.conv\.conv\.(weight|bias)", r"head.\1"),
    ]
    for i, src in enumerate(("encoder2", "encoder3", "encoder4")):
        dst = f"skips.{i}"
        rules += [
            (rf"{src}\.transp_conv_init\.conv\.weight", f"{dst}.ups.0.weight"),
            (rf"{src}\.blocks\.(?P<j>\d+)\.0\.conv\.weight", _next_up(dst)),  # conv_block: (up, res block)
            _res_block(rf"{src}\.blocks\.(?P<j>\d+)\.1", dst + ".refines.{j}"),
            (rf"{src}\.blocks\.(?P<j>\d+)\.conv\.weight", _next_up(dst)),  # no conv_block: bare up
        ]
    for i, src in enumerate(("decoder5", "decoder4", "decoder3", "decoder2")):
        rules += [
            (rf"{src}\.transp_conv\.conv\.weight", f"decoders.{i}.up.weight"),
            _res_block(rf"{src}\.conv_block", f"decoders.{i}.conv"),
        ]
    return rules


_RULES = _rules()


def convert_unetr(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a ``monai.networks.nets.UNETR`` state dict to the native UNETR layout.

    The attention layouts agree (fused qkv rows ordered ``(qkv, head, dim_head)``), so this only renames keys,
    and drops the cross-attention weights that MONAI created but UNETR never uses.

    Raises:
        ConversionError: If a key is not part of MONAI's UNETR layout.
    """
    return map_keys(state_dict, _RULES, source="MONAI UNETR")


def convert_monai(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A MONAI network's state dict for ``cfg``: UNETR converted to the zoo's layout; the MONAI classes the zoo
    registers (SwinUNETR, SegResNet, UNet) as they are, less the buffers the network computes itself."""
    if cfg.architecture == "medseg_zoo.models.unetr.UNETR":
        return convert_unetr(state_dict)
    return {k: v for k, v in state_dict.items() if not is_computed(k)}
