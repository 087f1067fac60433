"""Whole-case inference, file to file: medseg-zoo's Predictor (torch, and ONNX Runtime on the exported network)
against a MONAI pipeline doing the same job.

Both read the same 4 x 240 x 240 x 155 NIfTI (a synthetic BraTS-size case), reorient to RAS, resample to
1.5 x 1.5 x 2.0 mm, normalise, run sliding-window inference with the same network and weights (roi 128x128x64,
overlap 0.5, Gaussian blending, one window per forward pass: MONAI's default and the Predictor's), bring the
sigmoid outputs back to the input grid, threshold them and write an msd_task01 label map. MONAI's side is
LoadImaged, EnsureChannelFirstd, Orientationd, Spacingd, NormalizeIntensityd, sliding_window_inference,
Activationsd, Invertd, AsDiscreted, SaveImage. The ONNX Runtime row runs the same Predictor pipeline around the
network exported by `medseg_zoo.export.export_model`. Runs alternate; each pipeline's peak memory (RSS) is measured
once more in a fresh process of its own.

A second part measures peak memory (RSS) of predicting a 1 x 512 x 512 x 400 volume with 14 classes, in a fresh
process.

    python benchmarks/bench_inference.py --weights benchmarks/.cache/unetr_brats_synthetic.safetensors \
        --repeats 5 --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    SaveImage,
    Spacingd,
)
from safetensors.torch import load_file

import medseg_zoo as mz
from _report import publish
from medseg_zoo.data.synthetic import make_case
from medseg_zoo.export import export_model
from medseg_zoo.transforms import regions_to_labels

SHAPE = (240, 240, 155)
CHANNELS = ["FLAIR", "T1w", "T1gd", "T2w"]  # the synthetic generator's order, MSD Task01's
BRATS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239], [0, 0, 1.0, 0], [0, 0, 0, 1]])  # LPS, 1 mm


def peak_gib() -> float:
    """This process's peak resident memory in GiB: VmHWM, which starts afresh at exec. (``ru_maxrss`` does not: a
    child started from a large process inherits the parent's peak, which made every pipeline read the same.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def write_case(folder: Path, shape: tuple[int, int, int]) -> Path:
    """One synthetic case on BraTS's LPS 1 mm grid, as a 4-D NIfTI."""
    image, _, _ = make_case(shape, seed=0)
    path = folder / "case.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), BRATS_AFFINE), path)
    return path


