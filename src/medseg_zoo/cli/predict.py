"""The predict command: NIfTI volumes in, segmentations on the same grids out."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from medseg_zoo._factory import create_model

__all__ = ["add_commands"]


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else path.stem


def _cases(inputs: list[str]) -> list[tuple[str, object]]:
    """(case name, predict input) pairs from files, folders of files, or NAME=path channel items."""
    from medseg_zoo.inference.io import InputError

    channel_items = [i for i in inputs if "=" in i and not Path(i).exists()]
    if channel_items:
        if len(channel_items) != len(inputs):
            raise InputError(f"mix of NAME=path channel inputs and plain inputs: {inputs}; give one case's channels")
        mapping = dict(item.split("=", 1) for item in channel_items)
        first = Path(next(iter(mapping.values())))
        return [(re.sub(r"_\d{4}$", "", _stem(first)), mapping)]  # nnU-Net's CASE_0000 names the case CASE
    cases = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.name.endswith((".nii.gz", ".nii")))
            if not files:
                raise InputError(f"{path}: folder holds no .nii or .nii.gz files")
            cases += [(_stem(p), p) for p in files]
        else:
            cases.append((_stem(path), path))
    return cases


def _predict(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from medseg_zoo.hub import from_pretrained
    from medseg_zoo.inference import Predictor

    model = from_pretrained(args.checkpoint) if args.checkpoint else create_model(args.model, pretrained=True)
    cases = _cases(args.inputs)
    single_file = len(cases) == 1 and args.output.endswith((".nii.gz", ".nii"))
    amp = {"auto": None, "on": True, "off": False}[args.amp]
    predictor = Predictor(
        model, device=args.device, overlap=args.overlap, tta=args.tta, amp=amp, progress=len(cases) == 1
    )
    for name, inputs in tqdm(cases, desc="cases", unit="case", disable=len(cases) == 1):
        out = Path(args.output) if single_file else Path(args.output) / f"{name}.nii.gz"
        predictor(inputs, out, kind=args.kind)
        print(out)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register predict."""
    p = sub.add_parser(
        "predict",
        help="segment NIfTI volumes; outputs keep the input's grid, affine and header",
        epilog="Examples: medseg-zoo predict --checkpoint runs/unetr/best -i case.nii.gz -o seg.nii.gz\n"
        "          medseg-zoo predict --checkpoint runs/unetr/best -i imagesTs/ -o predictions/ --tta\n"
        "          medseg-zoo predict --checkpoint runs/unetr/best -i FLAIR=f.nii.gz T1w=t1.nii.gz T1gd=t1c.nii.gz "
        "T2w=t2.nii.gz -o seg.nii.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("-m", "--model", help="registered model with published weights")
    source.add_argument("--checkpoint", help="folder written by save_pretrained or medseg-zoo train (RUN/best)")
    p.add_argument(
        "-i",
        "--inputs",
        nargs="+",
        required=True,
        help="4-D NIfTI files, folders of them, or NAME=path for each channel of one case",
    )
    p.add_argument("-o", "--output", required=True, help="output .nii.gz for one case, else a folder")
    p.add_argument("--kind", choices=["labels", "regions", "probabilities"], default="labels")
    p.add_argument("--tta", action="store_true", help="average over the 8 flips (8x slower)")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default 0.5)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--amp",
        choices=["auto", "on", "off"],
        default="auto",
        help="mixed precision (auto: bf16 on CUDA and CPUs with native bf16)",
    )
    p.set_defaults(func=_predict)
