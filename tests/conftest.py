"""Test set-up. The fake Hub starts before anything imports huggingface_hub, which reads HF_ENDPOINT and HF_HOME
at import time; no test reaches the network."""

import os
import tempfile

from tests.fake_hub import FakeHub

HUB = FakeHub()
os.environ["HF_ENDPOINT"] = HUB.url
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="medseg-zoo-hf-home-")
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("HF_TOKEN", None)

import hashlib  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402  (after the environment is set)
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def hub():
    """The fake Hub, emptied for the test."""
    HUB.reset()
    yield HUB
    HUB.reset()


@pytest.fixture(scope="session")
def msd_dataset(tmp_path_factory):
    """A small synthetic BraTS-like data set in MSD layout (4 cases of 32^3)."""
    from medseg_zoo.data import make_dataset

    return make_dataset(tmp_path_factory.mktemp("msd") / "Task01_BrainTumour", n_cases=4, shape=(32, 32, 32), seed=3)


TINY_UNET = {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1}


def single_models() -> list[str]:
    """Every registered model that is one network (ensembles are lists of them)."""
    import medseg_zoo as mz
    from medseg_zoo._registry import get_config

    return [n for n in mz.list_models() if not get_config(n).members]


def build_tiny(name: str, **changes):
    """A registered model at its tiny test size: generic architectures with 2 inputs and 3 outputs, pretrained
    starting points (no task head) with 3 outputs; ``changes`` to its arguments."""
    import medseg_zoo as mz
    from medseg_zoo._registry import get_config

    cfg = get_config(name)
    channels = {} if cfg.contract else {"in_channels": 2, "out_channels": 3}
    if cfg.headless:
        channels = {"out_channels": 3}
    return mz.create_model(name, **{**channels, **cfg.tiny_args, **changes})


def tiny_model(seed: int = 0, **changes):
    """unet_brats at a tiny width and roi: the same code paths, seconds per run."""
    import medseg_zoo as mz

    torch.manual_seed(seed)
    return mz.create_model("unet_brats", **{"roi_size": (16, 16, 16), **TINY_UNET, **changes})


def tiny_config(output: Path, **changes):
    from medseg_zoo.training import TrainConfig

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
    import medseg_zoo as mz

    return mz.save_pretrained(tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny")
