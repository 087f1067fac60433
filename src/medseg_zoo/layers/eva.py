"""EVA-02 transformer blocks for 3-D token grids: attention with rotary position embedding, SwiGLU MLP.

The arithmetic of timm's ``EvaBlock`` (``qkv_fused=False``, ``swiglu_mlp``, ``scale_mlp``) and of its
``RotaryEmbeddingCat`` as timm computed it up to 1.0.22 (interleaved pairs; frequencies ``10000^(-i/n)`` over
integer grid positions), which is how Primus (nnssl's OpenMind transformers) was trained. timm changed that
embedding in 1.0.23, so the zoo computes it itself and does not depend on the installed timm's version.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EvaBlock", "rotary_embedding_3d"]


def rotary_embedding_3d(grid: Sequence[int], dim: int) -> torch.Tensor:
    """Rotary position embedding of a ``(D, H, W)`` token grid, ``(D*H*W, 4 * 3 * (dim // 4))``: the sines, then
    the cosines, each frequency repeated for the two members of a rotated pair.

    ``dim // 4`` frequencies ``10000^(-i / (dim // 4))`` per axis, applied to each token's integer position
    along the three axes (row-major token order, as the tokens are flattened).
    """
    bands = dim // 4
    frequencies = 1.0 / (10000 ** (torch.arange(bands, dtype=torch.float32) / bands))
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in grid), indexing="ij")
    angles = torch.stack(axes, dim=-1)[..., None] * frequencies  # (D, H, W, 3, bands)
    angles = angles.reshape(-1, 3 * bands).repeat_interleave(2, dim=-1)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _apply_rotary(x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate(x) * sin`` with pairs ``(x0, x1) -> (-x1, x0)``; ``x`` is ``(B, heads, N, dim_head)``."""
    sin, cos = embedding.to(x.dtype).tensor_split(2, dim=-1)
    rotated = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
    return x * cos + rotated * sin


class _RopeAttention(nn.Module):
    """Multi-head attention with separate q, k, v projections (no bias on k) and rotary embedding on q and k."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (p(x).view(b, n, self.num_heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        if rope is not None:
            q, k = _apply_rotary(q, rope), _apply_rotary(k, rope)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class _SwiGLU(nn.Module):
    """``fc2(norm(silu(fc1_g(x)) * fc1_x(x)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden)
        self.fc1_x = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(F.silu(self.fc1_g(x)) * self.fc1_x(x)))


class EvaBlock(nn.Module):
    """Pre-norm transformer block: rotary attention, then a SwiGLU MLP with a LayerNorm inside.

    Shapes: ``(B, N, dim) -> (B, N, dim)``; ``rope`` is `rotary_embedding_3d` of the token grid for
    ``dim // num_heads`` (or ``None``).

    Args:
        dim: Token width.
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width over ``dim`` (EVA-02: 4 * 2 / 3).
        qkv_bias: Bias on the q and v projections.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4 * 2 / 3, *, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _RopeAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _SwiGLU(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))
