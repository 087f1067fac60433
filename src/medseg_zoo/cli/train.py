"""The train command: a thin layer over `medseg_zoo.training.Trainer`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from medseg_zoo._device import AMP_MODES
from medseg_zoo._factory import create_model
from medseg_zoo._registry import get_config
from medseg_zoo.cli.options import add_label_options, add_roi_option, label_scheme
from medseg_zoo.errors import TrainingError
from medseg_zoo.training.losses import LOSSES
from medseg_zoo.training.recipes import RECIPES, RESUMABLE_CHANGES

__all__ = ["add_commands"]

# TrainConfig fields set from options of the same name, only when given (else the recipe's value stands).
_CONFIG_OPTIONS = (
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "schedule",
    "warmup_epochs",
    "weight_decay",
    "grad_accumulation",
    "grad_clip",
    "loss",
    "amp",
    "device",
    "val_every",
    "val_fraction",
    "fold",
    "seed",
    "num_workers",
    "cache_dir",
    "max_minutes",
    "early_stopping",
    "freeze_encoder_epochs",
    "layer_decay",
    "pretrained_lr_scale",
    "foreground_ratio",
)


def _fold(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 0/5, got {text!r}") from None
    return k, n


def _channels(text: str) -> int | list[str] | str:
    """``data``, a count, or comma-separated names."""
    if text == "data":
        return text
    names = [t.strip() for t in text.split(",") if t.strip()]
    if len(names) == 1 and names[0].lstrip("+-").isdigit():
        if int(names[0]) < 1:
            raise argparse.ArgumentTypeError(f"a count must be 1 or more, got {text!r}")
        return int(names[0])
    if not names:
        raise argparse.ArgumentTypeError(f"expected 'data', a count or comma-separated names, got {text!r}")
    return names


def _model(args: argparse.Namespace, dataset: Any) -> Any:
    """The model to train: a checkpoint folder, or a registry name with channels and outputs fitted to the data
    where asked (``data``), where the architecture is generic, or where the weights are a starting point without
    a task head."""
    from medseg_zoo.hub import from_pretrained

    if args.checkpoint and (args.pretrained or args.roi_size):
        raise TrainingError(
            "--checkpoint gives the weights and the patch size: drop --pretrained and --roi-size (--in-channels "
            "and --out-channels adapt its stem and replace its head)"
        )
    cfg = None if args.checkpoint else get_config(args.model)
    generic = cfg is not None and (cfg.contract is None or cfg.headless)  # the data's channels and labels make it
    ins = args.in_channels or ("data" if generic else None)
    outs = args.out_channels or ("data" if generic else None)
    kwargs: dict[str, Any] = {"pretrained": args.pretrained} if not args.checkpoint else {}
    if ins is not None:
        kwargs["in_channels"] = list(dataset.channels) if ins == "data" else ins
    if outs == "data":
        kwargs["out_channels"] = len(dataset.scheme.channels)
        kwargs["label_scheme"] = dataset.scheme
    elif outs is not None:
        kwargs["out_channels"] = outs
    if args.roi_size:
        kwargs["roi_size"] = args.roi_size
    if cfg is not None and cfg.contract is None:  # a generic architecture: its contract comes from the data
        return _planned(args, dataset, kwargs)
    if args.spacing or args.normalization:
        raise TrainingError(
            f"--spacing and --normalization apply to generic architectures; {args.checkpoint or args.model} has a "
            "contract that gives them (its weights were trained so)"
        )
    return from_pretrained(args.checkpoint, **kwargs) if args.checkpoint else create_model(args.model, **kwargs)


def _compare(model: Any, dataset: Any) -> None:
    """A model's own contract against the data (once the data are checked): warnings naming the cases."""
    from medseg_zoo._contract import config_of
    from medseg_zoo.data.fingerprint import fingerprint
    from medseg_zoo.planning import compare_with_contract

    contract = config_of(model).contract
    for line in compare_with_contract(
        fingerprint(dataset, orientation=contract.orientation), contract, dataset.channels
    ):
        print(f"medseg-zoo: {line}", file=sys.stderr)


