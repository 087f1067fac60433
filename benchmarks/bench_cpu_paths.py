"""What each of the zoo's CPU-specific code paths buys in a whole training step, on this machine's CPU kind.

The oneDNN products choose themselves by measurement per shape (the second table lists their choices);
``MEDSEG_ZOO_CPU_PATHS=off`` turns every path off. A training step of each network (batch 2 of 4 x 128 x 128 x 64
fp32: forward, Dice + BCE loss, backward, fused AdamW) is timed with every path on (as shipped) and with one path
switched off at a time, the variants alternating in one process; medians after one warm-up round.

    python benchmarks/bench_cpu_paths.py --repeats 5 --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

import medseg_zoo as mz
from _report import publish
from medseg_zoo.training.losses import loss_for

Switch = Callable[[nn.Module], Iterator[None]]


@contextmanager
def _as_shipped(model: nn.Module) -> Iterator[None]:
    yield


@contextmanager
def _attribute(owner: object, name: str, value: object) -> Iterator[None]:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _onednn_off(model: nn.Module) -> Iterator[None]:
    return _attribute(sys.modules["medseg_zoo.layers.linear"], "ONEDNN_PRODUCTS", False)


def _channels_last_off(model: nn.Module) -> Iterator[None]:
    return _attribute(model, "channels_last_on_cpu", False)


SWITCHES: dict[str, tuple[str, Switch]] = {
    "shipped": ("every path on", _as_shipped),
    "onednn": ("Linear as nn.Linear (MKL) everywhere", _onednn_off),
    "channels_last": ("default layout, torch's norms (no channels-last, no fused norms)", _channels_last_off),
}
NETWORKS = {  # which switches reach each network
    "unetr_brats": ("shipped", "onednn", "channels_last"),
    "unet_brats": ("shipped", "channels_last"),
}


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: nn.Module, x, y) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss(model(x).float(), y).backward()
    optimizer.step()
    return time.perf_counter() - start


def measure(name: str, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = mz.create_model(name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    loss = loss_for(model.pretrained_cfg.contract)
    x = torch.randn(2, 4, 128, 128, 64)
    y = (torch.rand(2, 3, 128, 128, 64) > 0.8).float()
    times: dict[str, list[float]] = {k: [] for k in NETWORKS[name]}
    for _ in range(repeats + 1):  # the first round warms up
        for key in NETWORKS[name]:
            with SWITCHES[key][1](model):
                times[key].append(_step(model, optimizer, loss, x, y))
    return {k: statistics.median(v[1:]) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (>= 3)")
    parser.add_argument("--output", type=Path, help="markdown file whose 'cpu-paths' section gets the table")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error(f"--repeats must be at least 3, got {args.repeats}")
    capability = torch.backends.cpu.get_cpu_capability()
    rows = ["| network | switched off | step s | shipped step s | the path saves |", "|---|---|---:|---:|---:|"]
    for name in NETWORKS:
        medians = measure(name, args.repeats)
        shipped = medians["shipped"]
        for key, seconds in medians.items():
            if key != "shipped":
                saved = 1 - shipped / seconds
                rows.append(f"| `{name}` | {SWITCHES[key][0]} | {seconds:.2f} | {shipped:.2f} | {saved:+.0%} |")
    choices = sys.modules["medseg_zoo.layers.linear"].linear_choices()
    chosen = [
        "| tokens x in -> out | training | oneDNN ms | torch ms | chosen |",
        "|---|---|---:|---:|---|",
        *(
            f"| {t} x {i} -> {o}{' (+bias)' if b else ''} | {'yes' if g else 'no'} | {ours * 1e3:.2f} | "
            f"{theirs * 1e3:.2f} | {'oneDNN' if pick else 'torch'} |"
            for (t, i, o, b, g, _), (pick, ours, theirs) in sorted(choices.items())
        ),
    ]
    publish(
        [
            f"## CPU-specific paths, whole training step ({capability})",
            "",
            f"Batch 2 of 4 x 128 x 128 x 64, fp32: forward, loss, backward, fused AdamW; median of {args.repeats} "
            'alternating steps per variant. "The path saves": the share of the step without it that it takes off.',
            "",
            *rows,
            "",
            "The transformer products of `medseg_zoo.layers.linear` measure both paths once per shape and process "
            "(best of three, with the backward pass when training) and keep the faster; what they chose here:",
            "",
            *chosen,
        ],
        args.output,
        f"cpu-paths-{capability.lower()}",
    )


if __name__ == "__main__":
    main()
