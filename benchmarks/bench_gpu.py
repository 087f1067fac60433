"""The zoo on a CUDA GPU against its peers: training steps and whole-case inference, one process, runs alternating.

Training step (forward, DiceCE, backward, AdamW), batch 2 of 4 x 128 x 128 x 64, in float32 and under bf16
autocast, medians of CUDA-synchronised steps after warm-up, and each side's peak GPU memory:
``unetr_brats`` against self-attention-cv's UNETR, ``unetr_monai`` against MONAI's UNETR and ``unet_brats`` against
MONAI's UNet, each pair with identical weights (converted where the layouts differ); the float32 outputs of a pair
are compared too. Whole-case inference: one synthetic BraTS-size case file to file, the Predictor (fp32 and its
default, bf16) against the MONAI pipeline of ``bench_inference.py`` with the network on the GPU; a folder of cases
through ``medseg-zoo predict`` with and without reading ahead. The Trainer's samples per second with the seed
UNETR recipe in bf16.

    python benchmarks/fit_synthetic.py --device cuda --workers 8 --output /tmp/fitted.safetensors
    python benchmarks/bench_gpu.py --weights /tmp/fitted.safetensors --output docs/benchmarks.md   # with a GPU
    python benchmarks/bench_gpu.py --device cpu --smoke                 # tiny sizes: checks the script runs

Not part of ``make bench`` (CI and the project's machine have no GPU).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import monai
import nibabel as nib
import numpy as np
import torch
from monai.losses import DiceCELoss
from safetensors.torch import load_file
from self_attention_cv import UNETR as SourceUNETR

import medseg_zoo as mz
from _report import publish
from bench_inference import SHAPE, alternate, monai_pipeline, write_case
from bench_training import brats_geometry
from medseg_zoo.convert.monai import convert_unetr as from_monai
from medseg_zoo.convert.self_attention_cv import convert_unetr as from_self_attention_cv

Pair = tuple[str, torch.nn.Module, str, torch.nn.Module]
FOLDER_CASES = 4


def unetr_brats(roi: tuple[int, int, int], smoke: bool) -> torch.nn.Module:
    """The zoo's ``unetr_brats`` at the roi, or at a tiny width for a smoke run."""
    if smoke:
        return mz.create_model("unetr_brats", img_size=roi, hidden_size=64, num_heads=4, mlp_dim=128, dim_head=16)
    return mz.create_model("unetr_brats", roi_size=roi)


def pairs(roi: tuple[int, int, int], smoke: bool) -> list[Pair]:
    """(zoo name, zoo model, peer name, peer model) with identical weights."""
    sa_args = {"embed_dim": 512, "num_heads": 10, "dim_linear_block": 2048} if not smoke else {
        "embed_dim": 64, "num_heads": 4, "dim_linear_block": 128}  # fmt: skip
    source = SourceUNETR(img_shape=roi, input_dim=4, output_dim=3, patch_size=16, **sa_args)
    zoo_sa = unetr_brats(roi, smoke)
    zoo_sa.load_state_dict(from_self_attention_cv(source.state_dict(), num_heads=sa_args["num_heads"]))

    monai_args = {} if not smoke else {"hidden_size": 64, "mlp_dim": 128, "num_heads": 4, "feature_size": 8}
    ref_unetr = monai.networks.nets.UNETR(4, 3, roi, **monai_args)
    zoo_monai = mz.create_model("unetr_monai", **({"roi_size": roi} if not smoke else {"img_size": roi, **monai_args}))
    zoo_monai.load_state_dict(from_monai(ref_unetr.state_dict()))

    unet_args = {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2}
    ref_unet = monai.networks.nets.UNet(3, 4, 3, **unet_args)
    zoo_unet = mz.create_model("unet_brats")
    zoo_unet.load_state_dict(ref_unet.state_dict())
    return [
        ("`unetr_brats`", zoo_sa, "self-attention-cv UNETR", source),
        ("`unetr_monai`", zoo_monai, "MONAI UNETR", ref_unetr),
        ("`unet_brats`", zoo_unet, "MONAI UNet", ref_unet),
    ]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None) -> Callable:
    loss = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x)
        loss(out.float(), y).backward()
        optimizer.step()
        return out

    return step


