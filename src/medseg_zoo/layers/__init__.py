"""Reusable 3D building blocks, each used by a zoo model. Tensor shapes are given in each docstring."""

from medseg_zoo.layers.attention import Attention
from medseg_zoo.layers.conv_blocks import (
    ConvNormAct,
    ResBlock,
    UnetrSkipBlock,
    UnetrUpBlock,
    UpConv3d,
    conv3d,
)
from medseg_zoo.layers.eva import EvaBlock, rotary_embedding_3d
from medseg_zoo.layers.linear import Linear, linear
from medseg_zoo.layers.norms import NORM_NAMES, get_norm, norm_act
from medseg_zoo.layers.patch_embed import PatchEmbed3d
from medseg_zoo.layers.transformer import TransformerBlock, TransformerEncoder

__all__ = [
    "NORM_NAMES",
    "Attention",
    "ConvNormAct",
    "EvaBlock",
    "Linear",
    "PatchEmbed3d",
    "ResBlock",
    "TransformerBlock",
    "TransformerEncoder",
    "UnetrSkipBlock",
    "UnetrUpBlock",
    "UpConv3d",
    "conv3d",
    "get_norm",
    "linear",
    "norm_act",
    "rotary_embedding_3d",
]
