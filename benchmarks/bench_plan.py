"""Planned against unplanned: the generic ``unet`` trained on an anisotropic CT-like set with the plan
(``medseg_zoo.plan``: target spacing, CT normalisation, patch and batch by nnU-Net's rules) and with the
architecture's defaults (roi 96^3, the input's spacing, per-case z-score), the same epochs and seed, scored on
held-out cases.

    python benchmarks/bench_plan.py --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import medseg_zoo as mz
from _report import publish
from medseg_zoo.data import discover
from medseg_zoo.data.synthetic import make_ct_dataset
from medseg_zoo.training import TrainConfig, Trainer

WIDTHS = {"channels": (8, 16, 32, 64), "strides": (2, 2, 2), "num_res_units": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--output", type=Path, help="markdown file whose 'plan' section gets the table")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train = discover(make_ct_dataset(work / "Dataset001_CT", n_cases=8, shape=(96, 96, 24), seed=0))
        test = discover(make_ct_dataset(work / "Dataset002_CTtest", n_cases=4, shape=(96, 96, 24), seed=1))
        found = mz.plan(train, "unet", model_args=WIDTHS, cache_dir=work / "cache", progress=False)
        for name in ("planned", "defaults"):
            torch.manual_seed(0)
            model = mz.create_model("unet", in_channels=["CT"], label_scheme=train.scheme, **WIDTHS,
                                    **({"roi_size": found.roi_size} if name == "planned" else {}))  # fmt: skip
            if name == "planned":
                found.apply(model)
            contract = model.pretrained_cfg.contract
            batch = found.batch_size if name == "planned" else TrainConfig().batch_size
            config = TrainConfig(output=str(work / name), epochs=args.epochs, val_every=args.epochs, batch_size=batch,
                                 progress=False, val_fraction=0.25)  # fmt: skip
            start = time.perf_counter()
            history = Trainer(model, train, config, val_data=test).fit()
            seconds = time.perf_counter() - start
            spacing = " x ".join(f"{s:g}" for s in contract.spacing) if contract.spacing else "the input's"
            rows.append(
                f"| {name} | {spacing} | {' x '.join(map(str, contract.roi_size))} | {contract.normalization} | "
                f"{batch} | {history[-1]['mean_dice']:.3f} | {seconds:.0f} |"
            )
    publish(
        [
            "## Planned from the data (CPU)",
            "",
            f"`unet` (channels 8-64, three downsamplings) on a synthetic CT-like set in nnU-Net's layout "
            f"(`make_ct_dataset`: 0.8 x 0.8 mm in plane, 3-5 mm slices; 8 training cases), {args.epochs} epochs, "
            "seed 0; mean Dice on 4 held-out cases of another seed (the last epoch's model):",
            "",
            "| start | spacing (mm) | roi | normalisation | batch | test mean Dice | seconds |",
            "|---|---|---|---|---:|---:|---:|",
            *rows,
            "",
            *(f"- {line.strip()}" for line in found.summary()),
        ],
        args.output,
        "plan",
    )


if __name__ == "__main__":
    main()
