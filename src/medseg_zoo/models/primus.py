"""Primus (Wald et al., 2025): a plain EVA-02 transformer on 8^3 patches with a light transposed-convolution
decoder, and its OpenMind self-supervised encoder.

Same arithmetic as ``dynamic_network_architectures``' ``Primus`` with the timm versions nnssl trained it with
(the parity reference in the tests); the encoder is the zoo's `medseg_zoo.layers.EvaBlock`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from einops import rearrange
from torch import nn

from medseg_zoo._contract import ModelConfig, WeightSource
from medseg_zoo._registry import register_model
from medseg_zoo.features import feature_info
from medseg_zoo.layers.eva import EvaBlock, rotary_embedding_3d
from medseg_zoo.models.resenc_unet import OPENMIND_CONTRACT

__all__ = ["Primus"]


class _ChannelNorm(nn.Module):
    """LayerNorm over the channels of a ``(B, C, D, H, W)`` map (eps 1e-6)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + 1e-6)
        return self.weight[:, None, None, None] * x + self.bias[:, None, None, None]


class _UpStage(nn.Module):
    """2x transposed convolution, channel LayerNorm, GELU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2)
        self.norm = _ChannelNorm(out_channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.up(x)))


class Primus(nn.Module):
    """Patch embedding, an EVA-02 encoder with absolute and rotary position embeddings, a patch decoder.

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, D, H, W)`` for the ``img_size`` the position embedding is laid out
    for (``D, H, W`` multiples of ``patch_size``).

    Stem and head: ``patch_embed`` reads the input channels; ``head`` writes the outputs. The encoder is
    ``patch_embed``, ``pos_embed``, ``blocks`` and ``norm``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (logits).
        img_size: Roi the position embedding is laid out for.
        embed_dim: Token width (Primus-M: 864).
        depth: Transformer blocks (Primus-M: 16).
        num_heads: Attention heads (Primus-M: 12).
        patch_size: Cubic patch size, a power of two (8).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_size: Sequence[int],
        *,
        embed_dim: int = 864,
        depth: int = 16,
        num_heads: int = 12,
        patch_size: int = 8,
    ) -> None:
        super().__init__()
        if any(s % patch_size for s in img_size):
            raise ValueError(f"img_size {tuple(img_size)} must be a multiple of the patch size {patch_size}")
        head_dim = embed_dim // num_heads
        rope_dim = round(head_dim / 1.5)
        if embed_dim % num_heads or 6 * (rope_dim // 4) != head_dim:
            raise ValueError(
                f"embed_dim {embed_dim} / num_heads {num_heads} must be a head width of 6 * k (the rotary embedding "
                "turns k frequencies on each of three axes, in pairs)"
            )
        self.patch_size = patch_size
        self.grid_size = tuple(s // patch_size for s in img_size)
        self.rope_dim = rope_dim
        self.patch_embed = nn.Conv3d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, int(np.prod(self.grid_size)), embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(EvaBlock(embed_dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        stages = int(np.log2(patch_size))
        reduction = (embed_dim / (2 * out_channels)) ** (1 / stages)
        widths = [embed_dim] + [
            int(max(8, np.round((embed_dim / reduction ** (i + 1) + 1e-6) / 8) * 8)) for i in range(stages)
        ]  # nnssl's rounding
        self.decoder = nn.ModuleList(_UpStage(widths[i], widths[i + 1]) for i in range(stages - 1))
        self.head = nn.ConvTranspose3d(widths[-2], out_channels, 2, stride=2)
        self.register_buffer("rope", rotary_embedding_3d(self.grid_size, rope_dim), persistent=False)
        self.feature_info = feature_info(
            (embed_dim, patch_size, "norm" if i == depth - 1 else f"blocks.{i}") for i in range(depth)
        )

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each transformer block's tokens as a map ``(B, embed_dim, D / p, H / p, W / p)``, the last one
        normalised (what the decoder reads)."""
        x = self.patch_embed(x)
        d, h, w = x.shape[2:]
        if (d, h, w) != self.grid_size:
            size = tuple(n * self.patch_size for n in self.grid_size)
            raise ValueError(f"input {tuple(x.shape[2:])} patches of {self.patch_size}^3; this Primus takes {size}")
        tokens = rearrange(x, "b c d h w -> b (d h w) c") + self.pos_embed
        maps = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, self.rope)
            shown = self.norm(tokens) if i == len(self.blocks) - 1 else tokens
            maps.append(rearrange(shown, "b (d h w) c -> b c d h w", d=d, h=h, w=w))
        return maps

    def decoder_modules(self) -> list[str]:
        return ["decoder", "head"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)[-1]
        for stage in self.decoder:
            x = stage(x)
        return self.head(x)


# --- named configurations -------------------------------------------------------------------------------

_PAPER = (
    "Wald et al., Primus: Enforcing Attention Usage for 3D Medical Image Segmentation, arXiv:2503.01835; Wald et "
    "al., An OpenMind for 3D medical vision self-supervised learning, arXiv:2412.17041"
)
_TINY = {"img_size": (64, 64, 32), "embed_dim": 48, "depth": 2, "num_heads": 2}
_STEM = ("patch_embed.weight",)
_HEAD = ("head.",)
_ENCODER = {"encoder": ("patch_embed.", "pos_embed", "blocks.", "norm."), "encoder_blocks": r"blocks\.(\d+)\."}

register_model(
    ModelConfig(
        name="primus_m_openmind",
        builder=Primus,
        model_args={},
        contract=OPENMIND_CONTRACT,
        roi_arg="img_size",
        weights=(
            WeightSource(
                repo_id="AnonRes/PrimusM-OpenMind-SimMIM",
                filename="checkpoint_final.pth",
                revision="main",
                format="nnssl",
                covers=_ENCODER["encoder"],
                notes="nnssl checkpoint of Primus-M pretrained with SimMIM on the OpenMind data set (114k 3D brain "
                "MRI); its adaptation plan transfers the encoder (key_to_encoder eva, key_to_stem down_projection, "
                "position embedding eva.pos_embed), so the decoder starts fresh. No Hub commit could be pinned "
                "offline, so the first verified download's sha256 is recorded and enforced.",
            ),
        ),
        license="CC-BY-4.0",
        paper=_PAPER,
        notes="Primus-M (EVA-02 encoder: 16 blocks of width 864, 12 heads, 8^3 patches, absolute and 3-D rotary "
        "position embeddings) pretrained by SimMIM on OpenMind brain MRI. Preprocessing as nnssl's: no "
        "reorientation, 1 mm, z-score, axes in SimpleITK's (z, y, x) order. Give your task's in_channels and "
        "out_channels; another roi interpolates the position embedding.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        headless=True,
        recipe="openmind_primus",
        **_ENCODER,
    )
)

register_model(
    ModelConfig(
        name="primus",
        builder=Primus,
        model_args={},
        roi_arg="img_size",
        default_roi=(160, 160, 160),
        paper=_PAPER,
        notes="Generic Primus (Primus-M by default); give in_channels and out_channels.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        **_ENCODER,
    )
)
