"""Each pretraining source's publisher architecture (a pip package: MONAI, dynamic-network-architectures) with random
weights, saved in the publisher's exact layout, converted, and compared with the zoo model (as accurate in float32
as the publisher's own network against float64)."""

import io
import zipfile

import pytest
import torch
from dynamic_network_architectures.architectures.primus import Primus as PublisherPrimus
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from monai.networks.nets import SegResNet, SwinUNETR
from tests.numerics import assert_same_function
from torch import nn

import medseg_zoo as mz
from medseg_zoo._pretrained import read_checkpoint
from medseg_zoo._registry import get_config
from medseg_zoo.convert import ConversionError, convert_state_dict

TINY_SWIN = {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}


def _perturbed(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights that are not the initialisation (zero biases, unit norms would hide a swapped key)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module.eval()


def swin_ssl_file(encoder: SwinUNETR) -> dict:
    """``model_swinvit.pt`` as released: the Swin encoder under ``module.``, MLPs as ``fc1``/``fc2``, and the
    self-supervised heads."""
    state = {}
    for key, value in encoder.state_dict().items():
        if key.startswith("swinViT."):
            key = "module." + key.removeprefix("swinViT.")
            state[key.replace("mlp.linear1", "mlp.fc1").replace("mlp.linear2", "mlp.fc2")] = value
    state["module.rotation_head.weight"] = torch.zeros(4, 192)
    state["module.contrastive_head.weight"] = torch.zeros(512, 192)
    return {"epoch": 100, "state_dict": state}


def nnssl_file(network: nn.Module, architecture: str) -> dict:
    """``checkpoint_final.pth`` of nnssl: ``network_weights`` and the adaptation plan."""
    return {
        "network_weights": network.state_dict(),
        "nnssl_adaptation_plan": {"architecture_plans": {"arch_class_name": architecture}, "key_to_encoder": "x"},
    }


def publisher_resenc(in_channels: int = 1, out_channels: int = 3) -> ResidualEncoderUNet:
    return ResidualEncoderUNet(
        in_channels, 3, [4, 8, 16], nn.Conv3d, 3, [1, 2, 2], [1, 2, 1], out_channels, [1, 1], conv_bias=True,
        norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True}, deep_supervision=True,
    )  # fmt: skip


TINY_RESENC = {"features": (4, 8, 16), "strides": (1, 2, 2), "blocks": (1, 2, 1)}
TINY_PRIMUS = {"embed_dim": 48, "depth": 2, "num_heads": 2}


def test_swin_ssl_encoder_equals_monais(tmp_path):
    source = _perturbed(SwinUNETR(in_channels=1, out_channels=2, **TINY_SWIN))
    torch.save(swin_ssl_file(source), tmp_path / "model_swinvit.pt")
    state = convert_state_dict(
        read_checkpoint(tmp_path / "model_swinvit.pt", "swin-ssl"), "swin-ssl", get_config("swin_unetr_ssl")
    )
    assert set(state) == {
        k for k in source.state_dict() if k.startswith("swinViT.") and "relative_position_index" not in k
    }
    model = mz.create_model("swin_unetr_ssl", out_channels=2, **TINY_SWIN)
    model.load_state_dict(state, strict=False)  # the encoder only: the decoder is the task's
    x = torch.randn(1, 1, 64, 64, 32)
    for ours, theirs in zip(model.swinViT(x), source.swinViT(x), strict=True):
        assert torch.equal(ours, theirs)  # the same network, the same weights: bit for bit


