"""Register a named configuration of an existing architecture, with the task contract its weights will have.

    python examples/register_configuration.py --workdir /tmp/register-example

Here: MONAI's SegResNet for liver CT (one channel, background / liver, a CT window, 1.5 mm, RAS). Once
registered, the name works everywhere a zoo name does, and its checkpoints carry the contract.
"""

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.networks.nets import SegResNet

from medseg_zoo import (
    ModelConfig,
    TaskContract,
    create_model,
    from_pretrained,
    predict,
    register_model,
    save_pretrained,
)
from medseg_zoo.transforms import LabelScheme

LIVER = LabelScheme("liver_ct", "my liver CT data", {0: "background", 1: "liver"})


def main(workdir: Path) -> None:
    register_model(
        ModelConfig(
            name="segresnet_liver",
            builder=SegResNet,
            model_args={"init_filters": 8, "blocks_down": (1, 2, 2), "blocks_up": (1, 1)},
            contract=TaskContract(
                in_channels=("CT",),
                out_channels=("background", "liver"),
                activation="softmax",
                roi_size=(64, 64, 64),
                spacing=(1.5, 1.5, 1.5),
                orientation="RAS",
                normalization="clip_scale:-100:250",  # HU window scaled to [0, 1]
                label_scheme=LIVER,
            ),
            notes="Example configuration: train it with the Trainer on a liver data set.",
            stem=("convInit.conv.weight",),
            head=("conv_final.2.",),
            encoder=("convInit.", "down_layers."),
        ),
        overwrite=True,
    )
    model = create_model("segresnet_liver")
    print(model.pretrained_cfg.contract)
    workdir.mkdir(parents=True, exist_ok=True)
    ct = np.random.default_rng(0).normal(40, 60, size=(48, 40, 32)).astype(np.float32)  # HU-like noise
    nib.save(nib.Nifti1Image(ct, np.diag([0.8, 0.8, 2.5, 1.0])), workdir / "ct.nii.gz")
    seg = predict(model, str(workdir / "ct.nii.gz"), output=workdir / "liver.nii.gz")
    print("labels", np.unique(np.asarray(seg.dataobj)), "on the input's grid", seg.shape)

    again = from_pretrained(save_pretrained(model, workdir / "segresnet_liver"))
    assert again.pretrained_cfg.contract == model.pretrained_cfg.contract  # the data set's own scheme included


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("register-example"))
    main(parser.parse_args().workdir)