def _planned(args: argparse.Namespace, dataset: Any, kwargs: dict[str, Any]) -> Any:
    """A generic architecture planned from the data (nnU-Net's rules); an explicit option overrides its rule."""
    from medseg_zoo.planning import plan

    def three(values: Any) -> tuple | None:  # one number for a cube, or three
        return None if not values else tuple(values) * 3 if len(values) == 1 else tuple(values)

    result = plan(dataset, args.model, memory_gib=args.memory)
    given = {
        "roi_size": ("--roi-size", three(kwargs.pop("roi_size", None))),
        "spacing": ("--spacing", three(args.spacing)),
        "normalization": ("--normalization", args.normalization),
    }
    changes = {field: value for field, (_, value) in given.items() if value is not None}
    for field, value in changes.items():
        print(f"medseg-zoo: {given[field][0]} {value} overrides the plan's {getattr(result, field)}", file=sys.stderr)
    result = dataclasses.replace(result, **changes)
    print("\n".join(f"medseg-zoo: {line}" for line in result.summary()), file=sys.stderr)
    model = create_model(args.model, roi_size=result.roi_size, **kwargs)
    return result.apply(model)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _resume_conflicts(args: argparse.Namespace, run: dict[str, Any], contract: Any, given: dict[str, Any]) -> list[str]:
    """The options given with ``--resume`` that contradict the run: option, the run's value, the given one. An
    option equal to the run's value is no conflict (scripts repeat the whole command line)."""
    from medseg_zoo.training import TrainConfig
    from medseg_zoo.transforms.labels import LabelScheme, get_scheme

    conflicts: list[tuple[str, Any, Any]] = []

    def compare(option: str, ours: Any, theirs: Any, shown: Any = None) -> None:
        if ours != theirs:
            conflicts.append((option, theirs, ours if shown is None else shown))

    model = run.get("model", {})
    if args.model:
        compare("--model", args.model, model.get("name"))
    if args.checkpoint:
        start = model.get("start", {}).get("source")
        compare("--checkpoint", str(Path(args.checkpoint).resolve()), start, args.checkpoint)
    if args.pretrained:
        compare("--pretrained", True, bool(model.get("pretrained")))
    data = run.get("data", {})
    for option, value, names in (
        ("--in-channels", args.in_channels, list(contract.in_channels)),
        ("--out-channels", args.out_channels, list(contract.out_channels)),
    ):
        if value is None:
            continue
        if value == "data":
            wanted = list(data.get("channels", [])) if option == "--in-channels" else names
            compare(option, wanted, names, "data")
        elif isinstance(value, int):
            compare(option, value, len(names))
        else:
            compare(option, list(value), names, ",".join(value))
    if args.roi_size:
        compare("--roi-size", tuple(args.roi_size), tuple(contract.roi_size), " ".join(map(str, args.roi_size)))
    scheme = label_scheme(args)
    if scheme is not None:
        recorded = data.get("label_scheme")
        ran = LabelScheme.from_dict(recorded) if isinstance(recorded, dict) else get_scheme(recorded)
        wanted = get_scheme(scheme) if isinstance(scheme, str) else scheme
        if (wanted.labels, wanted.regions) != (ran.labels, ran.regions):
            option, shown = ("--labels", ",".join(args.labels)) if args.labels else ("--label-scheme", scheme)
            conflicts.append((option, ran.name if isinstance(recorded, str) else ",".join(ran.labels.values()), shown))
    saved = TrainConfig.from_dict({**run["config"], "output": args.output})
    if args.recipe:
        compare("--recipe", args.recipe, saved.recipe)
    if "epochs" in given and given["epochs"] < saved.epochs:
        conflicts.append(("--epochs", saved.epochs, given["epochs"]))  # a resumed run may grow, not shrink
    ours = TrainConfig.from_dict({**run["config"], **given})
    for name in given:
        if name not in RESUMABLE_CHANGES:
            compare(_option(name), getattr(ours, name), getattr(saved, name), given[name])
    return [f"{option} {given_value} (the run's: {ran})" for option, ran, given_value in conflicts]


