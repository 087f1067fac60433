"""Does a pretrained start beat training from scratch, by more than the noise? Measured offline on synthetic data.

1. Pretrain ``resenc_l_openmind``'s architecture (at a small width) on synthetic BraTS-like set A (24 cases).
2. Save it twice: as a zoo run (``RUN/last``, the whole network) and in nnssl's published layout
   (``checkpoint_final.pth`` of ``dynamic_network_architectures``' ResEnc U-Net), as OpenMind's encoders come.
3. Fine-tune on two targets that differ from A as users' data differ from a publisher's:
   - *other scanner*: the same regions from another site (``make_dataset(domain="other_scanner")``: other
     contrasts and intensity scale, 1 x 1 x 3 mm slices, a wider field of view, other orientations);
   - *new task*: another label set on A's kind of images (``task="anatomy"``: white matter, ventricles), so the
     head is replaced.
   From four starts: scratch; the whole network (``from_pretrained(RUN/last)``, the head re-initialised where the
   labels differ); the encoder only (the nnssl file through ``convert_checkpoint``, exactly as
   ``create_model("resenc_l_openmind", pretrained=True)`` loads it: decoder and head fresh); the encoder frozen
   throughout (the lower bound a linear probe gives).
4. With 2, 4 and 8 labelled cases (drawn per seed from a pool of 8), the same number of optimiser steps in every
   cell, 5 seeds; every run is scored on one fixed test set of 8 cases per target that no run trains on or
   selects with (the last epoch's model is scored; the runs have no early stopping).
5. At 4 cases, the encoder start is also fine-tuned with the publishers' recipes (a warm-up of the whole network;
   nnssl's sawtooth: decoder alone first, then a warm-up of the whole network; loaded parameters at a tenth of
   the rate), to choose what ``--pretrained`` does by default.

Reported: mean and standard deviation of the test mean Dice per cell; the paired difference to scratch (same seed,
same cases, same crops) with its 95 % t interval; test Dice against epochs at 4 cases (a PNG).

    python benchmarks/bench_transfer.py --output docs/benchmarks.md --plot docs/images/transfer_curves.png
    python benchmarks/bench_transfer.py --quick      # 2 seeds, 2 and 4 cases, fewer steps: a first look
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from scipy import stats
from torch import nn

import medseg_zoo as mz
from _report import publish
from medseg_zoo._registry import get_config
from medseg_zoo.convert import convert_state_dict
from medseg_zoo.data import DataSet, discover, make_dataset
from medseg_zoo.training import TrainConfig, Trainer
from medseg_zoo.transforms.labels import get_scheme

NAME = "resenc_l_openmind"
WIDTHS = {"features": (8, 16, 32, 64), "strides": (1, 2, 2, 2), "blocks": (1, 1, 1, 1)}
ROI = 48
CHANNELS = ["FLAIR", "T1w", "T1gd", "T2w"]
STARTS = ("scratch", "whole network", "encoder", "encoder frozen")
RECIPES = {  # the encoder start's fine-tuning, as fractions of the run (the publishers': 50 of 1000 epochs)
    "zoo defaults": {},
    "warm-up": {"warmup": 0.2},
    "sawtooth": {"freeze": 0.2, "warmup": 0.2},
    "loaded at 0.1x": {"pretrained_lr_scale": 0.1},
}
TARGETS = {  # name: (make_dataset settings, grid of a case)
    "other scanner": ({"domain": "other_scanner", "task": "tumour"}, (48, 48, 16)),
    "new task": ({"domain": "brats", "task": "anatomy"}, (40, 40, 40)),
}


def _publisher_network() -> ResidualEncoderUNet:
    n = len(WIDTHS["features"])
    return ResidualEncoderUNet(
        4, n, list(WIDTHS["features"]), nn.Conv3d, 3, list(WIDTHS["strides"]), list(WIDTHS["blocks"]), 3,
        [1] * (n - 1), conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True,
    )  # fmt: skip


def save_nnssl(model: nn.Module, path: Path) -> None:
    """The zoo model's weights in the nnssl layout: the publisher's network, each of its tensors (aliases
    included) filled from the zoo tensor the converter maps it to."""
    publisher = _publisher_network()
    state = publisher.state_dict()
    converted = convert_state_dict(state, "nnssl", get_config(NAME))
    by_tensor = {id(tensor): zoo_key for zoo_key, tensor in converted.items()}
    own = model.state_dict()
    with torch.no_grad():
        for tensor in state.values():
            zoo_key = by_tensor.get(id(tensor))
            if zoo_key is not None:
                tensor.copy_(own[zoo_key])
    torch.save(
        {"network_weights": publisher.state_dict(), "nnssl_adaptation_plan": {"key_to_encoder": "encoder.stages"}}, path
    )


@dataclasses.dataclass
class Target:
    name: str
    pool: DataSet
    test: DataSet

    def outputs(self) -> dict:
        """create_model arguments for this target's labels."""
        return {"label_scheme": self.pool.scheme}


