"""The ``medseg-zoo`` command: a thin layer over the Python API.

Examples:
    medseg-zoo list
    medseg-zoo list 'unetr*' --pretrained
    medseg-zoo info unetr_brats
    medseg-zoo check-data Task01_BrainTumour --model unetr_brats
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from medseg_zoo._registry import get_config, list_models, model_info
from medseg_zoo.data.discovery import DataSetError
from medseg_zoo.errors import MedsegZooError

__all__ = ["build_parser", "main", "model_table", "run"]


def _count_parameters(name: str) -> int:
    cfg = get_config(name)
    from medseg_zoo._factory import create_model

    channels = {} if cfg.contract else {"in_channels": 1, "out_channels": 2}
    with torch.device("meta"):  # full-size counts without allocating weights
        model = create_model(name, **channels)
    return sum(p.numel() for p in model.parameters())


def model_table(pattern: str = "*", pretrained: bool = False) -> str:
    """The registered models as a text table: name, channels, roi, parameters, weights."""
    rows = [("name", "inputs -> outputs", "roi", "params", "weights")]
    for name in list_models(pattern, pretrained=pretrained):
        cfg = get_config(name)
        c = cfg.contract
        io = f"{','.join(c.in_channels)} -> {','.join(c.out_channels)} ({c.activation})" if c else "given by caller"
        roi = "x".join(map(str, c.roi_size if c else cfg.default_roi))
        weights = "published" if cfg.has_weights else ("planned" if cfg.weights else "-")
        rows.append((name, io, roi, f"{_count_parameters(name) / 1e6:.1f}M", weights))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _list(args: argparse.Namespace) -> None:
    print(model_table(args.pattern, args.pretrained))


def _info(args: argparse.Namespace) -> None:
    info = model_info(args.name)
    info["parameters"] = _count_parameters(args.name)
    print(json.dumps(info, indent=2, default=str))


def _check_data(args: argparse.Namespace) -> int:
    from medseg_zoo.data import check_dataset, discover

    dataset = discover(args.folder, label_scheme=args.label_scheme)
    contract = get_config(args.model).contract if args.model else None
    in_channels = contract.in_channels if contract else None
    report = check_dataset(dataset, in_channels=in_channels)
    print(report)
    return 0 if report.ok else 1


def _demo(args: argparse.Namespace) -> None:
    print("The end-to-end demo (synthetic data -> train -> predict) is not built yet. The registered models:\n")
    print(model_table())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``medseg-zoo`` command."""
    parser = argparse.ArgumentParser(
        prog="medseg-zoo",
        description="A model zoo for 3D medical image segmentation.",
        epilog="Examples: medseg-zoo list 'unetr*'   medseg-zoo info unetr_brats",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list registered models", epilog="Example: medseg-zoo list 'unet*' --pretrained")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'unetr*'")
    p.add_argument("--pretrained", action="store_true", help="only models with published weights")
    p.set_defaults(func=_list)
    p = sub.add_parser(
        "info",
        help="show a model's configuration and task contract as JSON",
        epilog="Example: medseg-zoo info unetr_brats",
    )
    p.add_argument("name")
    p.set_defaults(func=_info)
    p = sub.add_parser(
        "check-data",
        help="check a data set folder (MSD, nnU-Net v2 or image/label pairs) before training",
        epilog="Example: medseg-zoo check-data Task01_BrainTumour --model unetr_brats",
    )
    p.add_argument("folder")
    p.add_argument("--model", help="registered model whose input channels the data must match")
    p.add_argument("--label-scheme", help="label scheme of the label maps (default: from dataset.json)")
    p.set_defaults(func=_check_data)
    p = sub.add_parser("demo", help="run the offline demo on synthetic data")
    p.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medseg-zoo`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (MedsegZooError, DataSetError) as exc:
        print(f"medseg-zoo: error: {exc}", file=sys.stderr)
        return 2


def run() -> None:
    """Console-script wrapper: exits with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":
    run()
