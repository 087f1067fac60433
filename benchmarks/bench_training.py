"""Training throughput: the seed tutorial's loop against the zoo's Trainer, in one process, runs alternating.

The tutorial's loop as it is written (MONAI's BraTS tutorial, which the seed followed): CacheDataset of
load -> channel-first -> regions -> Spacingd -> Orientationd, then per sample a random 128x128x64 crop, a flip,
NormalizeIntensityd on the crop, random intensity scale and shift; DataLoader(batch 2, shuffle, 4 workers);
DiceCELoss(sigmoid); AdamW(1e-4, weight decay 1e-5); MetaTensors straight into the network.

The zoo: ``Trainer`` with the seed recipe (same optimiser, loss, roi, spacing, augmentation probabilities), the
deterministic prefix cached including normalisation, plain tensors into the network, 0 workers on the CPU.

(a) What a user runs: the tutorial's loop with its own networks (self-attention-cv's UNETR, MONAI's UNet) against
    the Trainer with the zoo's ``unetr_brats`` / ``unet_brats``.
(b) The loop alone: the same network object trained by both loops in turn.

Samples per second include data loading (the time from asking the loader for a batch to the optimiser step),
measured over whole epochs of BraTS-size synthetic cases (240 x 240 x 155 on BraTS's 1 mm grid); the first epoch
of each side is a warm-up. Per-epoch checkpoint writes of the Trainer are not counted (they are once per epoch,
whatever its length).

    python benchmarks/bench_training.py --epochs 3 --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    Spacingd,
)
from self_attention_cv import UNETR as SourceUNETR

import medseg_zoo as mz
from _report import publish
from medseg_zoo.data import discover, make_dataset, train_val_split
from medseg_zoo.training import Callback, Trainer, recipe
from medseg_zoo.transforms import LabelsToRegionsd

ROI = (128, 128, 64)
CACHE = Path(__file__).parent / ".cache" / "brats_synthetic_240"


def brats_geometry(root: Path) -> None:
    """Put every case on BraTS's grid (1 mm isotropic, axis-aligned): the tutorial's loop assumes volumes of at
    least the roi after resampling, which the generator's random grids do not always give."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    for path in sorted(root.glob("*Tr/*.nii.gz")):
        img = nib.load(path)
        if not np.allclose(img.affine, affine):
            nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), affine), path)


def tutorial_loader(items: list[dict]) -> DataLoader:
    """The tutorial's data pipeline (with the msd_task01 regions, so both sides learn the same targets)."""
    keys = ["image", "label"]
    transform = Compose(
        [
            LoadImaged(keys),
            EnsureChannelFirstd(keys),
            LabelsToRegionsd("label", "msd_task01"),
            Spacingd(keys, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
            Orientationd(keys, axcodes="RAS"),
            RandSpatialCropd(keys, roi_size=ROI, random_size=False),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            NormalizeIntensityd("image", nonzero=True, channel_wise=True),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ]
    )
    data = CacheDataset(items, transform, cache_rate=1.0, num_workers=2, progress=False)
    return DataLoader(data, batch_size=2, shuffle=True, num_workers=4)


class Tutorial:
    """One network trained by the tutorial's loop, an epoch at a time."""

    def __init__(self, model: torch.nn.Module, loader: DataLoader) -> None:
        self.model, self.loader = model, loader
        self.loss = DiceCELoss(sigmoid=True)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
        self.rates: list[float] = []
        self.losses: list[float] = []

    def epoch(self) -> None:
        self.model.train()
        samples, start = 0, time.perf_counter()
        for batch in self.loader:
            x, y = batch["image"], batch["label"]
            self.optimizer.zero_grad()
            loss = self.loss(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            samples += len(x)
            self.losses.append(loss.item())
        self.rates.append(samples / (time.perf_counter() - start))


class Alternate(Callback):
    """After each Trainer epoch, one epoch of the tutorial's loop: the two sides alternate."""

    def __init__(self, tutorial: Tutorial) -> None:
        self.tutorial = tutorial

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        self.tutorial.epoch()


def compare(label: str, zoo_model: torch.nn.Module, tutorial: Tutorial, root: Path, epochs: int, work: Path) -> str:
    config = recipe("unetr_brats", epochs=epochs + 1, val_every=10_000, output=str(work / label.split()[0]))
    config = config.replace(progress=False)
    trainer = Trainer(zoo_model, root, config, callbacks=[Alternate(tutorial)], overwrite=True)
    history = trainer.fit()
    zoo = statistics.median(r["samples_per_second"] for r in history[1:])
    ref = statistics.median(tutorial.rates[1:])
    zoo_loss = statistics.mean(r["train_loss"] for r in history)
    ref_loss = statistics.mean(tutorial.losses)
    return f"| {label} | {ref:.3f} | {zoo:.3f} | **{zoo / ref:.2f}x** | {ref_loss:.4f} / {zoo_loss:.4f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per side (after a warm-up epoch)")
    parser.add_argument("--cases", type=int, default=4, help="synthetic 240 x 240 x 155 training cases")
    parser.add_argument("--output", type=Path, help="markdown file whose 'training' section gets the table")
    args = parser.parse_args()

    root = make_dataset(CACHE, n_cases=args.cases + 1, shape=(240, 240, 155), seed=3)  # one case is held out
    brats_geometry(root)
    work = Path(tempfile.mkdtemp(prefix="medseg-bench-train-"))
    cases = discover(root).cases
    train, _ = train_val_split([c.name for c in cases], 0.2, seed=0)  # the Trainer's split of the same cases
    train_items = [c.to_dict() for c in cases if c.name in train]
    torch.manual_seed(0)
    loader = tutorial_loader(train_items)
    unet_args = {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2}
    source_unetr = SourceUNETR(
        img_shape=ROI, input_dim=4, output_dim=3, embed_dim=512, patch_size=16, num_heads=10, dim_linear_block=2048
    )
    rows = [
        "| comparison | tutorial loop, samples/s | Trainer, samples/s | speed-up | mean loss tutorial / Trainer |",
        "|---|---:|---:|---:|---:|",
    ]
    pairs = [
        ("(a) UNETR: self-attention-cv in the tutorial loop vs `unetr_brats` in the Trainer",
         mz.create_model("unetr_brats"), Tutorial(source_unetr, loader)),
        ("(a) UNet: MONAI UNet in the tutorial loop vs `unet_brats` in the Trainer",
         mz.create_model("unet_brats"), Tutorial(UNet(3, 4, 3, **unet_args), loader)),
    ]  # fmt: skip
    shared_unetr, shared_unet = mz.create_model("unetr_brats"), mz.create_model("unet_brats")
    pairs += [
        ("(b) loop alone, the same `unetr_brats` object", shared_unetr, Tutorial(shared_unetr, loader)),
        ("(b) loop alone, the same `unet_brats` object", shared_unet, Tutorial(shared_unet, loader)),
    ]
    for label, zoo_model, tutorial in pairs:
        rows.append(compare(label, zoo_model, tutorial, root, args.epochs, work))
        print(rows[-1], flush=True)
    publish(
        [
            "## Training throughput (CPU, fp32, seed recipe)",
            "",
            f"{len(train_items)} synthetic 240x240x155 training cases, roi 128x128x64, batch 2, AdamW 1e-4, "
            f"MONAI's DiceCELoss(sigmoid=True); medians over {args.epochs} epochs per side after a warm-up epoch, "
            "the two sides alternating epoch by epoch in one process. Samples per second include data loading.",
            "",
            *rows,
        ],
        args.output,
        "training",
    )


if __name__ == "__main__":
    main()
