"""Commands about data sets: check-data."""

from __future__ import annotations

import argparse

from medseg_zoo._registry import get_config
from medseg_zoo.cli.options import add_label_options, label_scheme

__all__ = ["add_commands"]


def _check_data(args: argparse.Namespace) -> int:
    from medseg_zoo.data import check_dataset, discover

    dataset = discover(args.folder, label_scheme=label_scheme(args))
    report = check_dataset(dataset, get_config(args.model).contract if args.model else None)
    print(report)
    return 0 if report.ok else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register check-data."""
    p = sub.add_parser(
        "check-data",
        help="check a data set folder (MSD, nnU-Net v2 or image/label pairs) before training",
        epilog="Example: medseg-zoo check-data Task01_BrainTumour --model unetr_brats",
    )
    p.add_argument("folder")
    p.add_argument("--model", help="registered model the data is meant for (channels, labels)")
    add_label_options(p)
    p.set_defaults(func=_check_data)
