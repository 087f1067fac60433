"""PointwiseConv3d (a GEMM over channels) against torch.nn.Conv3d(kernel_size=1): same weights, one process.

Forward + backward (input and weight gradients) of the full-resolution pointwise convolutions of unetr_brats,
on 1 x C x 128 x 128 x 64 fp32 CPU tensors; median of alternating runs.

    python benchmarks/bench_layers.py --repeats 7 --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from _report import command, machine, write_section
from medseg_zoo.layers import PointwiseConv3d

SHAPES = [(4, 16, "stem shortcut"), (32, 16, "last decoder shortcut"), (16, 3, "head")]


def step(module: torch.nn.Module, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    x.grad = None
    start = time.perf_counter()
    y = module(x)
    y.backward(torch.ones_like(y))
    return time.perf_counter() - start, y.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per layer (>= 5)")
    parser.add_argument("--output", type=Path, help="markdown file whose 'layers' section gets the table")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats must be at least 5, got {args.repeats}")
    torch.manual_seed(0)
    rows = [
        "| 1x1x1 conv | C_in -> C_out | nn.Conv3d s | PointwiseConv3d s | ratio | max abs diff |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for cin, cout, where in SHAPES:
        gemm = PointwiseConv3d(cin, cout)
        conv = torch.nn.Conv3d(cin, cout, 1)
        conv.load_state_dict(gemm.state_dict())
        x = torch.randn(1, cin, 128, 128, 64, requires_grad=True)
        times: dict[str, list[float]] = {"conv": [], "gemm": []}
        outs = {}
        for _ in range(args.repeats + 1):  # the first round warms up
            for name, module in (("conv", conv), ("gemm", gemm)):
                seconds, outs[name] = step(module, x)
                times[name].append(seconds)
        t_conv, t_gemm = (statistics.median(times[k][1:]) for k in ("conv", "gemm"))
        diff = (outs["conv"] - outs["gemm"]).abs().max().item()
        rows.append(
            f"| {where} | {cin} -> {cout} | {t_conv:.3f} | {t_gemm:.3f} | {t_gemm / t_conv:.2f}x | {diff:.1e} |"
        )
    body = "\n".join(
        [
            "## Pointwise convolutions (CPU, fp32)",
            "",
            f"Forward + backward at 128x128x64, median of {args.repeats} alternating runs.",
            "",
            *rows,
            "",
            f"Command: `{command()}`  ",
            f"Machine: {machine()}",
        ]
    )
    print(body)
    if args.output:
        write_section(args.output, "layers", body)


if __name__ == "__main__":
    main()
