"""Transfer, measured offline: does a pretrained encoder, loaded the way the zoo loads published ones, help?

1. Pretrain ``resenc_l_openmind``'s architecture (at a small width) on synthetic BraTS-like set A.
2. Save it in nnssl's published layout (``checkpoint_final.pth`` of ``dynamic_network_architectures``' ResEnc U-Net,
   with ``network_weights``), as OpenMind's checkpoints are.
3. On a different synthetic set B (other seed, few labelled cases), fine-tune for the same epochs with the same
   settings: from scratch, and from that file (`medseg_zoo.convert_checkpoint` with format ``nnssl``: the encoder
   loaded, the decoder fresh, exactly as ``create_model("resenc_l_openmind", pretrained=True)`` would), once
   training everything from the first epoch and once with the encoder frozen for the first epochs.

    python benchmarks/bench_transfer.py --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

import medseg_zoo as mz
from _report import publish
from medseg_zoo._registry import get_config
from medseg_zoo.convert import convert_state_dict
from medseg_zoo.data import make_dataset
from medseg_zoo.training import TrainConfig, Trainer

WIDTHS = {"features": (8, 16, 32, 64), "strides": (1, 2, 2, 2), "blocks": (1, 2, 2, 2)}
CHANNELS = ["FLAIR", "T1w", "T1gd", "T2w"]


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return mz.create_model("resenc_l_openmind", in_channels=CHANNELS, label_scheme="msd_task01", roi_size=64, **WIDTHS)


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
    converted = convert_state_dict(state, "nnssl", get_config("resenc_l_openmind"))
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


def _fit(model: nn.Module, data: Path, output: Path, epochs: int, seed: int, freeze: int = 0) -> tuple[float, float]:
    # pretrained_lr_scale: loaded parameters learn at a tenth of the rate (fresh ones, and a scratch run's, at 1e-2)
    config = TrainConfig(
        output=str(output),
        epochs=epochs,
        val_every=epochs,
        seed=seed,
        progress=False,
        pretrained_lr_scale=0.1,
        freeze_encoder_epochs=freeze,
    )
    start = time.perf_counter()
    history = Trainer(model, data, config).fit()
    return history[-1]["mean_dice"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=12, help="fine-tuning epochs on set B")
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning runs of each start")
    parser.add_argument("--freeze", type=int, default=4, help="epochs the frozen-encoder start keeps it frozen")
    parser.add_argument("--output", type=Path, help="markdown file whose 'transfer' section gets the table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        set_a = make_dataset(work / "A", n_cases=24, shape=(64, 64, 64), seed=11)
        set_b = make_dataset(work / "B", n_cases=8, shape=(64, 64, 64), seed=23)
        pretrained_dice, pretrain_seconds = _fit(_model(0), set_a, work / "pretrain", args.pretrain_epochs, 0)
        checkpoint = work / "checkpoint_final.pth"
        save_nnssl(mz.from_pretrained(work / "pretrain" / "last"), checkpoint)
        rows = []
        for seed in range(args.seeds):
            scratch = _fit(_model(seed), set_b, work / f"scratch{seed}", args.epochs, seed)
            dice = [scratch[0]]
            for freeze in (0, args.freeze):
                torch.manual_seed(seed)
                start = mz.convert_checkpoint(checkpoint, "nnssl", "resenc_l_openmind", in_channels=CHANNELS,
                                              label_scheme="msd_task01", roi_size=64, **WIDTHS)  # fmt: skip
                loaded = len(start.load_report.loaded)
                dice.append(_fit(start, set_b, work / f"pretrained{seed}-{freeze}", args.epochs, seed, freeze)[0])
            rows.append(dice)
    means = [sum(column) / len(rows) for column in zip(*rows, strict=True)]
    table = [
        f"| seed | from scratch | pretrained encoder | pretrained encoder, frozen for {args.freeze} epochs |",
        "|---:|---:|---:|---:|",
        *(f"| {seed} | " + " | ".join(f"{d:.3f}" for d in dice) + " |" for seed, dice in enumerate(rows)),
        "| mean | " + " | ".join(f"**{m:.3f}**" for m in means) + " |",
    ]
    publish(
        [
            "## Transfer from a pretrained encoder (CPU)",
            "",
            f"Set A: 24 synthetic cases (seed 11), pretraining {args.pretrain_epochs} epochs (validation mean Dice "
            f"{pretrained_dice:.3f}, {pretrain_seconds:.0f} s). Set B: 8 other cases (seed 23; 6 train, 2 "
            f"validate), {args.epochs} epochs, the Trainer's defaults (AdamW 1e-2, cosine) with "
            "`pretrained_lr_scale=0.1` for both starts (it slows only loaded parameters). The pretrained start loads "
            f"{loaded} encoder tensors from the nnssl-layout file; its decoder and head start fresh. Validation "
            "mean Dice after the last epoch:",
            "",
            *table,
        ],
        args.output,
        "transfer",
    )


if __name__ == "__main__":
    main()
