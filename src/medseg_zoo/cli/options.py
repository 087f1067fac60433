"""Options that several commands share: what the label values mean (``--label-scheme`` / ``--labels``) and the
roi (``--roi-size``)."""

from __future__ import annotations

import argparse
from typing import Any

from medseg_zoo.errors import TrainingError
from medseg_zoo.transforms.labels import list_schemes

__all__ = ["add_label_options", "add_roi_option", "label_scheme"]


def label_scheme(args: argparse.Namespace) -> Any:
    """``--label-scheme`` (a built-in name) or ``--labels`` (names of the values 0, 1, ...), or ``None``."""
    if getattr(args, "labels", None):
        if args.label_scheme:
            raise TrainingError("give --label-scheme or --labels, not both")
        from medseg_zoo.transforms.labels import scheme_from_names

        try:
            return scheme_from_names(args.labels)
        except ValueError as exc:
            raise TrainingError(f"--labels: {exc}") from None
    return args.label_scheme


class _RoiSize(argparse.Action):
    """One number for a cube or three: any other count is an error, never a silent cube of the first."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if len(values) not in (1, 3):
            parser.error(f"{option_string} takes one number (a cube) or three, got {len(values)}: {values}")
        setattr(namespace, self.dest, tuple(values) * (3 // len(values)))


def add_roi_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--roi-size N`` or ``--roi-size X Y Z``, parsed to three integers."""
    p.add_argument(
        "--roi-size", type=int, nargs="+", action=_RoiSize, metavar="N", help=f"{what}: one number for a cube, or three"
    )


def add_label_options(p: argparse.ArgumentParser) -> None:
    """``--label-scheme`` and ``--labels``: what the label maps' values mean."""
    labels = p.add_mutually_exclusive_group()
    labels.add_argument(
        "--label-scheme",
        help=f"built-in label scheme of the label maps ({', '.join(list_schemes())}; default: from dataset.json)",
    )
    labels.add_argument(
        "--labels",
        type=lambda t: t.split(","),
        help="the label maps' classes by value, background first: --labels background,lesion (a folder of "
        "image/label pairs has no dataset.json to say it)",
    )
