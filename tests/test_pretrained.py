"""Pretrained weights through the Hub's file protocol (a local fake Hub): download, cache, offline reload, hash
policy, safe unpickling, conversion and adaptation."""

import argparse
import dataclasses
import io

import huggingface_hub
import pytest
import torch
from monai.networks.nets import SegResNet

import medseg_zoo as mz
from medseg_zoo._download import WeightsError
from medseg_zoo._registry import get_config, register_model
from tests.numerics import assert_same_function

REPO = "MONAI/brats_mri_segmentation"


def _without_md5(cfg):
    """The configuration with its Hub source only and no md5: the fake Hub serves locally generated weights."""
    return cfg.replace(weights=(dataclasses.replace(cfg.weights[0], md5=None),))


def _pt(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture
def source_model():
    """A MONAI SegResNet of the bundle's exact configuration, with random weights."""
    torch.manual_seed(3)
    return SegResNet(
        blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=16, in_channels=4, out_channels=3, dropout_prob=0.2
    ).eval()


@pytest.fixture
def bundle_entry(monkeypatch):
    """segresnet_brats with the bundle's md5 lifted: the fake Hub serves locally generated weights."""
    cfg = get_config("segresnet_brats")
    register_model(_without_md5(cfg), overwrite=True)
    yield cfg
    register_model(cfg, overwrite=True)


def test_monai_bundle_end_to_end(hub, tmp_path, source_model, bundle_entry):
    hub.add(REPO, {"models/model.pt": _pt(source_model.state_dict()), "configs/inference.json": b"{}"})
    model = mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path).eval()
    x = torch.randn(1, 4, 32, 32, 32)
    assert_same_function(model, source_model, x)
    assert "MONAI/brats_mri_segmentation@main/models/model.pt" in str(model.load_report)
    assert model.pretrained_cfg.contract.in_channels == ("T1c", "T1", "T2", "FLAIR")
    assert list((tmp_path / "medseg_zoo" / "converted").glob("segresnet_brats-*.safetensors"))  # never unpickled again


def test_cache_then_offline_with_no_request(hub, tmp_path, source_model, bundle_entry, monkeypatch):
    hub.add(REPO, {"models/model.pt": _pt(source_model.state_dict())})
    mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)
    gets = [r for r in hub.requests if r[0] == "GET" and "resolve" in r[1]]
    assert len(gets) == 1
    mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)  # online: a HEAD, no new GET
    assert len([r for r in hub.requests if r[0] == "GET" and "resolve" in r[1]]) == 1
    hub.requests.clear()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)
    assert hub.requests == []
    assert model.load_report.source.startswith(REPO)
    hub.requests.clear()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path, local_files_only=True)
    assert hub.requests == []


def test_offline_without_cache(hub, tmp_path, bundle_entry, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match="not in the cache and offline mode is on"):
        mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)


def test_unreachable_hub_fails_in_seconds_with_one_message(hub, tmp_path, bundle_entry, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(WeightsError) as info:
        mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)
    message = str(info.value)
    assert "not in the cache and the Hub at 127.0.0.1:9 cannot be reached" in message
    assert "download it once on a machine with network access" in message and "medseg-zoo download" not in message


@pytest.mark.parametrize(
    ("files", "repo", "message"),
    [
        ({"models/model.pt": b"x"}, "other/repo", "the repository does not exist on the Hub"),
        ({"models/other.pt": b"x"}, REPO, "the repository has no file 'models/model.pt'"),
    ],
)
def test_missing_repo_and_file(hub, tmp_path, bundle_entry, files, repo, message):
    hub.add(repo, files)
    with pytest.raises(WeightsError, match=message):
        mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)


def test_missing_revision(hub, tmp_path, source_model, bundle_entry):
    hub.add(REPO, {"models/model.pt": _pt(source_model.state_dict())}, revision="v1")
    with pytest.raises(WeightsError, match="the repository has no revision 'main'"):
        mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)


def test_truncated_file_is_not_cached(hub, tmp_path, source_model, bundle_entry):
    data = _pt(source_model.state_dict())
    hub.add(REPO, {"models/model.pt": data[: len(data) // 2]})
    with pytest.raises(WeightsError, match=r"models/model\.pt: cannot read the checkpoint"):
        mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)
    assert not list((tmp_path / "hub").rglob("model.pt"))  # evicted: the next try downloads again
    hub.add(REPO, {"models/model.pt": data})
    mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)


def test_changed_file_after_first_verified_download_is_refused(hub, tmp_path, source_model, bundle_entry):
    hub.add(REPO, {"models/model.pt": _pt(source_model.state_dict())})
    mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)
    other = {k: v + 1 for k, v in source_model.state_dict().items()}
    hub.add(REPO, {"models/model.pt": _pt(other)})  # same name, other bytes
    with pytest.raises(WeightsError, match=r"expected .* \(recorded at the first verified download\)"):
        mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)


