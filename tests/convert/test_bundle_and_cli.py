"""Third-party checkpoints on disk -> zoo folders: MONAI bundles, MONAI and self-attention-cv UNETR pickles."""

import dataclasses
import json

import pytest
import torch
from monai.networks.nets import UNETR as MonaiUNETR
from monai.networks.nets import SegResNet, UNet
from self_attention_cv import UNETR as SacvUNETR
from tests.numerics import assert_same_function

import medseg_zoo as mz
from medseg_zoo.checkpoints import convert_checkpoint
from medseg_zoo.cli import main
from medseg_zoo.convert import ConversionError


def _bundle(folder, network_def, state):
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps({"network_def": network_def}))
    torch.save(state, folder / "models" / "model.pt")
    return folder


def test_segresnet_bundle_outputs_equal_monai(tmp_path):
    args = {
        "blocks_down": [1, 2, 2, 4],
        "blocks_up": [1, 1, 1],
        "init_filters": 16,
        "in_channels": 4,
        "out_channels": 3,
        "dropout_prob": 0.2,
    }
    source = SegResNet(**args).eval()
    bundle = _bundle(tmp_path / "brats_mri_segmentation", {"_target_": "SegResNet", **args}, source.state_dict())
    model = convert_checkpoint(bundle, "monai-bundle", "segresnet_brats").eval()
    x = torch.randn(1, 4, 32, 32, 32)
    assert_same_function(model, source, x)


def test_unet_bundle_with_its_own_arguments(tmp_path):
    args = {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "channels": [8, 16, 32],
        "strides": [2, 2],
        "num_res_units": 1,
        "norm": "batch",
    }
    source = UNet(**args).eval()
    bundle = _bundle(tmp_path / "spleen", {"_target_": "monai.networks.nets.UNet", **args}, source.state_dict())
    model = convert_checkpoint(bundle, "monai-bundle", "unet").eval()
    assert model.pretrained_cfg.contract.in_channels == ("channel_0",)
    x = torch.randn(1, 1, 32, 32, 32)
    assert_same_function(model, source, x)


def test_swin_unetr_bundle_from_an_older_monai(tmp_path):
    from monai.networks.nets import SwinUNETR

    args = {"in_channels": 1, "out_channels": 14, "feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}
    source = SwinUNETR(**args).eval()
    state = source.state_dict()
    assert any(k.endswith("relative_position_index") for k in state)  # stored by the source, rebuilt by the zoo
    network_def = {"_target_": "SwinUNETR", "img_size": 96, "spatial_dims": 3, **args}  # img_size: MONAI < 1.5
    bundle = _bundle(tmp_path / "swin_unetr_btcv_segmentation", network_def, state)
    model = convert_checkpoint(bundle, "monai-bundle", "swin_unetr_btcv").eval()
    x = torch.randn(1, 1, 64, 64, 64)  # Swin UNETR's bottleneck is 1/32 of the input
    assert_same_function(model, source, x)
    folder = mz.save_pretrained(model, tmp_path / "zoo")
    from safetensors.torch import load_file

    assert not any(k.endswith("relative_position_index") for k in load_file(folder / "model.safetensors"))
    assert_same_function(mz.from_pretrained(folder), source, x)


def test_bundle_of_another_network_is_refused(tmp_path):
    bundle = _bundle(tmp_path / "b", {"_target_": "SwinUNETR", "in_channels": 1, "out_channels": 2}, {})
    with pytest.raises(ConversionError, match="the bundle's network is 'SwinUNETR', segresnet_brats is SegResNet"):
        convert_checkpoint(bundle, "monai-bundle", "segresnet_brats")
    with pytest.raises(ConversionError, match=r"configs/inference\.json: not found"):
        convert_checkpoint(tmp_path, "monai-bundle", "segresnet_brats")


def test_cli_convert_self_attention_cv_then_predict_ready(tmp_path, capsys):
    source = SacvUNETR(
        img_shape=(128, 128, 64),
        input_dim=4,
        output_dim=3,
        embed_dim=512,
        patch_size=16,
        num_heads=10,
        dim_linear_block=2048,
    ).eval()
    torch.save(source.state_dict(), tmp_path / "unetr.pth")
    out = tmp_path / "converted"
    assert (
        main(
            [
                "convert",
                "--from",
                "self-attention-cv",
                str(tmp_path / "unetr.pth"),
                "--model",
                "unetr_brats",
                "--to",
                str(out),
            ]
        )
        == 0
    )
    model = mz.from_pretrained(out)
    x = torch.randn(1, 4, 128, 128, 64)  # the source only runs at its own roi
    assert_same_function(model, source, x)


def test_cli_convert_monai_unetr_pickle(tmp_path):
    source = MonaiUNETR(4, 3, (128, 128, 64))
    torch.save({"state_dict": source.state_dict(), "epoch": 10}, tmp_path / "best.pt")  # research-contributions style
    assert (
        main(
            [
                "convert",
                "--from",
                "monai",
                str(tmp_path / "best.pt"),
                "--model",
                "unetr_monai",
                "--to",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    loaded = mz.from_pretrained(tmp_path / "out")
    torch.testing.assert_close(loaded.state_dict()["head.weight"], source.state_dict()["out.conv.conv.weight"])


def test_cli_download_and_push(hub, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    from medseg_zoo._registry import get_config, register_model

    cfg = get_config("segresnet_brats")
    source = SegResNet(blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=16, in_channels=4, out_channels=3)
    import io

    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    hub.add("MONAI/brats_mri_segmentation", {"models/model.pt": buffer.getvalue()})
    register_model(cfg.replace(weights=(dataclasses.replace(cfg.weights[0], md5=None),)), overwrite=True)
    try:
        assert main(["download", "segresnet_brats", "--cache-dir", str(tmp_path)]) == 0
        assert "from MONAI/brats_mri_segmentation@main/models/model.pt (sha256 " in capsys.readouterr().out
    finally:
        register_model(cfg, overwrite=True)
    assert main(["download", "unetr_brats"]) == 2
    assert "not published yet" in capsys.readouterr().err

    calls = []
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(kw) or "https://hub/commit/1")
    folder = mz.save_pretrained(
        mz.create_model("unet_brats", channels=(4, 8), strides=(2,), num_res_units=1), tmp_path / "ckpt"
    )
    assert main(["push", str(folder), "org/unet"]) == 0
    assert calls and calls[0]["repo_id"] == "org/unet"
    assert main(["push", str(tmp_path / "nothing"), "org/unet"]) == 2
    assert "config.json: not found" in capsys.readouterr().err