def _start(start: str, target: Target, run: Path, nnssl: Path, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # the fresh parts start alike across starts of one seed
    if start == "scratch":
        return mz.create_model(NAME, in_channels=CHANNELS, roi_size=ROI, **target.outputs(), **WIDTHS)
    if start == "whole network":
        model = mz.from_pretrained(run)
        kept = get_scheme(model.pretrained_cfg.contract.label_scheme).labels == target.pool.scheme.labels
        return model if kept else mz.from_pretrained(run, **target.outputs())
    return mz.convert_checkpoint(nnssl, "nnssl", NAME, in_channels=CHANNELS, roi_size=ROI, **target.outputs(), **WIDTHS)


def _fit(
    model: nn.Module, train: DataSet, test: DataSet, output: Path, epochs: int, seed: int, curve: bool, **recipe
) -> list[dict]:
    changes = {
        "warmup_epochs": round(recipe.pop("warmup", 0) * epochs),
        "freeze_encoder_epochs": round(recipe.pop("freeze", 0) * epochs),
        **recipe,
    }
    config = TrainConfig(
        output=str(output),
        epochs=epochs,
        val_every=max(1, epochs // 4) if curve else epochs,
        seed=seed,
        progress=False,
        overlap=0.25,
        **changes,
    )
    return Trainer(model, train, config, val_data=test).fit()


def _job(job: tuple) -> tuple:
    """One fine-tuning run: its cell, seed, last test mean Dice, test Dice against epochs, load report."""
    target, n, start, recipe, seed, run, nnssl, work, steps, batch = job
    epochs = max(1, round(steps * batch / n))
    cases = random.Random(seed).sample(list(target.pool.cases), n)
    train = dataclasses.replace(target.pool, cases=tuple(sorted(cases, key=lambda c: c.name)))
    model = _start("encoder" if start == "encoder frozen" else start, target, run, nnssl, seed)
    settings = dict(RECIPES[recipe])
    if start == "encoder frozen":
        settings["freeze"] = 1.0
    out = work / f"{target.name}-{n}-{start}-{recipe}-{seed}".replace(" ", "_").replace(",", "")
    history = _fit(model, train, target.test, out, epochs, seed, n == 4, **settings)
    label = start if recipe == "zoo defaults" else f"encoder, {recipe}"
    curve = [(r["epoch"], r["mean_dice"]) for r in history if "mean_dice" in r]
    report = str(model.load_report) if hasattr(model, "load_report") else ""
    return (target.name, n, label), seed, history[-1]["mean_dice"], curve, report


def _interval(diffs: list[float]) -> tuple[float, float, float]:
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean, mean - half, mean + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=24, help="optimiser steps of every fine-tuning run")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cases", type=int, nargs="+", default=[2, 4, 8], help="labelled training cases")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 2 and 4 cases, 16 steps")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="runs side by side")
    parser.add_argument("--output", type=Path, help="markdown file whose 'transfer' section gets the tables")
    parser.add_argument("--plot", type=Path, help="PNG of test Dice against epochs at 4 cases")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.cases, args.steps, args.pretrain_epochs = 2, [2, 4], 16, 10
    began = time.perf_counter()
    batch = TrainConfig().batch_size
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        set_a = make_dataset(work / "A", n_cases=24, shape=(48, 48, 48), seed=11)
        pretrain = TrainConfig(output=str(work / "pretrain"), epochs=args.pretrain_epochs, val_every=5,
                               progress=False, overlap=0.25)  # fmt: skip
        torch.manual_seed(0)
        source = mz.create_model(NAME, in_channels=CHANNELS, label_scheme="msd_task01", roi_size=ROI, **WIDTHS)
        pretrained_dice = Trainer(source, set_a, pretrain).fit()[-1]["mean_dice"]
        pretrain_seconds = time.perf_counter() - began
        run = work / "pretrain" / "last"
        nnssl = work / "checkpoint_final.pth"
        save_nnssl(mz.from_pretrained(run), nnssl)
        targets = []
        for i, (name, (settings, shape)) in enumerate(TARGETS.items()):
            pool = discover(
                make_dataset(work / f"pool{i}", n_cases=max(args.cases), shape=shape, seed=31 + i, **settings)
            )
            test = discover(make_dataset(work / f"test{i}", n_cases=8, shape=shape, seed=41 + i, **settings))
            targets.append(Target(name, pool, test))

        jobs = []
        for target in targets:
            for n in args.cases:
                cells = [(s, "zoo defaults") for s in STARTS]
                if n == 4:
                    cells += [("encoder", r) for r in RECIPES if r != "zoo defaults"]
                for seed in range(args.seeds):
                    for start, recipe in cells:
                        jobs.append((target, n, start, recipe, seed, run, nnssl, work, args.steps, batch))
        scores: dict[tuple, list[float]] = {}  # (target, cases, start) -> test mean Dice per seed
        curves: dict[tuple, list[list[tuple[int, float]]]] = {}
        reports: dict[str, str] = {}
        # Runs side by side, one thread each: one run took 12.1 s on two threads and 16.4 s on one (2-core EPYC,
        # measured once), so two at a time finish 1.5x the runs per minute.
        with multiprocessing.get_context("spawn").Pool(
            args.workers, initializer=torch.set_num_threads, initargs=(1,)
        ) as workers:
            for key, seed, dice, curve, report in workers.imap(_job, jobs):
                scores.setdefault(key, []).append(dice)
                curves.setdefault(key, []).append(curve)
                if report:
                    reports.setdefault(f"{key[0]}, {key[2]}", report)
                print(f"{key[0]}, {key[1]} cases, {key[2]}, seed {seed}: {dice:.3f}", flush=True)
        runs = len(jobs)
    minutes = (time.perf_counter() - began) / 60
    lines = _tables(args, scores, targets, batch)
    if args.plot:
        _plot(curves, targets, args.plot)
    publish(
        [
            "## Does pretraining help? Transfer to other data (CPU)",
            "",
            f"Pretraining: `{NAME}`'s architecture at a small width (features 8-64, one block per stage, roi {ROI}), "
            f"{args.pretrain_epochs} epochs on 24 synthetic BraTS-like cases (validation mean Dice "
            f"{pretrained_dice:.3f}, {pretrain_seconds:.0f} s). Targets: **other scanner** (the same regions: other "
            "contrasts, intensity scale, 1 x 1 x 3 mm slices, field of view and orientations) and **new task** "
            "(white matter and ventricles on images like A's: the head is replaced). Each cell: "
            f"{args.seeds} seeds, the training cases drawn per seed from a pool of {max(args.cases)}, "
            f"{args.steps} optimiser steps of batch {batch} (epochs = steps x batch / cases), the Trainer's "
            "defaults (AdamW 1e-2, cosine decay) unless a recipe says otherwise; scored on 8 test cases no run "
            "trains on or selects with (mean Dice of the last epoch's model). Differences are paired with scratch "
            "(same seed, cases and crops); [low, high] is the 95 % t interval of the mean difference; **bold**: "
            "the interval lies above 0.",
            "",
            *lines,
            "",
            f"{runs} fine-tuning runs; the whole benchmark took {minutes:.1f} min.",
            *(
                ["", f"![Test Dice against epochs at 4 cases]({_relative(args.plot, args.output)})"]
                if args.plot
                else []
            ),
            "",
            "What the starts loaded (`model.load_report`, as fine-tuning prints it):",
            "",
            *(f"- {k}: {v}" for k, v in reports.items()),
        ],
        args.output,
        "transfer",
    )