def test_pinned_hash_mismatch_is_refused(hub, tmp_path, source_model):
    cfg = get_config("segresnet_brats")
    register_model(cfg.replace(weights=cfg.weights[:1]), overwrite=True)  # the Hub source only: no real network
    try:
        hub.add(REPO, {"models/model.pt": _pt(source_model.state_dict())})  # not the bundle's real bytes
        with pytest.raises(WeightsError, match=r"md5 [0-9a-f]+, expected 870e677b782a5184cbc48db1456b78e8 \(publ"):
            mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)
        assert not list((tmp_path / "hub").rglob("model.pt"))
    finally:
        register_model(cfg, overwrite=True)


def test_pickle_with_code_is_refused(hub, tmp_path, source_model, bundle_entry):
    payload = {"model": source_model.state_dict(), "args": argparse.Namespace(lr=1)}  # needs a class to unpickle
    hub.add(REPO, {"models/model.pt": _pt(payload)})
    with pytest.raises(WeightsError, match="refusing to unpickle it"):
        mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)


def test_nested_training_checkpoint_is_unwrapped(hub, tmp_path, source_model, bundle_entry):
    hub.add(REPO, {"models/model.pt": _pt({"model": source_model.state_dict(), "epoch": 3})})
    model = mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)
    torch.testing.assert_close(model.state_dict()["convInit.conv.weight"], source_model.convInit.conv.weight)


def test_adaptation_for_fine_tuning(hub, tmp_path, source_model, bundle_entry, caplog):
    hub.add(REPO, {"models/model.pt": _pt(source_model.state_dict())})
    with caplog.at_level("INFO", logger="medseg_zoo"):
        model = mz.create_model(
            "segresnet_brats",
            pretrained=True,
            cache_dir=tmp_path,
            in_channels=["T1"],
            out_channels=["background", "lesion"],
        )
    report = model.load_report
    assert report.adapted == ["convInit.conv.weight"]
    assert report.reinitialized == ["conv_final.2.conv.weight", "conv_final.2.conv.bias"]
    assert "adapted to the input channels 1 (convInit.conv.weight)" in caplog.text
    w = model.state_dict()["convInit.conv.weight"]
    torch.testing.assert_close(w[:, 0], source_model.convInit.conv.weight.sum(1))  # 4 channels -> 1: their sum
    assert model(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


def test_unpublished_weights_name_the_recipe():
    with pytest.raises(mz.PretrainedUnavailableError, match="medseg-zoo train --model unet_brats --recipe unet_brats"):
        mz.create_model("unet_brats", pretrained=True)


def test_list_models_pretrained_lists_only_published():
    assert "segresnet_brats" in mz.list_models(pretrained=True)
    published = mz.list_models(pretrained=True)
    assert all(get_config(n).has_weights or get_config(n).members for n in published)
    assert len(published) >= 16 and all(get_config(n).license for n in published)


def test_spleen_bundle_predicts_on_the_input_grid(hub, tmp_path, monkeypatch):
    import nibabel as nib
    import numpy as np
    from monai.networks.nets import UNet

    cfg = get_config("unet_spleen")
    register_model(_without_md5(cfg), overwrite=True)
    try:
        source = UNet(3, 1, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")
        hub.add("MONAI/spleen_ct_segmentation", {"models/model.pt": _pt(source.eval().state_dict())})
        model = mz.create_model("unet_spleen", pretrained=True, cache_dir=tmp_path)
    finally:
        register_model(cfg, overwrite=True)
    ct = np.random.default_rng(0).normal(40, 100, size=(40, 36, 20)).astype(np.float32)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(ct, affine), tmp_path / "ct.nii.gz")
    seg = mz.predict(model, tmp_path / "ct.nii.gz", amp=False)
    assert seg.shape == ct.shape and np.array_equal(seg.affine, nib.load(tmp_path / "ct.nii.gz").affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}


def test_files_hosted_elsewhere(hub, tmp_path, source_model, monkeypatch):
    import hashlib

    data = _pt(source_model.state_dict())
    hub.files["model_brats.pt"] = data
    cfg = get_config("segresnet_brats")
    mirror = mz.WeightSource(
        repo_id="", url=f"{hub.url}/files/model_brats.pt", md5=hashlib.md5(data).hexdigest(), format="monai-bundle"
    )
    register_model(
        cfg.replace(weights=(*_without_md5(cfg).weights, mirror)),
        overwrite=True,
    )
    try:
        # the Hub repository is missing: the mirror is used, hash-checked, cached
        model = mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)
        assert model.load_report.source.startswith(f"{hub.url}/files/model_brats.pt")
        assert list((tmp_path / "medseg_zoo" / "downloads").rglob("model_brats.pt"))
        hub.requests.clear()
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)
        assert hub.requests == []
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

        register_model(cfg.replace(weights=(dataclasses.replace(mirror, md5="0" * 32),)), overwrite=True)
        with pytest.raises(WeightsError, match=r"md5 [0-9a-f]+, expected 0{32} \(published by the source\)"):
            mz.create_model("segresnet_brats", pretrained=True, cache_dir=tmp_path)
        assert not list((tmp_path / "medseg_zoo" / "downloads").rglob("model_brats.pt"))  # evicted
    finally:
        register_model(cfg, overwrite=True)


