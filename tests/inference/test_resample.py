import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Orientationd, Spacingd

from medseg_zoo.inference.resample import resample_parallel
from tests.inference.test_predictor import AFFINES


def _invert_with_monai(spacing, affine, nearest):
    image = MetaTensor(torch.rand(1, 37, 29, 21), affine=torch.as_tensor(affine))
    pre = Compose(
        [
            Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd("image", pixdim=spacing, mode="bilinear"),
        ]
    )
    model_grid = pre({"image": image})["image"]
    data = torch.rand(3, *model_grid.shape[1:])
    expected = Invertd("pred", pre, orig_keys="image", nearest_interp=nearest)(
        {"image": model_grid, "pred": MetaTensor(data)}
    )["pred"]
    ours = resample_parallel(data, model_grid.affine, affine, image.shape[1:], nearest=nearest)
    return ours, torch.as_tensor(np.asarray(expected.as_tensor()))


@pytest.mark.parametrize("orientation", list(AFFINES))
def test_linear_resampling_equals_monai_invert(orientation):
    ours, expected = _invert_with_monai((1.5, 1.5, 2.0), AFFINES[orientation], nearest=False)
    assert ours.shape == expected.shape == (3, 37, 29, 21)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("orientation", list(AFFINES))
def test_nearest_resampling_equals_monai_invert(orientation):
    # 1.3 mm from these spacings puts no voxel centre half-way between two others, where either is nearest.
    ours, expected = _invert_with_monai((1.3, 1.3, 1.3), AFFINES[orientation], nearest=True)
    torch.testing.assert_close(ours, expected, atol=0, rtol=0)


def test_rotated_grids_are_refused():
    rotated = np.array([[0.966, -0.259, 0, 0], [0.259, 0.966, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    with pytest.raises(ValueError, match="axes are not parallel"):
        resample_parallel(torch.zeros(1, 4, 4, 4), np.eye(4), rotated, (4, 4, 4))
