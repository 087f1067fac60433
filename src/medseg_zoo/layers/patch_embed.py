"""Embedding of non-overlapping 3D patches into tokens, with a learnable position embedding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import trunc_normal_
from torch import nn

from medseg_zoo.layers.linear import linear

__all__ = ["PatchEmbed3d"]


class PatchEmbed3d(nn.Module):
    """Splits a volume into ``p x p x p`` patches and projects each to ``embed_dim``, adding a position embedding.

    Shapes: ``(B, C, D, H, W) -> (B, N, embed_dim)`` with ``N = (D/p)(H/p)(W/p)``, tokens in ``(d h w)`` order.

    The position embedding is learnt for the grid of ``img_size``; for another input size it is resized by
    trilinear interpolation, so a model trained on one roi can run on another.

    Args:
        in_channels: ``C``.
        embed_dim: Token width.
        img_size: Spatial size the position embedding is laid out for.
        patch_size: Patch edge ``p``; every input dimension must be a multiple of it.
        proj_type: ``"conv"`` (a strided convolution, weight ``(E, C, p, p, p)``) or ``"perceptron"`` (a linear
            layer on patches flattened as ``(p1 p2 p3 c)``, MONAI's layout).
        bias: Bias on the projection.
        dropout: Dropout on the embeddings.
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        img_size: Sequence[int],
        patch_size: int = 16,
        *,
        proj_type: str = "conv",
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        img_size = tuple(int(s) for s in img_size)
        if len(img_size) != 3 or any(s % patch_size or s <= 0 for s in img_size):
            raise ValueError(f"img_size must be three positive multiples of patch_size={patch_size}, got {img_size}")
        self.patch_size = patch_size
        self.grid_size = tuple(s // patch_size for s in img_size)
        self.proj_type = proj_type
        if proj_type == "conv":
            self.proj = nn.Conv3d(in_channels, embed_dim, patch_size, stride=patch_size, bias=bias)
        elif proj_type == "perceptron":
            self.proj = nn.Linear(in_channels * patch_size**3, embed_dim, bias=bias)
        else:
            raise ValueError(f"proj_type must be 'conv' or 'perceptron', got {proj_type!r}")
        n = self.grid_size[0] * self.grid_size[1] * self.grid_size[2]
        self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
        trunc_normal_(self.pos_embed, std=0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        if x.ndim != 5 or any(s % p for s in x.shape[2:]):
            padded = tuple(-(-s // p) * p for s in x.shape[2:])
            raise ValueError(
                f"expected input (B, C, D, H, W) with D, H, W multiples of the patch size {p}, got "
                f"{tuple(x.shape)}; pad the volume to {padded} (or crop it)"
            )
        grid = tuple(s // p for s in x.shape[2:])
        b, c = x.shape[:2]
        d, h, w = grid
        # Patches flattened with plain reshapes (they trace for export, where einops' rearrange does not).
        blocks = x.reshape(b, c, d, p, h, p, w, p)
        if self.proj_type == "conv":  # one product over flattened patches: faster than a strided conv on the CPU
            patches = blocks.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, d * h * w, c * p**3)  # (c i j k)
            tokens = linear(patches, self.proj.weight.flatten(1), self.proj.bias)
        else:
            patches = blocks.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, d * h * w, p**3 * c)  # (i j k c)
            tokens = linear(patches, self.proj.weight, self.proj.bias)
        return self.dropout(tokens + self.position_embedding(grid))

    def position_embedding(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """The position embedding for a token grid, ``(1, N, embed_dim)``; interpolated if it differs."""
        if grid == self.grid_size:
            return self.pos_embed
        pos = rearrange(self.pos_embed, "1 (d h w) e -> 1 e d h w", d=self.grid_size[0], h=self.grid_size[1])
        pos = F.interpolate(pos, size=grid, mode="trilinear", align_corners=False)
        return rearrange(pos, "1 e d h w -> 1 (d h w) e")
