"""Pre-norm transformer blocks and an encoder that returns the hidden states of chosen layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import DropPath, Mlp
from torch import nn

from medseg_zoo.layers.attention import Attention
from medseg_zoo.layers.linear import linear

__all__ = ["TransformerBlock", "TransformerEncoder"]


class _Mlp(Mlp):
    """timm's ``Mlp`` (same parameters) with its two products through `medseg_zoo.layers.linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(linear(x, self.fc1.weight, self.fc1.bias)))
        return self.drop2(linear(self.norm(x), self.fc2.weight, self.fc2.bias))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Shapes: ``(B, N, dim) -> (B, N, dim)``.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        mlp_dim: Hidden width of the GELU MLP.
        dim_head: Head width (defaults to ``dim // num_heads``).
        qkv_bias: Bias on the qkv projection.
        proj_bias: Bias on the attention output projection.
        dropout: Dropout on the attention output, attention weights and MLP.
        drop_path: Stochastic depth rate.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        dim_head: int | None = None,
        qkv_bias: bool = False,
        proj_bias: bool = True,
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(
            dim,
            num_heads,
            dim_head=dim_head,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            attn_drop=dropout,
            proj_drop=dropout,
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, mlp_dim, act_layer=nn.GELU, drop=dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TransformerEncoder(nn.Module):
    """A stack of `TransformerBlock` that returns the hidden states after chosen blocks.

    Shapes: ``(B, N, dim) -> [(B, N, dim)] * len(out_layers)``.

    Args:
        depth: Number of blocks.
        dim: Token width.
        num_heads: Attention heads.
        mlp_dim: MLP hidden width.
        out_layers: 1-based numbers of the blocks whose outputs are returned, increasing.
        final_norm: Apply a LayerNorm to the output of the last block (when it is returned).
        **block_kwargs: Passed to every `TransformerBlock`.
    """

    def __init__(
        self,
        depth: int,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        out_layers: Sequence[int],
        final_norm: bool = False,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        out_layers = tuple(out_layers)
        if (
            list(out_layers) != sorted(set(out_layers))
            or not out_layers
            or not 1 <= out_layers[0] <= out_layers[-1] <= depth
        ):
            raise ValueError(f"out_layers must be increasing block numbers in 1..{depth}, got {out_layers}")
        self.out_layers = out_layers
        self.blocks = nn.ModuleList([TransformerBlock(dim, num_heads, mlp_dim, **block_kwargs) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for number, block in enumerate(self.blocks, start=1):
            x = block(x)
            if number in self.out_layers:
                outs.append(self.norm(x) if number == len(self.blocks) else x)
        return outs
