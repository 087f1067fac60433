"""The predict command: NIfTI volumes in, segmentations on the same grids out."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from medseg_zoo._device import AMP_MODES
from medseg_zoo._factory import create_ensemble

__all__ = ["add_commands"]


def _cases(inputs: list[str]) -> list[tuple[str, object]]:
    """(case name, predict input) pairs from files, folders of files, or NAME=path channel items."""
    from medseg_zoo.inference.io import InputError, case_name

    channel_items = [i for i in inputs if "=" in i and not Path(i).exists()]
    if channel_items:
        if len(channel_items) != len(inputs):
            raise InputError(f"mix of NAME=path channel inputs and plain inputs: {inputs}; give one case's channels")
        mapping = dict(item.split("=", 1) for item in channel_items)
        for path in map(Path, mapping.values()):
            if not path.exists():
                raise InputError(f"{path}: not found")
        return [(case_name(mapping), mapping)]
    cases = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.name.endswith((".nii.gz", ".nii")))
            if files:
                cases += [(case_name(p), p) for p in files]
                continue
            from medseg_zoo.inference.dicom import find_series

            if not find_series(path):
                raise InputError(f"{path}: folder holds no .nii or .nii.gz files and no DICOM series")
            cases.append((case_name(path), path))  # a DICOM series folder is one case
        elif not path.is_file():
            raise InputError(f"{path}: file not found")
        else:
            cases.append((case_name(path), path))
    return cases


def _outputs(cases: list[tuple[str, object]], output: str, output_type: str = "nifti") -> list[Path]:
    """One output path per case, refused before any work when ambiguous, clashing or replacing an input."""
    from medseg_zoo.errors import OutputError
    from medseg_zoo.inference.io import OUTPUT_SUFFIXES

    suffixes = OUTPUT_SUFFIXES[output_type]
    target = Path(output)
    single = target.name.endswith(suffixes)
    if single and len(cases) > 1:
        raise OutputError(
            f"-o {output} names one file but there are {len(cases)} inputs ({', '.join(n for n, _ in cases[:4])}"
            f"{', ...' if len(cases) > 4 else ''}); give a folder for -o"
        )
    if not single and target.suffix and not target.is_dir():
        raise OutputError(f"-o {output}: expected a {' / '.join(suffixes)} file name for one input, or a folder")
    if target.exists() and not target.is_dir() and not single:
        raise OutputError(f"-o {output} is a file; expected a folder for several inputs")
    outputs = [target] if single else [target / f"{name}{suffixes[0]}" for name, _ in cases]
    seen: dict[Path, str] = {}
    for (_, inputs), out in zip(cases, outputs, strict=True):
        key = out.resolve()
        if key in seen:
            raise OutputError(
                f"inputs {seen[key]} and {_describe(inputs)} would both be written to {out}; rename one or predict "
                "them into different folders"
            )
        seen[key] = _describe(inputs)
    return outputs


def _previews(cases: list[tuple[str, object]], preview: str | None) -> list[Path | None]:
    """One preview PNG per case (``--preview x.png`` for one case, ``--preview FOLDER`` for several), or none."""
    from medseg_zoo.errors import OutputError

    if preview is None:
        return [None] * len(cases)
    target = Path(preview)
    if target.name.endswith(".png"):
        if len(cases) > 1:
            raise OutputError(
                f"--preview {preview} names one picture but there are {len(cases)} inputs; give a folder for --preview"
            )
        return [target]
    if target.exists() and not target.is_dir():
        raise OutputError(f"--preview {preview}: expected a .png file name for one input, or a folder")
    return [target / f"{name}.png" for name, _ in cases]


def _file_channels(args: argparse.Namespace) -> list[str] | None:
    """``--channels``, else the channel names of a dataset.json in (or above) the first input folder."""
    if args.channels:
        return args.channels
    import json

    first = Path(args.inputs[0])
    for folder in (first, first.parent, first.parent.parent):
        meta = folder / "dataset.json"
        if meta.is_file():
            try:
                names = json.loads(meta.read_text())
                names = names.get("modality") or names.get("channel_names")
                return [names[k] for k in sorted(names, key=int)]
            except (ValueError, AttributeError, KeyError, TypeError):
                return None
    return None


def _describe(inputs: object) -> str:
    return ", ".join(f"{k}={v}" for k, v in inputs.items()) if isinstance(inputs, dict) else str(inputs)


def _volumes(cases: list, load: Callable[[object], object], ahead: bool) -> Iterator[tuple[object, object]]:
    """``(case, its volume or the InputError reading it)`` in order.

    With ``ahead``, the next case is read in a background thread while the caller predicts the current one: on a
    GPU the CPU would otherwise wait. On the CPU reading competes with the network for the cores (measured slower:
    21.3 s against 19.5 s for 5 BraTS cases on 2 cores), so ``auto`` reads ahead only for GPUs.
    """
    from medseg_zoo.inference import InputError

    def read(case: tuple) -> object:
        try:
            return load(case[0][1])
        except InputError as exc:  # reported with its case, in order
            return exc

    if not ahead:
        yield from ((case, read(case)) for case in cases)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="medseg-zoo-read") as pool:
        pending = pool.submit(read, cases[0]) if cases else None
        for i, case in enumerate(cases):
            volume = pending.result()
            pending = pool.submit(read, cases[i + 1]) if i + 1 < len(cases) else None
            yield case, volume


def _predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from medseg_zoo._device import process
    from medseg_zoo.export import EXPORT_FORMATS
    from medseg_zoo.hub import from_pretrained
    from medseg_zoo.inference import InputError, Predictor, load_volume
    from medseg_zoo.inference.io import input_paths

    cases = _cases(args.inputs)
    outputs = _outputs(cases, args.output, args.output_type)
    previews = _previews(cases, args.preview)
    me, device = process(args.device)
    # Under torchrun each process takes every world-th case: each case is written by exactly one process.
    mine = list(zip(cases, outputs, strict=True))[me.rank :: me.world]
    amp = args.amp
    if args.checkpoint and args.checkpoint.endswith(tuple(EXPORT_FORMATS)):
        model = args.checkpoint  # an exported file, loaded by the Predictor for its backend
    elif args.checkpoint:
        model = from_pretrained(args.checkpoint)
    else:
        model = create_ensemble(args.model, pretrained=True)
    predictor = Predictor(
        model,
        backend=args.backend,
        device=device,
        overlap=args.overlap,
        tta=args.tta,
        amp=amp,
        progress=len(cases) == 1,
        compile=args.compile,
    )
    every_input = [p for _, inputs in cases for p in input_paths(inputs)]
    request = {"kind": args.kind, "output_type": args.output_type, "statistics": args.statistics}
    for out, shown in zip(
        outputs, previews, strict=True
    ):  # every process checks all: nothing starts unless all are fine
        predictor.check_request(out, every_input, **request, preview=shown)
    preview_of = dict(zip(outputs, previews, strict=True))
    todo = []
    for case, out in mine:
        if args.skip_existing and out.exists():
            print(f"{out} (exists, skipped)")
        else:
            todo.append((case, out))
    ahead = {"auto": predictor.device.type != "cpu", "on": True, "off": False}[args.read_ahead]
    load = partial(
        load_volume,
        channels=predictor.contract.in_channels,
        file_channels=_file_channels(args),
        series_uid=args.series_uid,
    )
    failed = []
    volumes = _volumes(todo, load, ahead and len(todo) > 1)
    bar = tqdm(
        volumes, desc="cases", unit="case", total=len(todo), disable=True if len(todo) <= 1 or me.rank > 0 else None
    )
    for ((name, _), out), volume in bar:
        try:
            if isinstance(volume, InputError):
                raise volume
            predictor.check_volume(volume, args.output_type)
            data = predictor.predict_volume(volume, args.kind)
            predictor.save(data, volume, out, output_type=args.output_type, statistics=args.statistics)
            if preview_of[out] is not None:
                predictor.save_preview(data, volume, preview_of[out], name)
        except InputError as exc:  # one bad case does not stop the others
            failed.append(f"{name}: {exc}")
            continue
        print(out, flush=True)
    if failed:
        where = f" (process {me.rank} of {me.world})" if me.world > 1 else ""
        print(f"medseg-zoo: {len(failed)} of {len(mine)} case(s){where} failed:", *failed, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register predict."""
    p = sub.add_parser(
        "predict",
        help="segment NIfTI volumes; outputs keep the input's grid, affine and header",
        epilog="Examples: medseg-zoo predict --checkpoint runs/unetr/best -i case.nii.gz -o seg.nii.gz\n"
        "          medseg-zoo predict -m segresnet_brats -i case.nii.gz --channels FLAIR,T1w,T1gd,T2w -o seg.nii.gz\n"
        "          medseg-zoo predict --checkpoint runs/unetr/best -i imagesTs/ -o predictions/ --tta\n"
        "          medseg-zoo predict --checkpoint unetr.onnx --backend onnxruntime -i imagesTs/ -o predictions/\n"
        "          medseg-zoo predict --checkpoint runs/unetr/best -i FLAIR=dicom/flair T1w=dicom/t1 T1gd=dicom/t1c "
        "T2w=dicom/t2 --output-type dicom-seg --statistics -o seg.dcm\n"
        "          medseg-zoo predict --checkpoint runs/unetr/best -i FLAIR=f.nii.gz T1w=t1.nii.gz T1gd=t1c.nii.gz "
        "T2w=t2.nii.gz -o seg.nii.gz\n"
        "          torchrun --nproc-per-node 4 -m medseg_zoo predict --checkpoint runs/unetr/best -i imagesTs/ "
        "-o predictions/   (cases shared among 4 GPUs)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "-m", "--model", help="registered model with published weights (an ensemble's members are averaged)"
    )
    source.add_argument(
        "--checkpoint",
        help="folder written by save_pretrained or medseg-zoo train (RUN/best), or a file from medseg-zoo export "
        "(.onnx, .pt2)",
    )
    p.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        help="what runs the network (default: torch for models and .pt2 files, onnxruntime for .onnx files)",
    )
    p.add_argument(
        "-i",
        "--inputs",
        "--input",
        nargs="+",
        action="extend",
        required=True,
        help="4-D NIfTI files, folders of them, a DICOM series folder, or NAME=path (a file or a series folder) "
        "for each channel of one case; may be repeated (--input FLAIR=dirA --input T1w=dirB ...)",
    )
    p.add_argument("--series-uid", help="the series to read from a DICOM folder holding several")
    p.add_argument(
        "--output-type",
        choices=["nifti", "dicom-seg"],
        default="nifti",
        help="nifti (default), or dicom-seg: a DICOM Segmentation referencing the input series (labels only)",
    )
    p.add_argument(
        "--statistics",
        action="store_true",
        help="also write per-structure volume (ml), voxel count and intensity statistics as JSON beside each output",
    )
    p.add_argument("-o", "--output", required=True, help="output .nii.gz for one case, else a folder")
    p.add_argument(
        "--preview",
        help="also write a PNG of three planes through the predicted structures over the image: a .png for one case, "
        "else a folder (labels only)",
    )
    p.add_argument("--kind", choices=["labels", "regions", "probabilities"], default="labels")
    p.add_argument("--skip-existing", action="store_true", help="leave outputs that exist (resume a long batch)")
    p.add_argument("--tta", action="store_true", help="average over the 8 flips (8x slower)")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default 0.5)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (pays off over many windows)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--read-ahead",
        choices=["auto", "on", "off"],
        default="auto",
        help="read the next case while predicting this one (auto: on a GPU; on the CPU it competes for the cores)",
    )
    p.add_argument(
        "--amp",
        choices=AMP_MODES,
        default="auto",
        help="mixed precision (auto: bf16 on CUDA and CPUs with native bf16)",
    )
    p.add_argument(
        "--channels",
        type=lambda t: [c.strip() for c in t.split(",") if c.strip()],
        help="a 4-D file's channel names in the file's order, e.g. FLAIR,T1w,T1gd,T2w (default: from a dataset.json "
        "beside the input folder); the zoo reorders them to the model's by name",
    )
    p.set_defaults(func=_predict)
