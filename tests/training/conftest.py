import hashlib
from pathlib import Path

import pytest
import torch

import medseg_zoo as mz
from medseg_zoo.training import TrainConfig

TINY_UNET = {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1}


def tiny_model(seed: int = 0, **changes):
    """unet_brats at a tiny width and roi: the same code paths, seconds per run."""
    torch.manual_seed(seed)
    return mz.create_model("unet_brats", roi_size=(16, 16, 16), **{**TINY_UNET, **changes})


def tiny_config(output: Path, **changes) -> TrainConfig:
    return TrainConfig(output=str(output), **{"epochs": 2, "val_every": 1, "progress": False, **changes})


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its hash, to prove that nothing was created or changed."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Six synthetic BraTS-like cases of 32^3 in MSD layout."""
    from medseg_zoo.data import make_dataset

    return make_dataset(tmp_path_factory.mktemp("tiny") / "Task01", n_cases=6, shape=(32, 32, 32), seed=7)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny model saved as a folder, for the CLI (``train --checkpoint``)."""
    return mz.save_pretrained(tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny")
