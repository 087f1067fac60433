import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def msd_dataset(tmp_path_factory):
    """A small synthetic BraTS-like data set in MSD layout (4 cases of 32^3)."""
    from medseg_zoo.data import make_dataset

    return make_dataset(tmp_path_factory.mktemp("msd") / "Task01_BrainTumour", n_cases=4, shape=(32, 32, 32), seed=3)