def _resume_config(args: argparse.Namespace, given: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The resumed run's settings (the run's, with the options that may change), data set and last weights.

    Every option given with ``--resume`` is compared with the run's value: an equal one is accepted, ``--epochs``
    may grow, and one that contradicts the run is refused, naming the option, the run's value and the given one.
    """
    from medseg_zoo._contract import config_of
    from medseg_zoo.data import discover
    from medseg_zoo.hub import from_pretrained
    from medseg_zoo.training import TrainConfig
    from medseg_zoo.training.run_folder import RunFolder
    from medseg_zoo.transforms.labels import LabelScheme

    folder = RunFolder(args.output)
    run = folder.read()
    last = folder.path / "last"
    if not (last / "model.safetensors").is_file():
        raise TrainingError(f"--resume: {args.output} has no completed epoch (no last/); start again with --overwrite")
    try:
        model = from_pretrained(last)
        conflicts = _resume_conflicts(args, run, config_of(model).contract, given)
        config = TrainConfig.from_dict({**run["config"], **given})
        scheme = run["data"]["label_scheme"]
        data_root = args.data or run["data"]["root"]
    except (KeyError, TypeError) as exc:
        raise TrainingError(f"--resume: cannot read {folder.config_path} ({type(exc).__name__}: {exc})") from None
    if conflicts:
        raise TrainingError(
            f"--resume: {'; '.join(conflicts)}: a resumed run keeps its model, data labels and settings (only "
            f"{', '.join(_option(n) for n in RESUMABLE_CHANGES if n in _CONFIG_OPTIONS)} may change, --epochs only "
            "grow). Drop the "
            f"option, or start a new run from its weights: --checkpoint {last} --output NEW"
        )
    scheme = LabelScheme.from_dict(scheme) if isinstance(scheme, dict) else scheme
    if not args.data and not Path(data_root).is_dir():
        raise TrainingError(
            f"--resume: the run's data set {data_root} is gone; if it moved, pass its new place with --data"
        )
    if args.data and Path(args.data).resolve() != Path(run["data"]["root"]).resolve():
        print(
            f"medseg-zoo: note: resuming on the data set {args.data}; the run started on {run['data']['root']} "
            "(its split's case names are looked up there)",
            file=sys.stderr,
        )
    dataset = discover(data_root, label_scheme=scheme)
    return config, dataset, model


def _train(args: argparse.Namespace) -> int:
    from medseg_zoo._guard import check_output_folder
    from medseg_zoo.data import discover
    from medseg_zoo.training import Trainer, recipe
    from medseg_zoo.training.run_folder import RunFolder

    given = {name: getattr(args, name) for name in _CONFIG_OPTIONS if getattr(args, name) is not None}
    if args.no_progress:
        given["progress"] = False
    if args.compile:
        given["compile"] = True
    given["output"] = args.output
    if args.resume:
        config, dataset, model = _resume_config(args, given)
    else:
        if not args.data or not (args.model or args.checkpoint):
            raise TrainingError("give --data and --model (or --checkpoint), or --resume to continue a run")
        config = recipe(args.recipe or "default", **given)
        if args.model:
            get_config(args.model)  # an unknown name is refused before the data is read
        if args.checkpoint:  # the run must not replace the model it starts from
            check_output_folder(args.output, protected={"the checkpoint": args.checkpoint}, what="--output")
        dataset = discover(args.data, label_scheme=label_scheme(args))
        model = _model(args, dataset)
        if "batch_size" not in given and getattr(model, "plan", None):
            config = config.replace(batch_size=model.plan["batch_size"])
    val_data = args.val_data
    if args.resume and val_data is None:  # the run's own validation set, where it still is
        val_data = RunFolder(args.output).read().get("data", {}).get("val_root")
    if val_data is not None:
        val_data = discover(val_data, label_scheme=dataset.scheme)
    trainer = Trainer(model, dataset, config, val_data=val_data, resume=args.resume, overwrite=args.overwrite)
    if not args.resume and not getattr(model, "plan", None) and trainer.is_main:
        _compare(model, dataset)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        if trainer.is_main:
            print(f"\nmedseg-zoo: interrupted. {RunFolder(config.output).resume_hint()}", file=sys.stderr)
        return 130
    if trainer.is_main:
        print(f"best checkpoint: {Path(config.output) / 'best'} (mean Dice {trainer.best:.4f})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register train."""
    p = sub.add_parser(
        "train",
        help="fine-tune or train a model on a data set folder (MSD, nnU-Net v2, image/label pairs)",
        epilog="Examples:\n"
        "  medseg-zoo train --model unet_brats --data Task01_BrainTumour --output runs/unet\n"
        "  medseg-zoo train --model segresnet_brats --pretrained --in-channels data --data Task01_BrainTumour "
        "--output runs/segresnet --epochs 50\n"
        "  medseg-zoo train --model unetr_brats --recipe unetr_brats --data Task01_BrainTumour --output runs/seed\n"
        "  medseg-zoo train --model swin_unetr_ssl --pretrained --data MyLesions --labels background,lesion "
        "--output runs/lesions\n"
        "  medseg-zoo train --output runs/unet --resume\n"
        "  torchrun --nproc-per-node 4 -m medseg_zoo train --model unet_brats --data Task01 --output runs/ddp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("-m", "--model", help="registered model name (medseg-zoo list)")
    source.add_argument("--checkpoint", help="start from a saved model folder (save_pretrained, RUN/best)")
    p.add_argument("--data", help="data set folder")
    p.add_argument("--output", required=True, help="run folder")
    p.add_argument("--pretrained", action="store_true", help="start from the model's published weights")
    p.add_argument(
        "--in-channels",
        type=_channels,
        help="the model's input channels: 'data' (the data set's), a count, or comma-separated names",
    )
    p.add_argument("--out-channels", type=_channels, help="'data': outputs and label scheme from the data set")
    add_label_options(p)
    add_roi_option(p, "patch size in voxels")
    p.add_argument("--recipe", help="named settings: " + ", ".join(RECIPES))
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=["sgd", "adamw"])
    p.add_argument("--schedule", choices=["poly", "cosine", "constant"])
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--grad-accumulation", type=int, help="batches per optimiser step")
    p.add_argument("--grad-clip", type=float, help="maximum gradient norm (default 12)")
    p.add_argument(
        "--loss",
        choices=LOSSES,
        help="dice_ce: Dice + binary cross-entropy per region (sigmoid) or cross-entropy (softmax); monai_dice_ce: "
        "MONAI's DiceCELoss as the seed tutorial called it",
    )
    p.add_argument("--amp", choices=AMP_MODES, help="mixed precision (auto: bf16 on CUDA, float32 on the CPU)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--val-every", type=int, help="validate every K epochs")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--val-fraction", type=float, help="fraction of the cases held out (default 0.2)")
    split.add_argument("--fold", type=_fold, help="validate on fold K of N, e.g. 0/5")
    split.add_argument("--val-data", help="validate on this data set folder instead (every case of --data then trains)")
    p.add_argument("--seed", type=int)
    p.add_argument("--num-workers", type=int, help="DataLoader workers (default: 0 on the CPU, up to 8 with a GPU)")
    p.add_argument("--cache-dir", help="keep preprocessed cases here instead of in memory")
    p.add_argument("--foreground-ratio", type=float, help="fraction of crops centred on labelled voxels")
    p.add_argument("--max-minutes", type=float, help="stop before an epoch that would end after this budget")
    p.add_argument("--early-stopping", type=int, help="stop after this many validations without improvement")
    p.add_argument("--freeze-encoder-epochs", type=int, help="keep the encoder's weights for the first N epochs")
    p.add_argument("--layer-decay", type=float, help="layer-wise learning-rate decay of transformer encoders")
    p.add_argument("--pretrained-lr-scale", type=float, help="learning-rate factor of pretrained parameters")
    p.add_argument(
        "--spacing", type=float, nargs="+", metavar="MM", help="target spacing (generic models; default: planned)"
    )
    p.add_argument("--normalization", help="intensity normalisation (generic models; default: planned)")
    p.add_argument("--memory", type=float, default=8.0, help="GiB one training step may take, for the plan (default 8)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last epoch")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --output")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or epoch lines")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training step and validation (faster on GPUs after a warm-up)",
    )
    p.set_defaults(func=_train)