def _tables(args: argparse.Namespace, scores: dict, targets: list[Target], batch: int) -> list[str]:
    def cell(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.3f} ± {sd:.3f}"

    def diff(values: list[float], base: list[float]) -> str:
        mean, low, high = _interval([v - b for v, b in zip(values, base, strict=True)])
        text = f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
        return f"**{text}**" if low > 0 else text

    lines = [
        "| target | cases | scratch | whole network | (diff) | encoder | (diff) | encoder frozen | (diff) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        for n in args.cases:
            base = scores[(target.name, n, "scratch")]
            row = [target.name, str(n), cell(base)]
            for start in STARTS[1:]:
                values = scores[(target.name, n, start)]
                row += [cell(values), diff(values, base)]
            lines.append("| " + " | ".join(row) + " |")
    if 4 in args.cases:
        lines += [
            "",
            "Fine-tuning recipes of the encoder start, 4 cases (fractions of the run: the publishers warm up for 50 of "
            "1000 epochs, or 10-15 of 150; here 20 % of a short run):",
            "",
            "| target | recipe | test mean Dice | (diff to scratch) | (diff to zoo defaults) |",
            "|---|---|---:|---:|---:|",
        ]
        for target in targets:
            base = scores[(target.name, 4, "scratch")]
            default = scores[(target.name, 4, "encoder")]
            for recipe, settings in RECIPES.items():
                label = "encoder" if recipe == "zoo defaults" else f"encoder, {recipe}"
                values = scores[(target.name, 4, label)]
                shown = ", ".join(f"{k} {v}" for k, v in settings.items()) or "AdamW 1e-2, cosine"
                lines.append(
                    f"| {target.name} | {recipe} ({shown}) | {cell(values)} | {diff(values, base)} | "
                    f"{diff(values, default) if values is not default else '—'} |"
                )
    return lines


def _plot(curves: dict, targets: list[Target], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 3.6), sharey=True)
    for ax, target in zip(axes, targets, strict=True):
        for (name, n, label), runs in curves.items():
            if name != target.name or n != 4 or label.startswith("encoder,"):
                continue
            epochs = [e for e, _ in runs[0]]
            means = [statistics.fmean(run[i][1] for run in runs) for i in range(len(epochs))]
            ax.plot(epochs, means, marker="o", label=label)
        ax.set_title(f"{target.name}, 4 labelled cases")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test mean Dice (mean of seeds)")
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _relative(plot: Path, output: Path | None) -> str:
    if output is None:
        return str(plot)
    return str(Path(plot).resolve().relative_to(Path(output).resolve().parent))


if __name__ == "__main__":
    main()