def time_pair(zoo: torch.nn.Module, peer: torch.nn.Module, x, y, dtype, repeats: int) -> dict[str, tuple[float, float]]:
    """Median seconds and peak GiB of each side, steps alternating."""
    device = x.device
    steps = {"zoo": trainer_step(zoo, x, y, dtype), "peer": trainer_step(peer, x, y, dtype)}
    times: dict[str, list[float]] = {k: [] for k in steps}
    peaks = {}
    for step in steps.values():  # warm-up: cuDNN algorithm choice, allocator
        for _ in range(3):
            step()
    for name, step in steps.items():
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        step()
        sync(device)
        peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    for _ in range(repeats):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(ts), peaks[name]) for name, ts in times.items()}


def folder_rows(model: torch.nn.Module, shape: tuple[int, ...], device: torch.device, tmp: Path, smoke: bool) -> list:
    """Seconds per case of ``medseg-zoo predict`` over a folder, reading ahead and not."""
    from medseg_zoo.cli import main as cli

    cases = tmp / "cases"
    cases.mkdir()
    for i in range(FOLDER_CASES):
        write_case(cases, shape).rename(cases / f"case_{i}.nii.gz")
    checkpoint = mz.save_pretrained(model, tmp / "checkpoint")
    args = ["predict", "--checkpoint", str(checkpoint), "-i", str(cases), "--device", str(device)]

    def run(mode: str) -> Callable[[Path], None]:
        def predict(out: Path) -> None:
            assert cli([*args, "-o", str(out), "--read-ahead", mode]) == 0

        return predict

    runs = {mode: run(mode) for mode in ("off", "on")}
    times = alternate(
        runs, {mode: tmp / f"folder_{mode}" for mode in runs}, 3 if not smoke else 1, lambda: sync(device)
    )
    off, on = (statistics.median(times[mode]) / FOLDER_CASES for mode in runs)
    return [
        "| `medseg-zoo predict` over a folder | s per case |",
        "|---|---:|",
        f"| one case after another | {off:.2f} |",
        f"| next case read ahead | {on:.2f} ({off / on:.2f}x) |",
    ]


