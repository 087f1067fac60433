import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss

from medseg_zoo.models.unetr import BRATS_MSD_CONTRACT, BTCV_CT_CONTRACT
from medseg_zoo.training import loss_for


def _regions(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 6, 5, 4, generator=g), (torch.rand(2, 3, 6, 5, 4, generator=g) > 0.6).float()


def test_sigmoid_regions_get_dice_and_binary_cross_entropy_per_region():
    logits, target = _regions()
    expected = DiceLoss(sigmoid=True)(logits, target) + F.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(loss_for(BRATS_MSD_CONTRACT)(logits, target), expected)


def test_nested_regions_can_be_learned_exactly():
    """A voxel inside all three BraTS regions has the target [1, 1, 1]: confident, right logits cost ~nothing
    per region, where a softmax cross-entropy across the regions (MONAI's DiceCELoss with C > 1) stays above
    log(3) for it."""
    target = torch.ones(1, 3, 4, 4, 4)
    logits = torch.full_like(target, 20.0)
    assert loss_for(BRATS_MSD_CONTRACT)(logits, target).item() < 1e-6
    assert loss_for(BRATS_MSD_CONTRACT, "monai_dice_ce")(logits, target).item() > 1.0


def test_seed_loss_is_monais_dice_ce():
    logits, target = _regions(1)
    torch.testing.assert_close(
        loss_for(BRATS_MSD_CONTRACT, "monai_dice_ce")(logits, target), DiceCELoss(sigmoid=True)(logits, target)
    )


@pytest.mark.parametrize("name", ["dice_ce", "monai_dice_ce"])
def test_softmax_classes_get_dice_and_cross_entropy(name):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 14, 4, 4, 4, generator=g)
    target = F.one_hot(torch.randint(0, 14, (2, 4, 4, 4), generator=g), 14).permute(0, 4, 1, 2, 3).float()
    torch.testing.assert_close(
        loss_for(BTCV_CT_CONTRACT, name)(logits, target), DiceCELoss(softmax=True)(logits, target)
    )


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss 'focal'; expected one of dice_ce, monai_dice_ce"):
        loss_for(BRATS_MSD_CONTRACT, "focal")