def test_research_contributions_unetr_from_a_url(hub, tmp_path):
    from monai.networks.nets import UNETR as MonaiUNETR

    small = {"hidden_size": 96, "mlp_dim": 192, "num_heads": 4, "feature_size": 8}
    source = MonaiUNETR(1, 14, (96, 96, 96), proj_type="perceptron", **small).eval()
    hub.files["UNETR_model_best_acc.pth"] = _pt({"epoch": 5000, "best_acc": 0.8, "state_dict": source.state_dict()})
    cfg = get_config("unetr_btcv")
    url = dataclasses.replace(cfg.weights[0], url=f"{hub.url}/files/UNETR_model_best_acc.pth")
    register_model(cfg.replace(weights=(url,), model_args={**cfg.model_args, **small}), overwrite=True)
    try:
        model = mz.create_model("unetr_btcv", pretrained=True, cache_dir=tmp_path).eval()
        # fine-tuning on 2-channel MRI, 3 regions, another roi: linear patch embedding adapted, position
        # embedding interpolated, head re-initialised
        tuned = mz.create_model(
            "unetr_btcv", pretrained=True, cache_dir=tmp_path, in_channels=2, out_channels=3, img_size=(64, 64, 32)
        )
    finally:
        register_model(cfg, overwrite=True)
    x = torch.randn(1, 1, 96, 96, 96)
    assert_same_function(model, source, x)
    assert model.pretrained_cfg.contract.out_channels[10] == "portal and splenic veins"
    report = tuned.load_report
    assert set(report.adapted) == {"stem.conv1.conv.weight", "stem.shortcut.conv.weight", "patch_embed.proj.weight"}
    assert report.interpolated == ["patch_embed.pos_embed"] and set(report.reinitialized) == {
        "head.weight",
        "head.bias",
    }
    old = source.state_dict()["vit.patch_embedding.patch_embeddings.1.weight"]  # (E, 16^3 * 1), (p1 p2 p3 c)
    new = tuned.state_dict()["patch_embed.proj.weight"]  # (E, 16^3 * 2)
    torch.testing.assert_close(new.view(96, -1, 2), (old / 2)[..., None].expand(-1, -1, 2))
    assert tuned(torch.randn(1, 2, 64, 64, 32)).shape == (1, 3, 64, 64, 32)


# --- pretrained starting points: encoder-only sources, licences, ensembles -------------------------------------


@pytest.fixture
def swin_ssl_tiny(hub):
    """swin_unetr_ssl at a tiny size, its encoder served in the released layout from the fake Hub's /files/."""
    from monai.networks.nets import SwinUNETR

    from tests.convert.test_pretraining_sources import TINY_SWIN, _perturbed, swin_ssl_file

    source = _perturbed(SwinUNETR(in_channels=1, out_channels=2, **TINY_SWIN))
    hub.files["model_swinvit.pt"] = _pt(swin_ssl_file(source))
    cfg = get_config("swin_unetr_ssl")
    url = dataclasses.replace(cfg.weights[0], url=f"{hub.url}/files/model_swinvit.pt")
    contract = dataclasses.replace(cfg.contract, roi_size=(64, 64, 64))  # Swin UNETR: 2 voxels at 1/32
    tiny = cfg.replace(name="swin_unetr_ssl_tiny", weights=(url,), model_args={**cfg.model_args, **TINY_SWIN},
                       contract=contract)  # fmt: skip
    register_model(tiny)
    yield source
    mz._registry._REGISTRY.pop("swin_unetr_ssl_tiny")


