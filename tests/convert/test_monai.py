"""Given the same weights, the native UNETR reproduces monai.networks.nets.UNETR."""

import pytest
import torch
from monai.networks.blocks import CrossAttentionBlock
from monai.networks.nets import UNETR as MonaiUNETR
from tests.numerics import assert_same_function

import medseg_zoo as mz
from medseg_zoo.convert import ConversionError
from medseg_zoo.convert.monai import convert_unetr

ROI = (32, 32, 16)
SMALL = {"hidden_size": 96, "mlp_dim": 192, "num_heads": 4, "feature_size": 8}


def _compare(source, model):
    """Outputs' max abs difference, after checking the zoo's float32 is as accurate as MONAI's."""
    return assert_same_function(model.eval(), source.eval(), torch.randn(2, 4, *ROI))


def test_defaults_outputs_equal():
    source = MonaiUNETR(4, 3, ROI)  # unetr_monai: MONAI's defaults
    model = mz.create_model("unetr_monai", img_size=ROI)
    model.load_state_dict(convert_unetr(source.state_dict()), strict=True)
    assert _compare(source, model) <= 1e-4


@pytest.mark.parametrize(
    "variant",
    [
        {"proj_type": "perceptron"},
        {"conv_block": False},
        {"res_block": False},
        {"norm_name": "batch"},
        {"qkv_bias": True},
    ],
)
def test_variants_outputs_equal(variant):
    source = MonaiUNETR(4, 3, ROI, **SMALL, **variant)
    model = mz.create_model("unetr", in_channels=4, out_channels=3, img_size=ROI, **SMALL, **variant)
    model.load_state_dict(convert_unetr(source.state_dict()), strict=True)
    assert _compare(source, model) <= 1e-4


def test_checkpoints_of_older_monai_releases():
    source = MonaiUNETR(4, 3, ROI, **SMALL)
    state = source.state_dict()
    before_1_4 = {k: v for k, v in state.items() if "norm_cross_attn" not in k}
    # MONAI 1.4-1.5 created a CrossAttentionBlock in every TransformerBlock, stored though never used.
    with_cross = dict(state)
    for i in range(12):
        block = CrossAttentionBlock(SMALL["hidden_size"], SMALL["num_heads"])
        with_cross.update({f"vit.blocks.{i}.cross_attn.{k}": v for k, v in block.state_dict().items()})
    for checkpoint in (before_1_4, with_cross):
        model = mz.create_model("unetr", in_channels=4, out_channels=3, img_size=ROI, **SMALL)
        model.load_state_dict(convert_unetr(checkpoint), strict=True)
        assert _compare(source, model) <= 1e-4


def test_unknown_keys_are_refused():
    state = dict(MonaiUNETR(4, 3, ROI, **SMALL).state_dict())
    state["decoder1.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"MONAI UNETR: 1 key\(s\) not understood .*decoder1\.weight"):
        convert_unetr(state)
