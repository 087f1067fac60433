"""CUDA paths, run where a GPU is (skipped elsewhere): the Predictor on the GPU equals the CPU, and mixed precision
runs for every registered architecture."""

import numpy as np
import pytest
import torch

from medseg_zoo._registry import get_config
from medseg_zoo.inference import Predictor
from tests.conftest import build_tiny, single_models
from tests.models.test_models import SPATIAL

pytestmark = pytest.mark.cuda


@pytest.fixture
def exact_float32():
    """No TF32 in convolutions and matrix products, so CUDA float32 is compared with the CPU to 1e-4."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _tiny_with_roi(name):
    roi = {} if "img_size" in get_config(name).tiny_args else {"roi_size": (32, 32, 16)}  # UNETR's: its img_size
    return build_tiny(name, **roi)


def _case(channels):
    rng = np.random.default_rng(0)
    return rng.normal(size=(channels, 48, 40, 36)).astype(np.float32), np.diag([1.2, 1.2, 1.5, 1.0])


@pytest.mark.parametrize("name", ["unet_brats", "unetr_brats"])
def test_predictor_on_cuda_equals_the_cpu(name, exact_float32):
    model = _tiny_with_roi(name)
    case = _case(4)
    cpu, gpu = (
        np.asanyarray(Predictor(model, device=d, amp=False)(case, kind="probabilities").dataobj)
        for d in ("cpu", "cuda")
    )
    np.testing.assert_allclose(gpu, cpu, atol=1e-4, rtol=0)  # probabilities on the input grid


@pytest.mark.parametrize("name", ["unet_brats", "unet_spleen"])  # sigmoid regions, softmax classes
@pytest.mark.parametrize("aggregation", [None, "cpu"])
def test_labels_on_cuda_equal_the_cpu_wherever_the_volume_is_worked_on(name, aggregation, exact_float32):
    model = _tiny_with_roi(name)
    channels = len(model.pretrained_cfg.contract.in_channels)
    case = _case(channels)
    cpu = np.asanyarray(Predictor(model, device="cpu", amp=False)(case).dataobj)
    predictor = Predictor(model, device="cuda", amp=False, aggregation_device=aggregation)
    # by default the case stays on the GPU from preprocessing to the labels
    assert predictor.probabilities(torch.zeros(1, channels, 40, 40, 24)).device.type == (aggregation or "cuda")
    gpu = np.asanyarray(predictor(case).dataobj)
    assert gpu.shape == cpu.shape and (gpu == cpu).mean() >= 0.999


@pytest.mark.parametrize("name", single_models())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_training_step_on_cuda(name, dtype):
    model = build_tiny(name).cuda()
    x = torch.randn(2, len(model.pretrained_cfg.contract.in_channels), *SPATIAL, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        y = model(x)
    y.float().square().mean().backward()
    assert torch.isfinite(y.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
