"""unetr_brats against self-attention-cv 1.2.3's UNETR: forward + backward, same weights, one process.

Both models get identical weights (converted with medseg_zoo.convert.self_attention_cv) and the same input,
1 x 4 x 128 x 128 x 64 fp32 on the CPU. Runs alternate between the two after one warm-up each; the table
reports the median and the fastest of ``--repeats`` runs, how far the outputs and gradients differ, and the
memory each model keeps for its backward pass (the tensors autograd saves in one forward, parameters and input
left out, each storage counted once).

    python benchmarks/bench_unetr.py --repeats 7 --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from self_attention_cv import UNETR as SourceUNETR

import medseg_zoo as mz
from _report import publish
from medseg_zoo.convert.self_attention_cv import convert_unetr

ROI = (128, 128, 64)


def step(model: torch.nn.Module, stem: str, x: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One forward + backward; returns seconds, the output and the gradient of the stem's first weight."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    y = model(x)
    y.square().mean().backward()
    seconds = time.perf_counter() - start
    return seconds, y.detach(), model.get_parameter(stem).grad.detach()


def kept_for_backward(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps from one forward, other than the parameters and ``x``."""
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    own = {p.untyped_storage().data_ptr() for p in model.parameters()} | {x.untyped_storage().data_ptr()}
    return sum(n for ptr, n in kept.items() if ptr not in own)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per model (>= 5)")
    parser.add_argument("--output", type=Path, help="markdown file whose 'unetr' section gets the table")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats must be at least 5, got {args.repeats}")

    torch.manual_seed(0)
    source = SourceUNETR(
        img_shape=ROI, input_dim=4, output_dim=3, embed_dim=512, patch_size=16, num_heads=10, dim_linear_block=2048
    )
    native = mz.create_model("unetr_brats")
    native.load_state_dict(convert_unetr(source.state_dict(), num_heads=10), strict=True)
    x = torch.randn(1, 4, *ROI)

    models = {  # name -> (model, its stem's first weight)
        "self-attention-cv 1.2.3 UNETR": (source, "init_conv.conv_block.0.weight"),
        "medseg-zoo unetr_brats": (native, "stem.conv1.conv.weight"),
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    outputs = {}
    for model, stem in models.values():  # warm-up: oneDNN primitive creation, allocator
        step(model, stem, x)
    for _ in range(args.repeats):
        for name, (model, stem) in models.items():
            seconds, y, grad = step(model, stem, x)
            times[name].append(seconds)
            outputs[name] = (y, grad)
    (y_src, g_src), (y_nat, g_nat) = outputs.values()
    out_diff = (y_src - y_nat).abs().max().item()
    grad_diff = ((g_src - g_nat).abs().max() / g_src.abs().max()).item()

    base = statistics.median(times["self-attention-cv 1.2.3 UNETR"])
    rows = [
        "| model | median s | fastest s | time vs self-attention-cv | kept for backward, MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, ts in times.items():
        med = statistics.median(ts)
        kept = kept_for_backward(models[name][0], x) / 2**20
        rows.append(f"| {name} | {med:.2f} | {min(ts):.2f} | {med / base:.2f}x | {kept:.0f} |")
    publish(
        [
            "## UNETR training step (CPU, fp32)",
            "",
            "Forward + backward of `unetr_brats` against self-attention-cv 1.2.3's `UNETR` (embed 512, 10 heads, "
            "MLP 2048, patch 16) with identical weights, input 1x4x128x128x64, loss `mean(y^2)`; "
            f"runs alternate, {args.repeats} timed runs each after one warm-up.",
            "",
            *rows,
            "",
            f"Outputs: max |difference| {out_diff:.2e} (output magnitude up to {y_src.abs().max().item():.2f}); "
            f"stem weight gradients: max relative difference {grad_diff:.2e}.",
        ],
        args.output,
        "unetr",
    )


if __name__ == "__main__":
    main()
