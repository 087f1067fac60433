"""The demo command (to be built: synthetic data -> train -> predict)."""

from __future__ import annotations

import argparse

from medseg_zoo.cli.models import model_table

__all__ = ["add_commands"]


def _demo(args: argparse.Namespace) -> None:
    print("The end-to-end demo (synthetic data -> train -> predict) is not built yet. The registered models:\n")
    print(model_table())


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register demo."""
    p = sub.add_parser("demo", help="run the offline demo on synthetic data")
    p.set_defaults(func=_demo)