def alternate(
    runs: dict[str, Callable[[Path], None]],
    outputs: dict[str, Path],
    repeats: int,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """Seconds of each pipeline, run ``repeats`` times in turn, each writing its output file; ``sync`` waits for
    queued GPU work before a clock is read."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            sync()
            start = time.perf_counter()
            run(outputs[name])
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def monai_pipeline(model: torch.nn.Module, image: Path, out: Path) -> None:
    c = model.pretrained_cfg.contract
    pre = Compose(
        [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd("image", pixdim=c.spacing, mode="bilinear"),
            NormalizeIntensityd("image", nonzero=True, channel_wise=True),
        ]
    )
    post = Compose(
        [
            Activationsd("pred", sigmoid=True),
            Invertd("pred", pre, orig_keys="image", nearest_interp=False),
            AsDiscreted("pred", threshold=0.5),
        ]
    )
    with torch.inference_mode():
        data = pre({"image": str(image)})
        device = next(model.parameters()).device  # windows and blending where the network is (bench_gpu.py)
        logits = sliding_window_inference(
            data["image"][None], c.roi_size, 1, model, overlap=0.5, mode="gaussian", sw_device=device, device=device
        )[0].cpu()
        data["pred"] = MetaTensor(logits, meta=data["image"].meta)
        data = post(data)
    regions = data["pred"]
    labels = MetaTensor(torch.from_numpy(regions_to_labels(regions.numpy(), c.label_scheme))[None], meta=regions.meta)
    writer = SaveImage(
        output_dir=out.parent,
        output_postfix="",
        output_ext=".nii.gz",
        separate_folder=False,
        output_dtype=np.uint8,
        resample=False,
        print_log=False,
    )
    writer(labels, filename=str(out).removesuffix(".nii.gz"))


def memory_run(folder: Path) -> dict:
    """Peak RSS of predicting 1 x 512 x 512 x 400 with 14 classes, in a fresh process."""
    rng = np.random.default_rng(0)
    image = rng.standard_normal(size=(512, 512, 400), dtype=np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "big.nii")  # written here, not counted there
    del image
    script = f"""
import json, time
import nibabel as nib, numpy as np, torch
import medseg_zoo as mz
path = "{folder}/big.nii"
torch.manual_seed(0)
model = mz.create_model("unet", in_channels=1, out_channels=14, channels=(8, 16), strides=(2,), num_res_units=1)
model.pretrained_cfg = model.pretrained_cfg.replace(contract=model.pretrained_cfg.contract.__class__(
    in_channels=("CT",), out_channels=tuple(f"class_{{i}}" for i in range(14)), activation="softmax",
    roi_size=(128, 128, 128), spacing=None, normalization="zscore_channelwise"))
start = time.perf_counter()
mz.predict(model, path, "{folder}/big_seg.nii.gz", overlap=0.25, amp=False)
seconds = time.perf_counter() - start
out = nib.load("{folder}/big_seg.nii.gz")
status = open("/proc/self/status").read().split("VmHWM:")[1].split()
print(json.dumps({{"peak_rss_gib": int(status[0]) / 2**20,
                  "seconds": seconds, "shape": list(out.shape), "dtype": str(out.get_data_dtype())}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def pipelines(model: torch.nn.Module | None, case: Path, exported: Path) -> dict[str, Callable[[Path], None]]:
    """Each pipeline as a function of its output path; its predictor is made on first use, so a process that runs one
    pipeline holds only what that pipeline needs (the ONNX Runtime one no torch model: ``model`` may be ``None``)."""

    @functools.cache
    def predictor(kind: str) -> mz.Predictor:
        if kind == "onnxruntime":
            return mz.Predictor(str(exported))
        return mz.Predictor(model, amp=False) if kind == "fp32" else mz.Predictor(model)

    return {
        "MONAI pipeline (fp32)": lambda out: monai_pipeline(model, case, out),
        "medseg-zoo Predictor (fp32)": lambda out: predictor("fp32")(case, out, channels=CHANNELS),
        "medseg-zoo Predictor (default: bf16 autocast)": lambda out: predictor("default")(case, out, channels=CHANNELS),
        "medseg-zoo Predictor, ONNX Runtime (fp32)": lambda out: predictor("onnxruntime")(case, out, channels=CHANNELS),
    }


def _model(name: str, weights: Path | None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = mz.create_model(name).eval()
    if weights:
        model.load_state_dict(load_file(weights))
    return model


def peak_rss(args: argparse.Namespace, name: str, case: Path, exported: Path, out: Path) -> float:
    """Peak RSS in GiB of one run of pipeline ``name`` in a fresh process (model, input and output included)."""
    command = [sys.executable, __file__, "--model", args.model, "--peak", name, "--case", str(case)]
    command += ["--exported", str(exported), "--peak-output", str(out)]
    command += ["--weights", str(args.weights)] if args.weights else []
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per pipeline")
    parser.add_argument("--model", default="unetr_brats", help="BraTS model to run (random seeded weights)")
    parser.add_argument("--weights", type=Path, help="safetensors state dict for the model (see fit_synthetic.py)")
    parser.add_argument("--output", type=Path, help="markdown file whose 'inference' section gets the table")
    parser.add_argument("--skip-memory", action="store_true", help="skip the 512x512x400 memory run")
    parser.add_argument("--peak", help=argparse.SUPPRESS)  # internal: run one pipeline once, print its peak RSS
    parser.add_argument("--case", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--exported", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--peak-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.peak:
        model = None if "ONNX" in args.peak else _model(args.model, args.weights)
        pipelines(model, args.case, args.exported)[args.peak](args.peak_output)
        print(peak_gib())
        return
    model = _model(args.model, args.weights)
    tmp = Path(tempfile.mkdtemp(prefix="medseg-bench-"))
    path = write_case(tmp, SHAPE)
    exported = tmp / f"{args.model}.onnx"
    export_report = export_model(model, exported)
    print(export_report)

    runs = pipelines(model, path, exported)
    outputs = {name: tmp / f"out_{i}.nii.gz" for i, name in enumerate(runs)}
    times = alternate(runs, outputs, args.repeats)
    peaks = {name: peak_rss(args, name, path, exported, tmp / "peak.nii.gz") for name in runs}

    reference = nib.load(outputs["MONAI pipeline (fp32)"])
    ref = np.asarray(reference.dataobj)
    base = statistics.median(times["MONAI pipeline (fp32)"])
    rows = [
        "| pipeline | median s | fastest s | speed-up | peak RSS GiB | voxels equal to MONAI's | same grid, affine |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in runs:
        img = nib.load(outputs[name])
        data = np.asarray(img.dataobj)
        same_grid = data.shape == ref.shape and np.allclose(img.affine, nib.load(path).affine)
        med = statistics.median(times[name])
        rows.append(
            f"| {name} | {med:.1f} | {min(times[name]):.1f} | {base / med:.2f}x | {peaks[name]:.2f} "
            f"| {100 * (data == ref).mean():.3f} % "
            f"| {'yes' if same_grid else 'NO'} |"
        )
    weights = (
        f"weights `{args.weights.name}`, a brief seeded fit on synthetic cases by `benchmarks/fit_synthetic.py` "
        "(`make bench` makes it once)"
        if args.weights
        else "seeded random weights: agreement is measured on untrained outputs, the hardest case for agreement"
    )
    lines = [
        "## Whole-case inference, file to file (CPU)",
        "",
        f"One synthetic BraTS-size case (4 x {' x '.join(map(str, SHAPE))}, LPS 1 mm) through `{args.model}` "
        f"({weights}), {args.repeats} alternating runs each. Label maps are compared voxel by voxel. The ONNX "
        "file was exported and checked by `export_model`: "
        + "; ".join(f"{c.input} max |exported - eager| {c.max_abs_diff:.1e}" for c in export_report.checks)
        + ".",
        "",
        *rows,
    ]
    if not args.skip_memory:
        mem = memory_run(tmp)
        lines += [
            "",
            f"Large volume: 1 x 512 x 512 x 400 float32, 14-class softmax UNet, overlap 0.25, fp32: peak RSS "
            f"{mem['peak_rss_gib']:.2f} GiB (the process, input included), {mem['seconds']:.0f} s, output "
            f"{tuple(mem['shape'])} {mem['dtype']}.",
        ]
    publish(lines, args.output, "inference")


if __name__ == "__main__":
    main()
