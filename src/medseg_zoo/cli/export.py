"""The export command: a zoo model's network as an ONNX file or a torch.export program, with its contract."""

from __future__ import annotations

import argparse
import sys

from medseg_zoo.cli.options import add_roi_option

__all__ = ["add_commands"]


def _export(args: argparse.Namespace) -> int:
    from medseg_zoo._factory import create_model
    from medseg_zoo._registry import get_config
    from medseg_zoo.errors import InvalidArgumentError
    from medseg_zoo.export import ExportError, check_export_output, export_model
    from medseg_zoo.hub import from_pretrained

    check_export_output(args.output, args.format, overwrite=args.overwrite, reads=[args.checkpoint or ""])
    if args.checkpoint:
        if args.pretrained:
            raise InvalidArgumentError("--pretrained goes with --model; a --checkpoint holds its own weights")
        model = from_pretrained(args.checkpoint)
    else:
        cfg = get_config(args.model)
        if cfg.members:
            raise ExportError(
                f"{args.model} is an ensemble; export each member ({', '.join(cfg.members)}) and pass all the files "
                "to predict"
            )
        if cfg.headless:
            raise ExportError(f"{args.model} is a pretrained starting point without a task head; fine-tune it first")
        if not args.pretrained:
            print(
                f"medseg-zoo: warning: exporting {args.model} with random weights (no --pretrained): for trying a "
                "deployment only",
                file=sys.stderr,
            )
        model = create_model(args.model, pretrained=args.pretrained)
    report = export_model(model, args.output, format=args.format, roi_size=args.roi_size, overwrite=args.overwrite)
    print(report)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register export."""
    p = sub.add_parser(
        "export",
        help="export a model for deployment (ONNX or torch.export), checked against the eager model",
        epilog="Examples: medseg-zoo export -m segresnet_brats --pretrained -o segresnet_brats.onnx\n"
        "          medseg-zoo export --checkpoint runs/unet/best -o unet.pt2\n"
        "          medseg-zoo predict --checkpoint segresnet_brats.onnx -i case.nii.gz --channels FLAIR,T1w,T1gd,T2w "
        "-o seg.nii.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("-m", "--model", help="registered model name")
    source.add_argument("--checkpoint", help="folder written by save_pretrained or medseg-zoo train (RUN/best)")
    p.add_argument("--pretrained", action="store_true", help="with --model: its published weights")
    p.add_argument("-o", "--output", required=True, help="file to write: .onnx or .pt2")
    p.add_argument(
        "--format",
        choices=["onnx", "torch-export"],
        help="onnx (run by ONNX Runtime) or torch-export (a .pt2 program); default: from the output's suffix",
    )
    add_roi_option(p, "window size the file takes (default: the model's roi)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file medseg-zoo exported")
    p.set_defaults(func=_export)
