"""The ``medseg-zoo`` command: a thin layer over the Python API.

Examples:
    medseg-zoo list
    medseg-zoo list 'unetr*' --pretrained
    medseg-zoo info unetr_brats
    medseg-zoo check-data Task01_BrainTumour --model unetr_brats
    medseg-zoo predict --checkpoint runs/unetr -i imagesTs/ -o predictions/
    medseg-zoo download segresnet_brats
    medseg-zoo convert --from monai-bundle brats_mri_segmentation --model segresnet_brats --to out/
    medseg-zoo push out/ my-org/segresnet-brats
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from medseg_zoo._factory import create_model
from medseg_zoo._registry import get_config, list_models, model_info
from medseg_zoo.data.discovery import DataSetError
from medseg_zoo.errors import MedsegZooError

__all__ = ["build_parser", "main", "model_table", "run"]


def _count_parameters(name: str) -> int:
    cfg = get_config(name)
    channels = {} if cfg.contract else {"in_channels": 1, "out_channels": 2}
    try:
        with torch.device("meta"):  # full-size counts without allocating weights
            model = create_model(name, **channels)
    except RuntimeError:  # networks that compute values while built (SwinUNETR) cannot be built on meta
        model = create_model(name, **channels)
    return sum(p.numel() for p in model.parameters())


def model_table(pattern: str = "*", pretrained: bool = False) -> str:
    """The registered models as a text table: name, channels, roi, parameters, weights."""
    rows = [("name", "inputs -> outputs", "roi", "params", "weights")]
    for name in list_models(pattern, pretrained=pretrained):
        cfg = get_config(name)
        c = cfg.contract
        outs = (
            ",".join(c.out_channels) if c and len(c.out_channels) <= 4 else f"{len(c.out_channels) if c else 0} classes"
        )
        io = f"{','.join(c.in_channels)} -> {outs} ({c.activation})" if c else "given by caller"
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


def _cases(inputs: list[str]) -> list[tuple[str, object]]:
    """(case name, predict input) pairs from files, folders of files, or NAME=path channel items."""
    from medseg_zoo.inference.io import InputError

    channel_items = [i for i in inputs if "=" in i and not Path(i).exists()]
    if channel_items:
        if len(channel_items) != len(inputs):
            raise InputError(f"mix of NAME=path channel inputs and plain inputs: {inputs}; give one case's channels")
        mapping = dict(item.split("=", 1) for item in channel_items)
        first = Path(next(iter(mapping.values())))
        return [(_stem(first), mapping)]
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


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else path.stem


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


def _download(args: argparse.Namespace) -> None:
    model = create_model(args.name, pretrained=True, cache_dir=args.cache_dir)
    print(model.load_report)


def _convert(args: argparse.Namespace) -> None:
    from medseg_zoo.convert import convert_checkpoint
    from medseg_zoo.hub import save_pretrained

    model = convert_checkpoint(args.source, args.source_format, args.model)
    print(save_pretrained(model, args.to))


def _push(args: argparse.Namespace) -> None:
    from medseg_zoo.hub import from_pretrained, push_to_hub

    model = from_pretrained(args.folder)  # validates the folder before anything is uploaded
    print(push_to_hub(model, args.repo_id, private=args.private or None))


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
    p = sub.add_parser(
        "predict",
        help="segment NIfTI volumes; outputs keep the input's grid, affine and header",
        epilog="Examples: medseg-zoo predict --checkpoint runs/unetr -i case.nii.gz -o seg.nii.gz\n"
        "          medseg-zoo predict --checkpoint runs/unetr -i imagesTs/ -o predictions/ --tta\n"
        "          medseg-zoo predict --checkpoint runs/unetr -i FLAIR=f.nii.gz T1w=t1.nii.gz T1gd=t1c.nii.gz "
        "T2w=t2.nii.gz -o seg.nii.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("-m", "--model", help="registered model with published weights")
    source.add_argument("--checkpoint", help="folder written by save_pretrained or medseg-zoo train")
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
    p = sub.add_parser(
        "download",
        help="download, check and cache a model's published weights (then usable offline)",
        epilog="Example: medseg-zoo download segresnet_brats",
    )
    p.add_argument("name")
    p.add_argument("--cache-dir", help="cache root (default: the Hugging Face cache)")
    p.set_defaults(func=_download)
    p = sub.add_parser(
        "convert",
        help="convert a third-party checkpoint into a medseg-zoo folder (config.json + model.safetensors)",
        epilog="Example: medseg-zoo convert --from monai-bundle brats_mri_segmentation --model segresnet_brats "
        "--to converted/segresnet_brats",
    )
    p.add_argument(
        "--from", dest="source_format", required=True, choices=["monai-bundle", "monai", "self-attention-cv"]
    )
    p.add_argument("source", help="bundle folder, or .pt/.pth state dict")
    p.add_argument("--model", required=True, help="registered configuration receiving the weights")
    p.add_argument("--to", required=True, help="output folder")
    p.set_defaults(func=_convert)
    p = sub.add_parser(
        "push",
        help="upload a medseg-zoo folder to the Hugging Face Hub",
        epilog="Example: medseg-zoo push converted/segresnet_brats my-org/segresnet-brats",
    )
    p.add_argument("folder")
    p.add_argument("repo_id")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=_push)
    p = sub.add_parser("demo", help="run the offline demo on synthetic data")
    p.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medseg-zoo`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (MedsegZooError, DataSetError, ValueError) as exc:
        print(f"medseg-zoo: error: {exc}", file=sys.stderr)
        return 2


def run() -> None:
    """Console-script wrapper: exits with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":
    run()
