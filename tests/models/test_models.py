"""Every registered model, built at a tiny size: forward shape, finite gradients. A new entry is tested for free."""

import monai
import pytest
import torch
from tests.conftest import build_tiny, single_models

import medseg_zoo as mz
from medseg_zoo._registry import get_config

SPATIAL = (64, 64, 32)  # multiples of 16 (UNETR patches) and 32 (Swin UNETR, which needs 2+ voxels at 1/32)


@pytest.mark.parametrize("name", single_models())
def test_forward_backward(name):
    model = build_tiny(name)
    contract = model.pretrained_cfg.contract
    x = torch.randn(2, len(contract.in_channels), *SPATIAL)
    y = model(x)
    assert y.shape == (2, len(contract.out_channels), *SPATIAL)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", mz.list_models())
def test_contract_is_complete(name):
    cfg = get_config(name)
    assert cfg.paper and cfg.notes
    if cfg.contract is not None:
        c = cfg.contract
        assert c.in_channels and c.out_channels and c.roi_size and (c.label_scheme or cfg.headless)
        assert cfg.members or (cfg.weights and all(w.recipe or w.published for w in cfg.weights))
        assert cfg.license
    if cfg.recipe is not None:  # the publisher's fine-tuning settings are a named recipe
        from medseg_zoo.training import recipe

        recipe(cfg.recipe)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _monai_unetr_count() -> int:
    with torch.device("meta"):
        ref = monai.networks.nets.UNETR(4, 3, (128, 128, 64))
    # MONAI >= 1.6 keeps a LayerNorm per block for cross-attention that UNETR never uses; the zoo has none.
    unused = sum(p.numel() for k, p in ref.named_parameters() if "norm_cross_attn" in k)
    return _count(ref) - unused


def _monai_unet_count() -> int:
    with torch.device("meta"):
        ref = monai.networks.nets.UNet(3, 4, 3, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    return _count(ref)


def _monai_wholebody_count() -> int:
    with torch.device("meta"):
        ref = monai.networks.nets.SegResNet(
            blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=32, in_channels=1, out_channels=105
        )
    return _count(ref)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("unetr_brats", lambda: 49_667_123),  # self-attention-cv 1.2.3 UNETR, dim_linear_block=2048
        ("unetr_monai", _monai_unetr_count),  # 102,271,539 in MONAI 1.6.1 less 18,432 unused norm_cross_attn
        ("unet_brats", _monai_unet_count),  # the seed's 4.8 M baseline
        ("segresnet_brats", lambda: 4_702_227),  # MONAI bundle brats_mri_segmentation's SegResNet
        ("swin_unetr_btcv", lambda: 62_187_296),  # MONAI bundle swin_unetr_btcv_segmentation's SwinUNETR
        ("segresnet_wholebody", _monai_wholebody_count),  # MONAI bundle wholeBody_ct_segmentation's SegResNet
    ],
)
def test_full_size_parameter_count(name, expected):
    try:
        with torch.device("meta"):
            model = mz.create_model(name)
    except RuntimeError:  # SwinUNETR computes values while built: not on the meta device
        model = mz.create_model(name)
    assert _count(model) == expected()