def trainer_rows(device: torch.device, tmp: Path, smoke: bool) -> list[str]:
    """Samples per second of the Trainer, the seed UNETR recipe in bf16."""
    from medseg_zoo.data import make_dataset
    from medseg_zoo.training import Trainer, recipe

    shape, roi = ((64, 64, 48), (32, 32, 32)) if smoke else ((240, 240, 155), (128, 128, 64))
    root = make_dataset(tmp / "train", n_cases=5 if smoke else 6, shape=shape, seed=3)
    brats_geometry(root)
    epochs = 3 if smoke else 5
    config = recipe("unetr_brats", epochs=epochs, val_every=10_000, amp="bf16", device=str(device))
    config = config.replace(output=str(tmp / "run"), progress=False)
    history = Trainer(unetr_brats(roi, smoke), root, config).fit()
    rate = statistics.median(r["samples_per_second"] for r in history[1:])
    return ["| Trainer, `unetr_brats` recipe, bf16 | samples/s |", "|---|---:|", f"| one process | {rate:.2f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu with --smoke")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per side and precision")
    parser.add_argument("--smoke", action="store_true", help="tiny models and inputs: checks that the script runs")
    parser.add_argument("--output", type=Path, help="markdown file whose 'gpu' section gets the tables")
    parser.add_argument("--weights", type=Path, help="unetr_brats state dict for inference (see fit_synthetic.py)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # both sides of each training pair autotune their convolutions
    roi = (32, 32, 32) if args.smoke else (128, 128, 64)
    torch.manual_seed(0)
    x = torch.randn(2, 4, *roi, device=device)
    y = (torch.rand(2, 3, *roi, device=device) > 0.7).float()

    rows = [
        "| zoo vs peer | precision | zoo ms | peer ms | peer / zoo | GPU memory zoo / peer GiB | fp32 max abs diff |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for zoo_name, zoo, peer_name, peer in pairs(roi, args.smoke):
        zoo.to(device).train()
        peer.to(device).train()
        with torch.no_grad():
            diff = (zoo(x) - peer(x)).abs().max().item()
        for label, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
            result = time_pair(zoo, peer, x, y, dtype, args.repeats)
            (z, zm), (p, pm) = result["zoo"], result["peer"]
            rows.append(
                f"| {zoo_name} vs {peer_name} | {label} | {1e3 * z:.1f} | {1e3 * p:.1f} | **{p / z:.2f}x** | "
                f"{zm:.2f} / {pm:.2f} | {diff:.1e} |"
            )
            print(rows[-1], flush=True)
        zoo.cpu()
        peer.cpu()

    torch.backends.cudnn.benchmark = False  # the pipelines below run with the defaults their users get
    shape = (64, 64, 48) if args.smoke else SHAPE
    tmp = Path(tempfile.mkdtemp(prefix="medseg-bench-gpu-"))
    path = write_case(tmp, shape)
    model = unetr_brats(roi, args.smoke).eval()
    if args.weights:  # a fitted network: agreement on untrained near-0.5 outputs says little
        model.load_state_dict(load_file(args.weights))
    fp32, default = mz.Predictor(model, device=device, amp=False), mz.Predictor(model, device=device)
    runs = {
        "MONAI pipeline, network on the GPU (fp32)": lambda out: monai_pipeline(model, path, out),
        "medseg-zoo Predictor (fp32)": lambda out: fp32(path, out),
        "medseg-zoo Predictor (default: bf16 autocast)": lambda out: default(path, out),
    }
    outputs = {name: tmp / f"out_{i}.nii.gz" for i, name in enumerate(runs)}
    alternate(runs, outputs, 1)  # warm-up
    times = alternate(runs, outputs, max(3, args.repeats // 4), sync=lambda: sync(device))
    ref = np.asarray(nib.load(outputs[next(iter(runs))]).dataobj)
    base = statistics.median(times[next(iter(runs))])
    inference = [
        "| pipeline | median s | speed-up | voxels equal to MONAI's |",
        "|---|---:|---:|---:|",
    ]
    for name in runs:
        data = np.asarray(nib.load(outputs[name]).dataobj)
        med = statistics.median(times[name])
        inference.append(f"| {name} | {med:.2f} | {base / med:.2f}x | {100 * (data == ref).mean():.3f} % |")
    print(*inference, sep="\n")
    folder = folder_rows(model, shape, device, tmp, args.smoke)
    print(*folder, sep="\n")
    trainer = trainer_rows(device, tmp, args.smoke)
    print(*trainer, sep="\n")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run)"
    weights = f"weights `{args.weights.name}` from fit_synthetic.py" if args.weights else "seeded random weights"
    publish(
        [
            f"## On the GPU ({gpu})",
            "",
            f"Training step: batch 2 of 4 x {' x '.join(map(str, roi))}, DiceCE + AdamW, medians of "
            f"{args.repeats} CUDA-synchronised steps per side, alternating; peak memory of one step. "
            "Identical weights on both sides.",
            "",
            *rows,
            "",
            f"Whole case, file to file: one synthetic case of 4 x {' x '.join(map(str, shape))} through "
            f"`unetr_brats` ({weights}).",
            "",
            *inference,
            "",
            f"A folder of {FOLDER_CASES} such cases, `medseg-zoo predict` (default precision), the next case read "
            "while the current one is predicted or not; the two runs alternate.",
            "",
            *folder,
            "",
            "The Trainer with the `unetr_brats` recipe under bf16 autocast on synthetic BraTS-size cases (one "
            "process): samples per second of whole epochs, data loading included, median after a warm-up epoch.",
            "",
            *trainer,
        ],
        args.output,
        "gpu",
    )


if __name__ == "__main__":
    main()
