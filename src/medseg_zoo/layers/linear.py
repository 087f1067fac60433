"""Linear layers whose float32 products run on oneDNN on CPUs with AVX-512."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Linear", "linear"]

# The MKL that torch ships keeps to AVX2 kernels on AMD CPUs that have AVX-512, where oneDNN uses the full width:
# ~220 GFLOP/s against ~420 on such an AMD EPYC. On an AVX2-only EPYC, MKL is the faster one (~85 against ~50).
ONEDNN_PRODUCTS = torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear``; for float32 on CPUs with AVX-512 computed by oneDNN as a 1x1x1 convolution.

    Shapes: ``(..., in) -> (..., out)``. torch hands float32 matrix products on the CPU to MKL, whose sgemm runs
    at about half of oneDNN's speed where MKL takes no AVX-512 path (AMD EPYC; see ``docs/benchmarks.md``);
    oneDNN's 1x1x1 convolution is the same product, with the same float32 rounding. CPUs without AVX-512 (where
    MKL was measured faster), other devices and dtypes, and CPU autocast use ``F.linear``.
    """
    if (
        not ONEDNN_PRODUCTS
        or x.device.type != "cpu"
        or x.dtype != torch.float32
        or x.numel() == 0
        or torch.is_autocast_enabled("cpu")  # half-precision products, and autocast caches the weights' casts
    ):
        return F.linear(x, weight, bias)
    tokens = x.reshape(-1, x.shape[-1])
    # (tokens, in) seen as a (1, in, tokens, 1, 1) map with channels innermost
    y = F.conv3d(tokens.t()[None, :, :, None, None], weight[:, :, None, None, None], bias)
    # oneDNN writes (out, tokens); a contiguous (tokens, out) copy is cheap and what attention kernels expect.
    return y.permute(0, 2, 3, 4, 1).reshape(*x.shape[:-1], weight.shape[0]).contiguous()


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters) computed by `linear`.

    Shapes: ``(..., in_features) -> (..., out_features)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
