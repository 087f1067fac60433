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

import pytest  # noqa: E402  (after the environment is set)
import torch  # noqa: E402


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
