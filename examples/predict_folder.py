"""Segment every NIfTI file of a folder with one loaded model; each output keeps its input's grid and header.

    python examples/predict_folder.py --checkpoint runs/unet/best --inputs imagesTs --workdir out

(`medseg-zoo predict --checkpoint runs/unet/best -i imagesTs/ -o predictions/` does the same from the shell.)
Without --checkpoint, the example first writes a few synthetic cases and an untrained model to --workdir.
"""

import argparse
from pathlib import Path

import nibabel as nib

from medseg_zoo import InputError, Predictor, create_model, from_pretrained, save_pretrained
from medseg_zoo.data.synthetic import make_case

CHANNELS = ["FLAIR", "T1w", "T1gd", "T2w"]  # the 4-D files' channel order (MSD Task01's)


def main(checkpoint: Path, inputs: Path, outputs: Path) -> None:
    predictor = Predictor(from_pretrained(checkpoint), overlap=0.5)  # the model stays loaded across cases
    failed = []
    for case in sorted(inputs.glob("*.nii*")):
        try:
            predictor(str(case), outputs / case.name, channels=CHANNELS)
            print(outputs / case.name)
        except InputError as exc:  # a bad case is reported, the others still run
            failed.append(f"{case.name}: {exc}")
    for line in failed:
        print("failed:", line)


def _synthetic(workdir: Path, size: int) -> tuple[Path, Path]:
    (workdir / "imagesTs").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        image, _, affine = make_case((size, size, size), seed=i)
        nib.save(nib.Nifti1Image(image, affine), workdir / "imagesTs" / f"case_{i}.nii.gz")
    return save_pretrained(create_model("unet_brats_small"), workdir / "model"), workdir / "imagesTs"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a save_pretrained folder, e.g. runs/unet/best")
    parser.add_argument("--inputs", type=Path, help="folder of 4-D NIfTI files")
    parser.add_argument("--workdir", type=Path, default=Path("predict-folder-example"), help="predictions/ go here")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    checkpoint, inputs = (args.checkpoint, args.inputs) if args.checkpoint else _synthetic(args.workdir, args.size)
    main(checkpoint, inputs, args.workdir / "predictions")
