"""Fine-tune on your own folder of image/label pairs with labels of your own.

    python examples/finetune_custom_folder.py --data MyLesions --workdir lesions

A folder of pairs (`images/NAME.nii.gz`, `labels/NAME.nii.gz`) has no dataset.json, so its label scheme is given
explicitly: here background and lesion, one CT-like channel. The model's channels and outputs come from the
data; check_dataset reports every problem before training starts. Without --data, the example writes a small
synthetic folder first.
"""

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg_zoo import TrainConfig, Trainer, create_model
from medseg_zoo.data import check_dataset, discover
from medseg_zoo.data.synthetic import make_case
from medseg_zoo.transforms import LabelScheme

LESIONS = LabelScheme("lesions", "my lesion data, 2026", {0: "background", 1: "lesion"})


def main(data: Path, output: Path, epochs: int, roi: int) -> None:
    dataset = discover(data, label_scheme=LESIONS, channels=("T1",))
    model = create_model(
        "unet", in_channels=list(dataset.channels), out_channels=2, label_scheme=LESIONS, roi_size=roi,
        channels=(8, 16, 32), strides=(2, 2), num_res_units=1,
    )  # fmt: skip
    check_dataset(dataset, model).raise_for_errors()
    trainer = Trainer(model, dataset, TrainConfig(output=str(output), epochs=epochs, val_every=max(1, epochs // 2)))
    trainer.fit()
    print(trainer.evaluate())


def _synthetic(root: Path, size: int) -> Path:
    for folder in ("images", "labels"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(6):
        image, label, affine = make_case((size, size, size), seed=i)
        nib.save(nib.Nifti1Image(image[..., 1], affine), root / "images" / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image((label > 0).astype(np.uint8), affine), root / "labels" / f"case_{i}.nii.gz")
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder with images/ and labels/")
    parser.add_argument("--workdir", type=Path, default=Path("finetune-example"), help="run/ goes here")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--roi", type=int, default=32)
    parser.add_argument("--size", type=int, default=48, help="voxels per axis of the synthetic cases")
    args = parser.parse_args()
    main(args.data or _synthetic(args.workdir / "data", args.size), args.workdir / "run", args.epochs, args.roi)
