"""The ``medseg-zoo`` command: a thin layer over the Python API, one module per group of commands.

Examples:
    medseg-zoo list
    medseg-zoo info unetr_brats
    medseg-zoo check-data Task01_BrainTumour --model unetr_brats
    medseg-zoo train --model unet_brats --data Task01_BrainTumour --output runs/unet
    medseg-zoo evaluate --checkpoint runs/unet/best --data Task01_BrainTumour
    medseg-zoo predict --checkpoint runs/unet/best -i imagesTs/ -o predictions/
    medseg-zoo export --checkpoint runs/unet/best -o unet.onnx
    medseg-zoo download segresnet_brats
    medseg-zoo convert --from monai-bundle brats_mri_segmentation --model segresnet_brats --to out/
    medseg-zoo push out/ my-org/segresnet-brats
    medseg-zoo demo
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from medseg_zoo.cli import data, demo, evaluate, export, models, predict, train
from medseg_zoo.cli.models import model_table
from medseg_zoo.data.checks import DataCheckError
from medseg_zoo.data.discovery import DataSetError
from medseg_zoo.errors import MedsegZooError

__all__ = ["build_parser", "main", "model_table", "run"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``medseg-zoo`` command."""
    parser = argparse.ArgumentParser(
        prog="medseg-zoo",
        description="A model zoo for 3D medical image segmentation.",
        epilog="Examples: medseg-zoo list 'unetr*'   medseg-zoo demo   medseg-zoo train --help",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (models, data, train, evaluate, predict, export, demo):
        module.add_commands(sub)
    return parser


_NEGATIVE = re.compile(r"-((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf(inity)?|nan)", re.IGNORECASE)


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--lr -1e-3`` as ``--lr=-1e-3``: argparse takes a negative number in exponent form for an option and
    answers "expected one argument"; joined, the value reaches the check that says what is wrong with it."""
    out: list[str] = []
    for token in argv:
        if out and _NEGATIVE.fullmatch(token) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medseg-zoo`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(_join_negative_values(argv))
    try:
        return args.func(args) or 0
    except DataCheckError as exc:
        print(f"medseg-zoo: the data set has errors:\n{exc}", file=sys.stderr)
        return 2
    except (MedsegZooError, DataSetError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"medseg-zoo: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # every file is written atomically: what exists is whole (train says how to resume)
        print("\nmedseg-zoo: interrupted; files already written are complete, nothing is half-written", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script wrapper: exits with `main`'s status."""
    sys.exit(main())
