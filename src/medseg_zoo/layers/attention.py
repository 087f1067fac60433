"""Multi-head self-attention over token sequences."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from medseg_zoo.layers.linear import Linear

__all__ = ["Attention"]


class Attention(nn.Module):
    """Multi-head self-attention through ``torch.nn.functional.scaled_dot_product_attention``.

    Shapes: ``(B, N, dim) -> (B, N, dim)``. The head size is independent of ``dim``: the inner width is
    ``num_heads * dim_head`` (the seed's UNETR uses 10 heads of 51 on a 512 embedding). The fused ``qkv``
    projection's output rows are ordered ``(qkv, head, dim_head)``, as in MONAI's ``SABlock`` and timm.

    Args:
        dim: Token width.
        num_heads: Number of heads.
        dim_head: Width of one head; defaults to ``dim / num_heads``, which must then be a whole number (as MONAI
            requires). Give it to build a head width that does not divide ``dim``.
        qkv_bias: Bias on the ``qkv`` projection.
        proj_bias: Bias on the output projection.
        attn_drop: Dropout on the attention weights (training only).
        proj_drop: Dropout on the output.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        dim_head: int | None = None,
        qkv_bias: bool = False,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim_head is None and dim % num_heads:
            raise ValueError(
                f"hidden size {dim} should be divisible by num_heads {num_heads} (as MONAI requires); pass dim_head "
                "for another head width (self-attention-cv's UNETR, unetr_brats, uses 10 heads of 51 on 512)"
            )
        self.num_heads = num_heads
        self.dim_head = dim // num_heads if dim_head is None else dim_head
        if self.dim_head <= 0:
            raise ValueError(f"dim_head must be positive, got {self.dim_head} (dim={dim}, num_heads={num_heads})")
        inner = self.num_heads * self.dim_head
        self.qkv = Linear(dim, 3 * inner, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = Linear(inner, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.num_heads)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(rearrange(y, "b h n d -> b n (h d)")))