def test_an_encoder_only_source_loads_exactly_and_the_rest_starts_fresh(swin_ssl_tiny, tmp_path):
    model = mz.create_model("swin_unetr_ssl_tiny", pretrained=True, out_channels=["bg", "lesion"], cache_dir=tmp_path)
    report = model.load_report
    encoder = [k for k in swin_ssl_tiny.state_dict() if k.startswith("swinViT.") and "relative_position_index" not in k]
    assert sorted(report.loaded) == sorted(encoder)
    assert {k.split(".")[0] for k in report.reinitialized} == {"encoder1", "encoder2", "encoder3", "encoder4",
                                                                "encoder10", "decoder1", "decoder2", "decoder3",
                                                                "decoder4", "decoder5", "out"}  # fmt: skip
    for key in encoder:
        assert torch.equal(model.state_dict()[key], swin_ssl_tiny.state_dict()[key])
    assert "model_swinvit.pt" in str(report) and "re-initialised 33 (encoder1." in str(report)


def test_an_incomplete_encoder_is_refused_naming_the_keys(hub, swin_ssl_tiny, tmp_path):
    from tests.convert.test_pretraining_sources import swin_ssl_file

    file = swin_ssl_file(swin_ssl_tiny)
    del file["state_dict"]["module.layers4.0.blocks.0.mlp.fc2.weight"]
    hub.files["model_swinvit.pt"] = _pt(file)
    with pytest.raises(WeightsError, match=r"1 missing \(first: swinViT.layers4.0.blocks.0.mlp.linear2.weight\)"):
        mz.create_model("swin_unetr_ssl_tiny", pretrained=True, out_channels=2, cache_dir=tmp_path)


def test_a_starting_point_needs_the_tasks_outputs():
    with pytest.raises(mz.InvalidOverrideError, match=r"swin_unetr_ssl's weights are a starting point without a"):
        mz.create_model("swin_unetr_ssl", pretrained=True)


def test_an_ensemble_is_built_by_one_name():
    from tests.convert.test_pretraining_sources import TINY_SWIN

    with pytest.raises(mz.InvalidOverrideError, match=r"swin_unetr_brats21 is an ensemble of 5 models: create_ense"):
        mz.create_model("swin_unetr_brats21")
    members = mz.create_ensemble("swin_unetr_brats21", **TINY_SWIN)
    assert [m.pretrained_cfg.name for m in members] == [f"swin_unetr_brats21_fold{i}" for i in range(5)]
    assert "swin_unetr_brats21" in mz.list_models(pretrained=True)


def test_a_non_commercial_licence_is_said_on_first_download_and_derivatives_are_not_pushed(hub, tmp_path):
    tiny = {"blocks_down": (1, 1), "blocks_up": (1,), "init_filters": 8}
    source = SegResNet(in_channels=1, out_channels=25, **tiny)
    cfg = get_config("suprem_segresnet")
    hub.add(
        "MrGiovanni/SuPreM",
        {cfg.weights[0].filename: _pt({"net": {f"module.{k}": v for k, v in source.state_dict().items()}})},
    )
    register_model(cfg.replace(model_args={**cfg.model_args, **tiny}), overwrite=True)
    try:
        with pytest.warns(UserWarning, match=r"licensed CC BY-NC-ND 4.0 .*non-commercial use only"):
            model = mz.create_model("suprem_segresnet", pretrained=True, out_channels=3, cache_dir=tmp_path)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once: the second load says nothing
            mz.create_model("suprem_segresnet", pretrained=True, out_channels=3, cache_dir=tmp_path)
    finally:
        register_model(cfg, overwrite=True)
    folder = mz.save_pretrained(model, tmp_path / "tuned")
    with pytest.raises(mz.LicenseError, match=r"refusing to push suprem_segresnet .*CC BY-NC-ND 4.0"):
        mz.push_to_hub(mz.from_pretrained(folder), "me/tuned")
    assert hub.created == []


def test_the_licence_is_listed(capsys):
    from medseg_zoo.cli import main

    assert main(["list", "suprem_*", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "licence" in out.splitlines()[0] and out.count("CC BY-NC-ND 4.0") == 3


def test_train_from_a_pretrained_encoder_end_to_end(swin_ssl_tiny, tiny_data, tmp_path, monkeypatch, capsys):
    from medseg_zoo.cli import main

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    run = tmp_path / "run"
    argv = ["train", "--model", "swin_unetr_ssl_tiny", "--pretrained", "--data", str(tiny_data), "--output", str(run)]
    assert main([*argv, "--epochs", "2", "--val-every", "1", "--freeze-encoder-epochs", "1", "--no-progress"]) == 0
    import json

    run_config = json.loads((run / "config.json").read_text())
    assert (
        run_config["model"]["pretrained"]
        and "decoder1.conv_block.conv1.conv.weight" in run_config["model"]["reinitialized"]
    )
    tuned = mz.from_pretrained(run / "last")
    assert tuned.pretrained_cfg.contract.in_channels == ("FLAIR", "T1w", "T1gd", "T2w")  # the data's channels
