"""medseg-zoo's layers against the torch modules they replace: same weights, same inputs, one process.

Forward + backward (input and weight gradients) at the sizes unetr_brats meets in a training step on a
1 x 4 x 128 x 128 x 64 fp32 CPU input; median of alternating runs after one warm-up round:

- ``Linear`` against ``nn.Linear`` on the transformer's token products (256 tokens);
- ``norm_act`` (fused instance norm + LeakyReLU) on a channels-last map against ``InstanceNorm3d`` then
  ``LeakyReLU`` on the default layout (torch's channels-last instance norm loses precision, see the notes);
- the whole ``unet_brats`` network (MONAI's UNet run channels-last with fused norm + PReLU blocks) against
  MONAI's ``UNet`` with the same weights, on a training batch of 2.

    python benchmarks/bench_layers.py --repeats 7 --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.networks.nets import UNet
from torch import nn

import medseg_zoo as mz
from _report import publish
from medseg_zoo.layers import Linear, norm_act

CL = torch.channels_last_3d
Run = Callable[[torch.Tensor], torch.Tensor]


def step(run: Run, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    start = time.perf_counter()
    y = run(x)
    y.backward(torch.ones_like(y))
    return time.perf_counter() - start, y.detach()


def cases() -> list[tuple[str, str, Run, Run, torch.Tensor, torch.Tensor]]:
    """(layer, size, torch's run, medseg-zoo's run, torch's input, medseg-zoo's input)."""
    out = []
    for cin, cout, where in [(512, 1530, "qkv"), (510, 512, "attention output"), (512, 2048, "MLP in")]:
        ours = Linear(cin, cout)
        ref = nn.Linear(cin, cout)
        ref.load_state_dict(ours.state_dict())
        x = torch.randn(1, 256, cin)
        out.append((f"Linear ({where})", f"256 x {cin} -> {cout}", ref, ours, x, x))
    for slope in (0.01, None):
        act = nn.LeakyReLU(0.01) if slope else None
        x = torch.randn(1, 16, 128, 128, 64) * 2 + 1

        def ref(t: torch.Tensor, act: nn.Module | None = act) -> torch.Tensor:
            y = nn.functional.instance_norm(t)
            return y if act is None else act(y)

        def ours(t: torch.Tensor, act: nn.Module | None = act) -> torch.Tensor:
            return norm_act(t * 1, nn.InstanceNorm3d(16), act)  # norm_act overwrites a fresh map

        name = "norm_act (instance norm + LeakyReLU)" if slope else "norm_act (instance norm)"
        out.append((name, "16 x 128 x 128 x 64", lambda t, f=ref: f(t * 1), ours, x, x.contiguous(memory_format=CL)))
    monai_unet = UNet(3, 4, 3, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    zoo_unet = mz.create_model("unet_brats")
    zoo_unet.load_state_dict(monai_unet.state_dict())
    x = torch.randn(2, 4, 128, 128, 64)
    out.append(("`unet_brats` network vs MONAI `UNet`", "2 x 4 x 128 x 128 x 64", monai_unet, zoo_unet, x, x))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per layer (>= 5)")
    parser.add_argument("--output", type=Path, help="markdown file whose 'layers' section gets the table")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats must be at least 5, got {args.repeats}")
    torch.manual_seed(0)
    rows = [
        "| layer | size | torch / MONAI ms | medseg-zoo ms | ratio | max abs diff |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for layer, size, ref, ours, x_ref, x_ours in cases():
        times: dict[str, list[float]] = {"torch": [], "ours": []}
        outs = {}
        for _ in range(args.repeats + 1):  # the first round warms up
            for name, run, x in (("torch", ref, x_ref), ("ours", ours, x_ours)):
                seconds, outs[name] = step(run, x)
                times[name].append(seconds)
        t_ref, t_ours = (statistics.median(times[k][1:]) * 1e3 for k in ("torch", "ours"))
        diff = (outs["torch"] - outs["ours"]).abs().max().item()
        rows.append(f"| {layer} | {size} | {t_ref:.1f} | {t_ours:.1f} | {t_ours / t_ref:.2f}x | {diff:.1e} |")
    publish(
        [
            "## Layers (CPU, fp32)",
            "",
            f"Forward + backward, median of {args.repeats} alternating runs; same weights and inputs.",
            "",
            *rows,
        ],
        args.output,
        "layers",
    )


if __name__ == "__main__":
    main()
