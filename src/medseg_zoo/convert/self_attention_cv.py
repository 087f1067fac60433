"""self-attention-cv 1.2.3 ``UNETR`` checkpoints -> `medseg_zoo.models.UNETR` (``unetr_brats`` layout)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from einops import rearrange

from medseg_zoo._contract import ModelConfig
from medseg_zoo.convert._common import map_keys

__all__ = ["convert", "convert_unetr"]

# self-attention-cv's Conv3DBlock: conv_block = (conv, norm, act, conv, norm), conv_down = (conv1x1, norm).
_CONV3D_BLOCK = [
    (r"conv_block\.0\.(.+)", r"conv1.conv.\1"),
    (r"conv_block\.1\.(.+)", r"conv1.norm.\1"),
    (r"conv_block\.3\.(.+)", r"conv2.conv.\1"),
    (r"conv_block\.4\.(.+)", r"conv2.norm.\1"),
    (r"conv_down\.0\.(.+)", r"shortcut.conv.\1"),
    (r"conv_down\.1\.(.+)", r"shortcut.norm.\1"),
]
_RES_BLOCKS = {  # source prefix -> native ResBlock prefix
    "init_conv.": "stem.",
    "z9_conv.": "decoders.0.conv.",
    "z6_conv.": "decoders.1.conv.",
    "z3_conv.": "decoders.2.conv.",
    "out_conv.0.": "decoders.3.conv.",
}
_RULES = [
    (r"embed\.patch_embeddings\.weight", "patch_embed.proj.weight"),
    (r"embed\.position_embeddings\.abs_pos_enc", "patch_embed.pos_embed"),
    (r"transformer\.block_list\.(\d+)\.norm_([12])\.(weight|bias)", r"encoder.blocks.\1.norm\2.\3"),
    (r"transformer\.block_list\.(\d+)\.mhsa\.to_qvk\.weight", r"encoder.blocks.\1.attn.qkv.weight"),
    (r"transformer\.block_list\.(\d+)\.mhsa\.W_0\.weight", r"encoder.blocks.\1.attn.proj.weight"),
    (r"transformer\.block_list\.(\d+)\.linear\.0\.(weight|bias)", r"encoder.blocks.\1.mlp.fc1.\2"),
    (r"transformer\.block_list\.(\d+)\.linear\.3\.(weight|bias)", r"encoder.blocks.\1.mlp.fc2.\2"),
    (r"z3_blue_conv\.blocks\.(\d+)\.block\.weight", r"skips.0.ups.\1.weight"),
    (r"z6_blue_conv\.blocks\.(\d+)\.block\.weight", r"skips.1.ups.\1.weight"),
    (r"z9_blue_conv\.blocks\.(\d+)\.block\.weight", r"skips.2.ups.\1.weight"),
    (r"z12_deconv\.block\.weight", "decoders.0.up.weight"),
    (r"z9_deconv\.block\.weight", "decoders.1.up.weight"),
    (r"z6_deconv\.block\.weight", "decoders.2.up.weight"),
    (r"z3_deconv\.block\.weight", "decoders.3.up.weight"),
    (r"out_conv\.1\.(weight|bias)", r"head.\1"),
    *[(src.replace(".", r"\.") + pat, dst + tgt) for src, dst in _RES_BLOCKS.items() for pat, tgt in _CONV3D_BLOCK],
]


def convert_unetr(state_dict: Mapping[str, torch.Tensor], num_heads: int) -> dict[str, torch.Tensor]:
    """Convert a self-attention-cv 1.2.3 UNETR state dict to the native UNETR layout.

    Its attention splits the fused projection as ``'b t (d k h)'`` (head last); the native layout is
    ``(qkv, head, dim_head)``, so the qkv rows are permuted. Everything else is renamed.

    Args:
        state_dict: The source ``model.state_dict()``.
        num_heads: Attention heads of the source model (10 for the seed's configuration).

    Raises:
        ConversionError: If a key is not part of the self-attention-cv UNETR layout.
    """
    out = map_keys(state_dict, _RULES, source="self-attention-cv UNETR")
    for key, value in out.items():
        if key.endswith("attn.qkv.weight"):
            out[key] = rearrange(value, "(d k h) c -> (k h d) c", k=3, h=num_heads).contiguous()
    return out


def convert(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """`convert_unetr` with the heads of the configuration receiving the weights."""
    return convert_unetr(state_dict, num_heads=cfg.model_args.get("num_heads", 12))
