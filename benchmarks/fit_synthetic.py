"""Fit a zoo model briefly on synthetic BraTS-like cases, to give benchmarks a network that makes confident
predictions (agreement between precisions is meaningless on an untrained network's near-0.5 outputs).

Not a training recipe: a fixed number of AdamW steps with Dice + BCE on random roi crops (the zoo's training
transforms), seeded. Writes the weights as safetensors for ``bench_inference.py --weights``.

    python benchmarks/fit_synthetic.py --steps 150 --output benchmarks/.cache/unetr_brats_synthetic.safetensors
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from monai.data import DataLoader, Dataset
from monai.losses import DiceLoss
from safetensors.torch import save_file

import medseg_zoo as mz
from medseg_zoo._atomic import atomic_write
from medseg_zoo.data import discover
from medseg_zoo.data.synthetic import make_dataset
from medseg_zoo.transforms.presets import training_transforms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unetr_brats")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--cases", type=int, default=12, help="synthetic 240 x 240 x 155 training cases")
    parser.add_argument("--output", type=Path, required=True, help="safetensors file to write")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    args = parser.parse_args()

    torch.manual_seed(0)
    root = make_dataset(Path(tempfile.mkdtemp(prefix="medseg-fit-")), n_cases=args.cases, shape=(240, 240, 155), seed=3)
    model = mz.create_model(args.model).to(args.device)
    items = [case.to_dict() for case in discover(root).cases]
    loader = DataLoader(
        Dataset(items, training_transforms(model)), batch_size=1, shuffle=True, num_workers=args.workers
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    dice = DiceLoss(sigmoid=True)
    step, start = 0, time.perf_counter()
    while step < args.steps:
        for batch in loader:
            logits = model(batch["image"].as_tensor().to(args.device))
            target = batch["label"].as_tensor().to(args.device).float()
            loss = dice(logits, target) + torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 10 == 0:
                print(f"step {step}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
            if step >= args.steps:
                break
    state = {k: v.contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(args.output, lambda tmp: save_file(state, tmp))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
