import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from medseg_zoo.metrics import dice, hd95, volume_diagonal


def _blobs(seed, shape=(20, 18, 16), channels=3):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"))
    masks = []
    for _ in range(channels):
        centre = rng.uniform(4, 12, size=3)[:, None, None, None]
        masks.append(np.sqrt(((grid - centre) ** 2).sum(0)) < rng.uniform(2, 6))
    return np.stack(masks).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_and_hd95_equal_monai_where_both_masks_exist(seed):
    pred, truth = _blobs(seed), _blobs(seed + 10)
    spacing = (1.5, 1.0, 2.0)
    expected_dice = compute_dice(torch.from_numpy(pred)[None], torch.from_numpy(truth)[None], include_background=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected_hd = compute_hausdorff_distance(
            torch.from_numpy(pred)[None],
            torch.from_numpy(truth)[None],
            include_background=True,
            percentile=95,
            spacing=spacing,
        )
    torch.testing.assert_close(dice(pred, truth), expected_dice[0])
    torch.testing.assert_close(hd95(pred, truth, spacing), expected_hd[0])
    assert (hd95(pred, truth, spacing) > 0).all()


def test_empty_mask_policy():
    shape = (10, 12, 8)
    empty, blob = np.zeros((1, *shape), np.uint8), np.zeros((1, *shape), np.uint8)
    blob[0, 2:5, 3:6, 1:4] = 1
    spacing = (1.0, 2.0, 3.0)
    diagonal = math.sqrt(10**2 + 24**2 + 24**2)
    assert volume_diagonal(shape, spacing) == pytest.approx(diagonal)
    assert dice(empty, empty).tolist() == [1.0]  # both empty: perfect
    assert hd95(empty, empty, spacing).tolist() == [0.0]
    for pred, truth in ((blob, empty), (empty, blob)):  # one empty: worst
        assert dice(pred, truth).tolist() == [0.0]
        assert hd95(pred, truth, spacing).tolist() == [pytest.approx(diagonal)]
    mixed = np.concatenate([blob, empty])
    assert dice(mixed, np.concatenate([blob, blob])).tolist() == [1.0, 0.0]
    assert torch.isfinite(hd95(mixed, np.concatenate([empty, empty]))).all()


def test_shape_mismatch_is_refused():
    with pytest.raises(
        ValueError, match=r"prediction shape \(1, 4, 4, 4\) differs from ground truth shape \(1, 4, 4, 5\)"
    ):
        dice(np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 5)))
    with pytest.raises(ValueError, match=r"spacing \(1.0, 1.0\) has 2 values for 3 spatial axes"):
        hd95(np.ones((1, 4, 4, 4)), np.ones((1, 4, 4, 4)), (1.0, 1.0))
