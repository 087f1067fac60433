"""Linear layers whose float32 CPU products run on oneDNN where that measured faster than torch's own."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CPU_PATHS", "Linear", "linear", "linear_choices"]

# The zoo's CPU-specific code paths: on ("auto", chosen by measurement) unless MEDSEG_ZOO_CPU_PATHS=off.
CPU_PATHS = os.environ.get("MEDSEG_ZOO_CPU_PATHS", "auto").strip().lower() not in ("off", "0", "false", "no")
# None: each product shape measures both paths once and keeps the faster; True / False force one (export, tests).
# Why it is measured, not gated on a CPU flag: torch's MKL keeps to AVX2 kernels on AMD CPUs with AVX-512, where
# oneDNN's 1x1x1 convolution ran the products at about twice the speed; with another torch, CPU or shape that
# flipped (oneDNN measured 1.26-1.51x slower on such a host later), so a capability gate misfires.
ONEDNN_PRODUCTS: bool | None = None if CPU_PATHS else False
_CHOSEN: dict[tuple, tuple[bool, float, float]] = {}


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    tokens = x.reshape(-1, x.shape[-1])
    # (tokens, in) seen as a (1, in, tokens, 1, 1) map with channels innermost
    y = F.conv3d(tokens.t()[None, :, :, None, None], weight[:, :, None, None, None], bias)
    # oneDNN writes (out, tokens); a contiguous (tokens, out) copy is cheap and what attention kernels expect.
    return y.permute(0, 2, 3, 4, 1).reshape(*x.shape[:-1], weight.shape[0]).contiguous()


def _seconds(product: Callable, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, grad: bool) -> float:
    """The best of three runs (after one warm-up) of ``product``, with its backward pass when training."""
    best = float("inf")
    for i in range(4):
        args = [t.detach().requires_grad_(grad) if t is not None else None for t in (x, weight, bias)]
        start = time.perf_counter()
        with torch.set_grad_enabled(grad):
            y = product(*args)
            if grad:
                y.backward(torch.ones_like(y))
        if i:
            best = min(best, time.perf_counter() - start)
    return best


def _onednn_pays(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    key = (x[..., 0].numel(), weight.shape[1], weight.shape[0], bias is not None, grad, torch.get_num_threads())
    if key not in _CHOSEN:
        if torch.compiler.is_compiling():  # no timing inside a traced graph: torch's product
            return False
        ours, theirs = _seconds(_onednn, x, weight, bias, grad), _seconds(F.linear, x, weight, bias, grad)
        _CHOSEN[key] = (ours < theirs, ours, theirs)
    return _CHOSEN[key][0]


def linear_choices() -> dict[tuple, tuple[bool, float, float]]:
    """What `linear` measured in this process: ``(tokens, in, out, bias, training, threads)`` -> (oneDNN chosen,
    its seconds, torch's seconds)."""
    return dict(_CHOSEN)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear``; for float32 on the CPU computed by oneDNN as a 1x1x1 convolution where that
    measured faster for the shape (once per process; see `linear_choices`).

    Shapes: ``(..., in) -> (..., out)``. torch hands float32 matrix products on the CPU to MKL; oneDNN's 1x1x1
    convolution is the same product with the same float32 rounding bound, and on some CPUs (AMD EPYC with AVX-512
    under some torch builds) about twice as fast. Other devices and dtypes, CPU autocast, and
    ``MEDSEG_ZOO_CPU_PATHS=off`` use ``F.linear``.
    """
    if (
        ONEDNN_PRODUCTS is False
        or x.device.type != "cpu"
        or x.dtype != torch.float32
        or x.numel() == 0
        or torch.is_autocast_enabled("cpu")  # half-precision products, and autocast caches the weights' casts
    ):
        return F.linear(x, weight, bias)
    if ONEDNN_PRODUCTS or _onednn_pays(x, weight, bias):
        return _onednn(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters) computed by `linear`.

    Shapes: ``(..., in_features) -> (..., out_features)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
