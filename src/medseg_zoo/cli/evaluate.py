"""The evaluate command: a thin layer over `medseg_zoo.training.evaluate`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from medseg_zoo._device import AMP_MODES
from medseg_zoo.cli.options import add_label_options, label_scheme
from medseg_zoo.errors import TrainingError

__all__ = ["add_commands"]


def _evaluate(args: argparse.Namespace) -> int:
    from medseg_zoo._guard import check_output_file
    from medseg_zoo.data import check_dataset, discover
    from medseg_zoo.export import EXPORT_FORMATS, load_exported
    from medseg_zoo.hub import from_pretrained
    from medseg_zoo.training import evaluate
    from medseg_zoo.training.evaluation import check_table_output, sidecar_path
    from medseg_zoo.training.run_folder import RunFolder

    exported = bool(args.checkpoint) and args.checkpoint.endswith(tuple(EXPORT_FORMATS))
    if args.checkpoint and not args.checkpoint.startswith("hf-hub:") and not Path(args.checkpoint).exists():
        raise TrainingError(
            f"--checkpoint {args.checkpoint}: no such file or folder; expected a model folder (RUN/best, RUN/last, "
            "a save_pretrained folder) or an exported .onnx / .pt2 file"
        )
    if args.checkpoint and not exported and RunFolder(args.checkpoint).run_config() is not None:
        raise TrainingError(
            f"--checkpoint {args.checkpoint} is a run folder; evaluate one of its checkpoints: "
            f"--checkpoint {Path(args.checkpoint) / 'best'} (or last)"
        )
    dataset = discover(args.data, label_scheme=label_scheme(args))
    split = args.split or ("val" if args.checkpoint and not exported else "all")
    if args.predictions and split == "val":
        raise TrainingError("--split val takes a run's validation cases from its checkpoint; with --predictions use "
                            "--split all or test")  # fmt: skip
    if args.output:
        reads = [p for c in (*dataset.cases, *dataset.test) for p in (*c.images, *([c.label] if c.label else []))]
        folders = {"the data set": dataset.root, "the checkpoint": args.checkpoint, "the predictions": args.predictions}
        protected = {name: folder for name, folder in folders.items() if folder}
        for path, suffix in ((args.output, ".csv"), (sidecar_path(args.output), ".json")):
            check_output_file(path, suffixes=(suffix,), reads=reads, protected=protected, what="--output")
        check_table_output(args.output, overwrite=args.overwrite)
    if split == "val":
        run_path = Path(args.checkpoint).resolve().parent / "config.json"
        try:
            names = set(json.loads(run_path.read_text())["split"]["val"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            raise TrainingError(
                f"--split val needs the run folder of the checkpoint ({run_path} with the split); "
                "use --split all or test for a checkpoint outside a run"
            ) from None
        cases = [c for c in dataset.cases if c.name in names]
        if len(cases) != len(names):
            raise TrainingError(f"{args.data}: some validation cases of the run are missing: {sorted(names)}")
    elif split == "test":
        cases = [c for c in dataset.test if c.label is not None]
        if not cases:
            raise TrainingError(f"{args.data}: no labelled test cases (imagesTs/ with labelsTs/)")
    else:
        cases = [c for c in dataset.cases if c.label is not None]
    if args.predictions:
        source = args.predictions
    else:
        source = load_exported(args.checkpoint) if exported else from_pretrained(args.checkpoint)
        report = check_dataset(dataclasses.replace(dataset, cases=tuple(cases)), source)
        report.raise_for_errors()
        for problem in report.problems:
            print(f"medseg-zoo: {problem}", file=sys.stderr)
    result = evaluate(
        source,
        cases,
        dataset.scheme,
        metrics=args.metrics,
        device=args.device,
        amp=args.amp,
        progress=True,
        channels=dataset.channels,
    )
    print(result)
    if args.output:
        print(result.to_csv(args.output, overwrite=args.overwrite))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register evaluate."""
    p = sub.add_parser(
        "evaluate",
        help="per-case and mean Dice / HD95 (or BraTS lesion-wise metrics) of a checkpoint, or of prediction files, "
        "on a data set, each case on its own grid",
        epilog="Examples: medseg-zoo evaluate --checkpoint runs/unet/best --data Task01_BrainTumour --output dice.csv\n"
        "          medseg-zoo evaluate --predictions predictions/ --data Task01_BrainTumour --metrics brats\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint", help="model folder (RUN/best, RUN/last, save_pretrained), or an exported .onnx / .pt2 file"
    )
    source.add_argument(
        "--predictions", help="folder of label maps <case>.nii.gz written by any tool, scored without a model"
    )
    p.add_argument("--data", required=True, help="data set folder")
    p.add_argument(
        "--split",
        choices=["val", "test", "all"],
        help="val: the run's validation cases (the default with a checkpoint folder); test: imagesTs with "
        "labelsTs; all: every labelled case (the default with --predictions or an exported file)",
    )
    p.add_argument(
        "--metrics",
        choices=["default", "brats"],
        default="default",
        help="default: Dice and HD95; brats: the BraTS challenges' lesion-wise and global Dice, NSD and HD95 "
        "(panoptica: pip install 'medseg-zoo[brats]')",
    )
    add_label_options(p)
    p.add_argument("--output", help="CSV file for the table (and a .json sidecar beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace a table an earlier evaluate wrote there")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--amp",
        choices=AMP_MODES,
        default="auto",
        help="mixed precision (auto: bf16 on CUDA and CPUs with native bf16)",
    )
    p.set_defaults(func=_evaluate)
