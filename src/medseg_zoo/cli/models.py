"""Commands about models and weights: list, info, download, convert, push."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medseg_zoo._factory import count_parameters, create_ensemble
from medseg_zoo._registry import get_config, has_published_weights, list_models, model_info
from medseg_zoo.convert import FORMATS

__all__ = ["add_commands", "channel_list", "model_table"]


def channel_list(text: str) -> int | list[str]:
    """A channel count, or comma-separated names."""
    if text.isdigit():
        return int(text)
    return [t.strip() for t in text.split(",") if t.strip()]


def model_table(pattern: str = "*", pretrained: bool = False) -> str:
    """The registered models as a text table: name, channels, roi, parameters, weights, licence."""
    rows = [("name", "inputs -> outputs", "roi", "params", "weights", "licence")]
    for name in list_models(pattern, pretrained=pretrained):
        cfg = get_config(name)
        c = cfg.contract
        outs = (
            ",".join(c.out_channels) if c and len(c.out_channels) <= 4 else f"{len(c.out_channels) if c else 0} classes"
        )
        io = f"{','.join(c.in_channels)} -> {outs} ({c.activation})" if c else "given by caller"
        if cfg.headless:
            io = f"{','.join(c.in_channels)} -> your task's outputs (a pretrained starting point)"
        roi = "x".join(map(str, c.roi_size if c else cfg.default_roi))
        if cfg.members:
            weights = f"ensemble of {len(cfg.members)}"
        else:
            weights = "published" if has_published_weights(cfg) else ("planned" if cfg.weights else "-")
        licence = cfg.license.split(" (")[0] if cfg.license else "-"
        rows.append((name, io, roi, f"{count_parameters(name) / 1e6:.1f}M", weights, licence))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _list(args: argparse.Namespace) -> None:
    print(model_table(args.pattern, args.pretrained))


def _info(args: argparse.Namespace) -> None:
    info = model_info(args.name)
    info["parameters"] = count_parameters(args.name)
    print(json.dumps(info, indent=2, default=str))


def _download(args: argparse.Namespace) -> None:
    cfg = get_config(args.name)
    outputs = {"out_channels": len(cfg.contract.out_channels)} if cfg.headless else {}
    for model in create_ensemble(args.name, pretrained=True, cache_dir=args.cache_dir, **outputs):
        print(model.load_report)


def _convert(args: argparse.Namespace) -> None:
    from medseg_zoo.checkpoints import convert_checkpoint
    from medseg_zoo.convert import ConversionError
    from medseg_zoo.hub import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, save_pretrained

    to = Path(args.to)
    if to.exists() and not to.is_dir():
        raise ConversionError(f"--to {to} is a file; expected a folder for config.json and model.safetensors")
    foreign = (
        sorted(p.name for p in to.iterdir() if p.name not in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME))
        if to.is_dir()
        else []
    )
    if foreign:
        raise ConversionError(f"--to {to} holds other files ({', '.join(foreign[:5])}); choose an empty or new folder")
    channels = {k: v for k, v in (("in_channels", args.in_channels), ("out_channels", args.out_channels)) if v}
    model = convert_checkpoint(args.source, args.source_format, args.model, **channels)
    print(model.load_report)
    print(save_pretrained(model, args.to))


def _push(args: argparse.Namespace) -> None:
    from medseg_zoo.hub import from_pretrained, push_to_hub

    model = from_pretrained(args.folder)  # validates the folder before anything is uploaded
    print(push_to_hub(model, args.repo_id, private=args.private or None))


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register list, info, download, convert and push."""
    p = sub.add_parser("list", help="list registered models", epilog="Example: medseg-zoo list 'unet*' --pretrained")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'unetr*'")
    p.add_argument("--pretrained", action="store_true", help="only models with published weights")
    p.set_defaults(func=_list)
    p = sub.add_parser(
        "info",
        help="show a model's configuration and task contract as JSON",
        epilog="Example: medseg-zoo info unetr_brats",
    )
    p.add_argument("name", help="registered model name (medseg-zoo list)")
    p.set_defaults(func=_info)
    p = sub.add_parser(
        "download",
        help="download, check and cache a model's published weights (then usable offline)",
        epilog="Example: medseg-zoo download segresnet_brats",
    )
    p.add_argument("name", help="registered model name with published weights (an ensemble: every member)")
    p.add_argument("--cache-dir", type=Path, help="cache root (default: the Hugging Face cache)")
    p.set_defaults(func=_download)
    p = sub.add_parser(
        "convert",
        help="convert a third-party checkpoint into a medseg-zoo folder (config.json + model.safetensors)",
        epilog="Example: medseg-zoo convert --from monai-bundle brats_mri_segmentation --model segresnet_brats "
        "--to converted/segresnet_brats",
    )
    p.add_argument(
        "--from",
        dest="source_format",
        required=True,
        choices=[f for f in FORMATS if f != "safetensors"],
        help="; ".join(f"{name}: {text}" for name, (_, text) in FORMATS.items() if name != "safetensors"),
    )
    p.add_argument("source", help="bundle folder, or .pt/.pth state dict (a .zip holding one for BraTS 2021 folds)")
    p.add_argument("--model", required=True, help="registered configuration receiving the weights")
    p.add_argument("--to", required=True, help="output folder")
    p.add_argument("--in-channels", type=channel_list, help="input channels (a count or comma-separated names)")
    p.add_argument("--out-channels", type=channel_list, help="outputs (needed where the weights carry no task head)")
    p.set_defaults(func=_convert)
    p = sub.add_parser(
        "push",
        help="upload a medseg-zoo folder to the Hugging Face Hub",
        epilog="Example: medseg-zoo push converted/segresnet_brats my-org/segresnet-brats",
    )
    p.add_argument("folder", help="a checkpoint folder (save_pretrained, a run's best/)")
    p.add_argument("repo_id", help="Hub repository, org/name (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.set_defaults(func=_push)
