import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Orientationd, Spacingd
from tests.inference.test_predictor import AFFINES

from medseg_zoo.transforms.resample import SeparableSpacingd, resample_parallel


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


def _image_and_label(affine):
    g = torch.Generator().manual_seed(0)
    image = MetaTensor(torch.rand(2, 37, 29, 21, generator=g) * 100, affine=torch.as_tensor(affine))
    label = MetaTensor(torch.randint(0, 4, (1, 37, 29, 21), generator=g).float(), affine=torch.as_tensor(affine))
    orient = Orientationd(["image", "label"], axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
    return orient({"image": image, "label": label})


@pytest.mark.parametrize("orientation", list(AFFINES))
@pytest.mark.parametrize("spacing", [(1.5, 1.5, 2.0), (0.7, 1.0, 1.3)])
def test_separable_spacing_equals_monai_spacing(orientation, spacing):
    keys, modes = ["image", "label"], ["bilinear", "nearest"]
    data = _image_and_label(AFFINES[orientation])
    ours = SeparableSpacingd(keys, pixdim=spacing, mode=modes)(dict(data))
    expected = Spacingd(keys, pixdim=spacing, mode=modes)(dict(data))
    assert not any(data[key].pending_operations for key in keys)  # inputs untouched
    for key in keys:
        assert ours[key].shape == expected[key].shape
        assert ours[key].dtype == expected[key].dtype
        torch.testing.assert_close(ours[key].affine, expected[key].affine)
        assert not ours[key].pending_operations
        assert [op["class"] for op in ours[key].applied_operations] == ["Orientation", "SpatialResample"]
    # float32 interpolation against MONAI's float64 grid_sample, values up to 100
    torch.testing.assert_close(ours["image"].as_tensor(), expected["image"].as_tensor(), atol=2e-5, rtol=0)
    torch.testing.assert_close(ours["label"].as_tensor(), expected["label"].as_tensor(), atol=0, rtol=0)


def test_separable_spacing_is_inverted_by_monai():
    data = _image_and_label(AFFINES["LPS"])
    original = data["image"].clone()
    spacing = SeparableSpacingd("image", pixdim=(1.5, 1.5, 2.0))
    back = spacing.inverse(spacing({"image": data["image"]}))["image"]
    assert back.shape == original.shape
    torch.testing.assert_close(back.affine, original.affine)
    assert [op["class"] for op in back.applied_operations] == ["Orientation"]


def test_separable_spacing_stays_lazy_when_asked():
    data = _image_and_label(AFFINES["RAS"])
    out = SeparableSpacingd("image", pixdim=(2.0, 2.0, 2.0), lazy=True)({"image": data["image"]})["image"]
    assert out.shape == data["image"].shape and len(out.pending_operations) == 1


def test_separable_spacing_keeps_background_exactly_zero():
    # Output voxel 2 samples source voxel 3.0 exactly: zero, although its neighbour 4 is not.
    image = torch.zeros(1, 12, 6, 6)
    image[:, 4:] = 5.0
    out = SeparableSpacingd("image", pixdim=(1.5, 1.0, 1.0))({"image": MetaTensor(image)})["image"]
    assert out[0, :3].eq(0).all() and out[0, 3:].eq(5).all()


@pytest.mark.parametrize("orientation", list(AFFINES))
def test_separable_spacing_folds_a_lazy_reorientation(orientation):
    keys, modes, ras = ["image", "label"], ["bilinear", "nearest"], (("L", "R"), ("P", "A"), ("I", "S"))
    g = torch.Generator().manual_seed(0)
    affine = torch.as_tensor(AFFINES[orientation])
    data = {
        "image": MetaTensor(torch.rand(2, 37, 29, 21, generator=g) * 100, affine=affine),
        "label": MetaTensor(torch.randint(0, 4, (1, 37, 29, 21), generator=g).float(), affine=affine),
    }
    eager = Compose([Orientationd(keys, "RAS", labels=ras), Spacingd(keys, pixdim=(1.5, 1.5, 2.0), mode=modes)])
    ours = Compose(
        [Orientationd(keys, "RAS", labels=ras, lazy=True), SeparableSpacingd(keys, pixdim=(1.5, 1.5, 2.0), mode=modes)]
    )
    got, expected = ours(dict(data)), eager(dict(data))
    for key in keys:
        torch.testing.assert_close(got[key].affine, expected[key].affine)
        assert not got[key].pending_operations
        assert [op["class"] for op in got[key].applied_operations] == ["Orientation", "SpatialResample"]
    torch.testing.assert_close(got["image"].as_tensor(), expected["image"].as_tensor(), atol=2e-5, rtol=0)
    torch.testing.assert_close(got["label"].as_tensor(), expected["label"].as_tensor(), atol=0, rtol=0)
    back = ours.inverse(got)  # MONAI's inverse undoes both
    torch.testing.assert_close(back["image"].affine, affine)
    assert back["image"].shape == data["image"].shape


def test_separable_spacing_leaves_integer_images_to_monai():
    image = MetaTensor(torch.arange(2 * 9 * 8 * 7, dtype=torch.int16).reshape(2, 9, 8, 7))
    ours = SeparableSpacingd("image", pixdim=(1.5, 1.0, 2.0))({"image": image})["image"]
    expected = Spacingd("image", pixdim=(1.5, 1.0, 2.0))({"image": image})["image"]
    assert ours.dtype == expected.dtype
    torch.testing.assert_close(ours.as_tensor(), expected.as_tensor(), atol=0, rtol=0)
