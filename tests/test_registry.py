import json

import pytest
import torch

import medseg_zoo as mz
from medseg_zoo import InvalidArgumentError, InvalidOverrideError, PretrainedUnavailableError, UnknownModelError
from medseg_zoo._registry import has_published_weights
from medseg_zoo.models import UNETR

TINY_UNETR = {"img_size": (32, 32, 16), "feature_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_heads": 4}


def test_unknown_name_suggests_closest():
    with pytest.raises(UnknownModelError, match=r"unknown model 'unetr_bratz'\. Did you mean 'unetr_brats'"):
        mz.create_model("unetr_bratz")


def test_unknown_name_is_a_key_error():
    with pytest.raises(KeyError):
        mz.model_info("no_such_model")


def test_unknown_override_lists_valid_arguments():
    with pytest.raises(InvalidOverrideError, match=r"takes no argument 'hiden_size'\. Valid arguments: .*hidden_size"):
        mz.create_model("unetr_brats", hiden_size=32)


def test_generic_name_requires_channels():
    with pytest.raises(
        InvalidOverrideError, match=r"unetr is a generic architecture: give in_channels and out_channels"
    ):
        mz.create_model("unetr")
    with pytest.raises(InvalidOverrideError, match=r"give out_channels"):
        mz.create_model("unet", in_channels=1)


def test_pretrained_without_published_weights_names_the_recipe():
    with pytest.raises(
        PretrainedUnavailableError,
        match=r"not published yet .*medseg-zoo train --model unetr_brats --recipe unetr_brats",
    ):
        mz.create_model("unetr_brats", pretrained=True)
    with pytest.raises(PretrainedUnavailableError, match=r"unetr has no pretrained weights"):
        mz.create_model("unetr", pretrained=True, in_channels=1, out_channels=2)


def test_list_models_filters():
    assert {"unetr", "unetr_brats", "unetr_monai", "unet", "unet_brats"} <= set(mz.list_models())
    assert mz.list_models("unetr_*") == ["unetr_brats", "unetr_btcv", "unetr_monai"]
    assert all(has_published_weights(mz._registry.get_config(n)) for n in mz.list_models(pretrained=True))
    assert "unetr_brats" not in mz.list_models(pretrained=True)  # planned, not published


def test_register_model_rejects_duplicates():
    cfg = mz._registry.get_config("unet")
    with pytest.raises(ValueError, match="already registered"):
        mz.register_model(cfg)


def test_model_carries_its_contract():
    model = mz.create_model("unetr_brats", **{k: v for k, v in TINY_UNETR.items()})
    cfg = model.pretrained_cfg
    assert cfg.name == "unetr_brats"
    assert cfg.contract.in_channels == ("FLAIR", "T1w", "T1gd", "T2w")
    assert cfg.contract.out_channels == ("TC", "WT", "ET")
    assert cfg.contract.activation == "sigmoid"
    assert cfg.contract.label_scheme == "msd_task01"
    assert cfg.contract.roi_size == (32, 32, 16)  # follows the img_size override
    assert cfg.model_args["hidden_size"] == 32
    assert "img_size" not in cfg.model_args  # the roi lives in the contract only


def test_default_roi_is_passed_to_the_builder():
    with torch.device("meta"):
        model = mz.create_model("unetr_brats")
    assert model.patch_embed.grid_size == (8, 8, 4)
    assert model.pretrained_cfg.contract.roi_size == (128, 128, 64)


def test_channel_names_and_counts():
    model = mz.create_model("unetr", in_channels=["CT"], out_channels=["background", "liver"], **TINY_UNETR)
    assert model.pretrained_cfg.contract.in_channels == ("CT",)
    assert model.pretrained_cfg.contract.activation == "softmax"
    assert model(torch.randn(1, 1, 32, 32, 16)).shape == (1, 2, 32, 32, 16)

    same = mz.create_model("unetr_brats", in_channels=4, **TINY_UNETR)
    assert same.pretrained_cfg.contract.in_channels == ("FLAIR", "T1w", "T1gd", "T2w")
    other = mz.create_model("unetr_brats", in_channels=2, out_channels=5, **TINY_UNETR)
    assert other.pretrained_cfg.contract.in_channels == ("channel_0", "channel_1")
    assert other.pretrained_cfg.contract.out_channels == tuple(f"class_{i}" for i in range(5))
    assert other(torch.randn(1, 2, 32, 32, 16)).shape == (1, 5, 32, 32, 16)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, InvalidArgumentError, "in_channels must be at least 1, got 0"),  # a bad value: a ValueError
        ("FLAIR", InvalidOverrideError, "must be a count or a sequence of names, got 'FLAIR'"),  # a TypeError
        (["a", "a"], InvalidArgumentError, "names must be non-empty and unique"),
    ],
)
def test_bad_channel_arguments(value, error, message):
    with pytest.raises(error, match=message):
        mz.create_model("unetr", in_channels=value, out_channels=2)


def test_model_info_is_json_serialisable():
    info = mz.model_info("unetr_brats")
    assert info["architecture"] == f"{UNETR.__module__}.UNETR"
    assert info["contract"]["roi_size"] == (128, 128, 64)
    assert info["weights"][0]["repo_id"] == "medseg-zoo/unetr_brats"
    json.dumps(info)


def test_user_registered_model():
    cfg = mz.ModelConfig(
        name="test_user_unetr",
        builder=UNETR,
        model_args={k: v for k, v in TINY_UNETR.items() if k != "img_size"},
        contract=mz.TaskContract(
            in_channels=("T1",), out_channels=("bg", "fg"), activation="softmax", roi_size=(32, 32, 16)
        ),
        roi_arg="img_size",
    )
    mz.register_model(cfg)
    try:
        model = mz.create_model("test_user_unetr")
        assert model(torch.randn(1, 1, 32, 32, 16)).shape == (1, 2, 32, 32, 16)
    finally:
        mz._registry._REGISTRY.pop("test_user_unetr")


def test_contract_validates():
    with pytest.raises(ValueError, match="activation must be 'sigmoid' or 'softmax', got 'relu'"):
        mz.TaskContract(in_channels=("a",), out_channels=("b",), activation="relu", roi_size=(1, 1, 1))


@pytest.mark.parametrize(
    ("name", "monai_class", "monai_args"),
    [
        # MONAI's UNet requires channels and strides; everything else at MONAI's defaults (num_res_units 0)
        ("unet", "UNet", {"spatial_dims": 3, "channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2)}),
        ("segresnet", "SegResNet", {}),  # init_filters 8
        ("swin_unetr", "SwinUNETR", {}),  # feature_size 24
    ],
)
def test_generic_names_take_monais_defaults(name, monai_class, monai_args):
    """Code ported from MONAI with the same arguments gets the same network, and MONAI's weights load strictly."""
    import monai.networks.nets

    theirs = getattr(monai.networks.nets, monai_class)(in_channels=2, out_channels=3, **monai_args)
    ours = mz.create_model(name, in_channels=2, out_channels=3, spatial_dims=3)
    own = ours.state_dict()
    assert {k: v.shape for k, v in own.items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict(), strict=True)