def test_swin_ssl_keys_it_does_not_know_are_refused(tmp_path):
    file = swin_ssl_file(SwinUNETR(in_channels=1, out_channels=2, **TINY_SWIN))
    file["state_dict"]["module.layers1.0.blocks.0.mlp.fc3.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"1 key\(s\) not understood .*layers1.0.blocks.0.mlp.fc3.weight"):
        convert_state_dict(file["state_dict"], "swin-ssl", get_config("swin_unetr_ssl"))


def test_brats21_fold_from_its_zip_equals_monais(tmp_path):
    source = _perturbed(SwinUNETR(in_channels=4, out_channels=3, **TINY_SWIN))
    buffer = io.BytesIO()
    torch.save({"epoch": 300, "best_acc": 0.88, "state_dict": source.state_dict()}, buffer)
    archive = tmp_path / "fold0_f48_ep300_4gpu_dice0_8854.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("fold0_f48_ep300_4gpu_dice0_8854/model.pt", buffer.getvalue())
    model = mz.convert_checkpoint(archive, "monai", "swin_unetr_brats21_fold0", **TINY_SWIN).eval()
    assert_same_function(model, source, torch.randn(1, 4, 64, 64, 32))


def test_suprem_swinunetr_and_segresnet_equal_monais(tmp_path):
    swin = _perturbed(SwinUNETR(in_channels=1, out_channels=32, **TINY_SWIN))
    heads = {"module.precls_conv.0.weight": torch.ones(12), "module.controller.weight": torch.ones(8, 4, 1, 1, 1)}
    file = {"net": {**{f"module.backbone.{k}": v for k, v in swin.state_dict().items()}, **heads}}
    torch.save(file, tmp_path / "supervised_suprem_swinunetr_2100.pth")
    model = mz.convert_checkpoint(tmp_path / "supervised_suprem_swinunetr_2100.pth", "suprem", "suprem_swinunetr",
                                  out_channels=32, **TINY_SWIN).eval()  # fmt: skip
    assert [k for k in model.load_report.reinitialized] == ["out.conv.conv.weight", "out.conv.conv.bias"]
    model.out.load_state_dict(swin.out.state_dict())  # the task head is not part of the starting point
    assert_same_function(model, swin, torch.randn(1, 1, 64, 64, 32))

    tiny = {"blocks_down": (1, 1), "blocks_up": (1,), "init_filters": 8}
    segresnet = _perturbed(SegResNet(in_channels=1, out_channels=4, **tiny))  # 4: the downstream task
    file = {f"module.{k}": v for k, v in segresnet.state_dict().items()}
    file["module.conv_final.2.conv.weight"] = torch.randn(25, 8, 1, 1, 1)  # the pretraining task's 25 classes
    file["module.conv_final.2.conv.bias"] = torch.randn(25)
    torch.save({"net": file}, tmp_path / "seg.pth")
    model = mz.convert_checkpoint(tmp_path / "seg.pth", "suprem", "suprem_segresnet", out_channels=4, **tiny).eval()
    assert model.load_report.dropped == ["conv_final.2.conv.bias", "conv_final.2.conv.weight"]
    model.conv_final[2].load_state_dict(segresnet.conv_final[2].state_dict())
    assert_same_function(model, segresnet, torch.randn(1, 1, 32, 32, 32))


def test_suprem_unet_layout_lands_on_the_zoo_names(tmp_path):
    """SuPreM's U-Net (Models Genesis) is no pip package: a file of its layout, written from the zoo's weights by
    the inverse of the mapping, must give those weights back, every one."""
    model = _perturbed(mz.create_model("suprem_unet", out_channels=2, width=2))
    levels = {**{f"encoder.{i}": f"down_tr{c}" for i, c in enumerate((64, 128, 256, 512))},
              **{f"decoders.{i}": f"up_tr{c}" for i, c in enumerate((256, 128, 64))}}  # fmt: skip
    file = {}
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            continue  # the universal model has no head of its own
        if key.startswith("ups."):
            index, param = key.split(".")[1:]
            file[f"module.backbone.up_tr{(256, 128, 64)[int(index)]}.up_conv.{param}"] = value
            continue
        group, index, layer, part, param = key.split(".")
        layer_index = int(layer[-1]) - 1
        name = "conv1" if part == "conv" else "bn1"
        file[f"module.backbone.{levels[f'{group}.{index}']}.ops.{layer_index}.{name}.{param}"] = value
    file["module.organ_embedding.weight"] = torch.zeros(25, 256)
    state = convert_state_dict(file, "suprem", get_config("suprem_unet"))
    own = model.state_dict()
    assert set(state) == {k for k in own if not k.startswith("head.")}
    assert all(torch.equal(state[k], own[k]) for k in state)


@pytest.mark.parametrize("deep_supervision", [True, False])
def test_resenc_unet_equals_dynamic_network_architectures(tmp_path, deep_supervision):
    source = _perturbed(publisher_resenc(2, 3))
    source.decoder.deep_supervision = deep_supervision
    torch.save(nnssl_file(source, "ResEncL"), tmp_path / "checkpoint_final.pth")
    source.decoder.deep_supervision = False  # the zoo's network returns the full-resolution output
    model = mz.convert_checkpoint(tmp_path / "checkpoint_final.pth", "nnssl", "resenc_unet", in_channels=2,
                                  out_channels=3, **TINY_RESENC).eval()  # fmt: skip
    assert_same_function(model, source, torch.randn(2, 2, 32, 32, 32))


def test_primus_equals_dynamic_network_architectures(tmp_path):
    source = _perturbed(PublisherPrimus(1, 48, (8, 8, 8), 3, eva_depth=2, eva_numheads=2, input_shape=(32, 48, 64)))
    torch.save(nnssl_file(source, "PrimusM"), tmp_path / "checkpoint_final.pth")
    model = mz.convert_checkpoint(tmp_path / "checkpoint_final.pth", "nnssl", "primus", in_channels=1, out_channels=3,
                                  img_size=(32, 48, 64), **TINY_PRIMUS).eval()  # fmt: skip
    assert_same_function(model, source, torch.randn(2, 1, 32, 48, 64))


def test_nnssl_repeated_tensors_must_repeat(tmp_path):
    source = publisher_resenc()
    state = dict(source.state_dict())
    state["encoder.stem.convs.0.all_modules.0.weight"] = state["encoder.stem.convs.0.all_modules.0.weight"] + 1
    with pytest.raises(ConversionError, match=r"all_modules.0.weight should repeat encoder.stem.convs.0.conv.weight"):
        convert_state_dict(state, "nnssl", get_config("resenc_unet"))
