"""Quickstart: build a zoo model, read its task contract, segment a volume on its own grid.

    python examples/quickstart.py --workdir /tmp/quickstart

The model here is untrained (the zoo never presents random weights as pretrained): the point is the API and the
geometry guarantee. With published weights, `create_model("segresnet_brats", pretrained=True)` is the same call.
"""

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg_zoo import create_model, list_models, predict
from medseg_zoo.data.synthetic import make_case


def main(workdir: Path, size: int) -> None:
    print("registered:", ", ".join(list_models()))
    model = create_model("unet_brats_small")
    contract = model.pretrained_cfg.contract
    print("reads", contract.in_channels, "writes", contract.out_channels, f"({contract.activation})")
    print("roi", contract.roi_size, "spacing", contract.spacing, "labels", contract.label_scheme)

    image, _, affine = make_case((size, size, size), seed=0)  # a BraTS-like case on a random (often LPS) grid
    workdir.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), workdir / "case.nii.gz")
    # A 4-D file says which channel is which (here MSD Task01's order); the zoo puts them in the model's order.
    seg = predict(
        model, str(workdir / "case.nii.gz"), output=workdir / "seg.nii.gz", channels=["FLAIR", "T1w", "T1gd", "T2w"]
    )
    print("input grid", image.shape[:3], nib.aff2axcodes(affine), "-> output", seg.shape, nib.aff2axcodes(seg.affine))
    assert seg.shape == image.shape[:3] and np.allclose(seg.affine, affine)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("quickstart-output"))
    parser.add_argument("--size", type=int, default=64, help="voxels per axis of the synthetic case")
    args = parser.parse_args()
    main(args.workdir, args.size)
