"""The demo command: synthetic data in, a model fine-tuned, segmentations out, offline."""

from __future__ import annotations

import argparse

__all__ = ["add_commands"]


def _demo(args: argparse.Namespace) -> int:
    from medseg_zoo.demo import run_demo

    run_demo(args.output, epochs=args.epochs, minutes=args.minutes, device=args.device, model=args.model)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register demo."""
    from medseg_zoo.demo import DEMO_MODEL, EPOCHS

    p = sub.add_parser(
        "demo",
        help="the whole job offline on synthetic data: write a data set, train, segment held-out cases, score them",
        epilog="Example: medseg-zoo demo --output demo-output",
    )
    p.add_argument("--output", default="demo-output", help="demo folder (default demo-output; reused by later runs)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs (default {EPOCHS})")
    p.add_argument(
        "--minutes", type=float, help="optional training budget in minutes (the result then depends on the machine)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--model", default=DEMO_MODEL, help=f"model to train (default {DEMO_MODEL})")
    p.set_defaults(func=_demo)
