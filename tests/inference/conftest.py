import dataclasses

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

import medseg_zoo as mz
from medseg_zoo._contract import config_of

MSD_CHANNELS = ["FLAIR", "T1w", "T1gd", "T2w"]  # the channel order of MSD Task01's 4-D files


def predict(models, inputs, *args, **kwargs):
    """`medseg_zoo.predict`, telling a four-channel model that 4-D files hold MSD Task01's channels."""
    first = models[0] if isinstance(models, list) else models
    if len(config_of(first).contract.in_channels) == 4:
        kwargs.setdefault("channels", MSD_CHANNELS)
    return mz.predict(models, inputs, *args, **kwargs)


CONTRACT = mz.TaskContract(
    in_channels=("FLAIR", "T1w", "T1gd", "T2w"),
    out_channels=("TC", "WT", "ET"),
    activation="sigmoid",
    roi_size=(32, 32, 16),
    spacing=None,
    orientation="RAS",
    normalization="none",
    label_scheme="msd_task01",
)


class Echo(nn.Module):
    """Logits that copy the first three input channels: a model whose correct answer is known."""

    def __init__(self, in_channels: int = 4, out_channels: int = 3) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        return (x[:, :3] - 0.5) * self.scale


def make_echo(**contract_changes) -> nn.Module:
    model = Echo()
    model.pretrained_cfg = mz.ModelConfig(
        name="echo", builder=Echo, contract=dataclasses.replace(CONTRACT, **contract_changes)
    )
    return model


@pytest.fixture
def echo():
    return make_echo()


def nested_label_map(shape, seed=0) -> np.ndarray:
    """An msd_task01 label map of nested blobs (edema > non-enhancing > enhancing)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij"))
    centre = rng.uniform(-0.2, 0.2, size=3)[:, None, None, None]
    r = np.sqrt(((grid - centre) ** 2).sum(0))
    label = np.zeros(shape, dtype=np.uint8)
    label[r < 0.7] = 1
    label[r < 0.45] = 2
    label[r < 0.2] = 3
    return label


def echo_input(label: np.ndarray) -> np.ndarray:
    """4-D (X, Y, Z, 4) image whose first three channels are the TC, WT, ET masks of ``label``."""
    tc, wt, et = np.isin(label, (2, 3)), np.isin(label, (1, 2, 3)), label == 3
    return np.stack([tc, wt, et, np.zeros_like(tc)], axis=-1).astype(np.float32)


def write(path, data, affine, qform_code=1, sform_code=1):
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    nib.save(img, path)
    return path
