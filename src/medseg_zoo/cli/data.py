"""Commands about data sets: check-data, plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg_zoo._registry import get_config
from medseg_zoo.cli.options import add_label_options, label_scheme

__all__ = ["add_commands"]


def _check_data(args: argparse.Namespace) -> int:
    from medseg_zoo.data import check_dataset, discover

    dataset = discover(args.folder, label_scheme=label_scheme(args))
    contract = get_config(args.model).contract if args.model else None
    report = check_dataset(dataset, contract)
    print(report)
    if report.ok:
        from medseg_zoo.data.fingerprint import fingerprint
        from medseg_zoo.planning import compare_with_contract

        found = fingerprint(dataset, orientation=contract.orientation if contract else "RAS")
        print("\n".join(found.summary()))
        for line in compare_with_contract(found, contract, dataset.channels) if contract else []:
            print(line)
    return 0 if report.ok else 1


def _plan(args: argparse.Namespace) -> int:
    from medseg_zoo._guard import check_output_file
    from medseg_zoo.data import discover
    from medseg_zoo.errors import OutputError
    from medseg_zoo.planning import is_plan_file, plan

    dataset = discover(args.data, label_scheme=label_scheme(args))
    if args.output:
        reads = [p for c in dataset.cases for p in (*c.images, *([c.label] if c.label else []))]
        check_output_file(
            args.output, suffixes=(".json",), reads=reads, protected={"the data set": dataset.root}, what="--output"
        )
        if Path(args.output).exists() and not is_plan_file(args.output):
            raise OutputError(
                f"--output {args.output} exists and is not a plan medseg-zoo wrote; choose another path (a plan it "
                "wrote is replaced)"
            )
    result = plan(dataset, args.model, memory_gib=args.memory)
    print("\n".join(result.summary()))
    if args.output:
        print(f"plan written to {result.save(args.output)}")
    return 0


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

    p = sub.add_parser(
        "plan",
        help="plan spacing, normalisation, patch and batch from a data set, by nnU-Net's rules",
        epilog="Example: medseg-zoo plan --data Dataset002_Liver --model resenc_unet --memory 24 --output plan.json",
    )
    p.add_argument("--data", required=True, help="data set folder")
    p.add_argument("--model", default="unet", help="the architecture to plan for (default: unet)")
    p.add_argument("--memory", type=float, default=8.0, help="memory of one training step in GiB (default 8)")
    p.add_argument("--output", help="write the plan here (plan.json)")
    add_label_options(p)
    p.set_defaults(func=_plan)
