import json

import pytest
import torch

import medseg_zoo as mz
from medseg_zoo.hub import CheckpointError
from tests.conftest import build_tiny, single_models


def _tiny(name):
    return build_tiny(name).eval()


@pytest.mark.parametrize("name", single_models())
def test_round_trip(name, tmp_path):
    model = _tiny(name)
    folder = mz.save_pretrained(model, tmp_path / name)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = mz.from_pretrained(folder)
    assert loaded.pretrained_cfg.contract == model.pretrained_cfg.contract
    assert loaded.pretrained_cfg.model_args == model.pretrained_cfg.model_args
    x = torch.randn(1, len(model.pretrained_cfg.contract.in_channels), 64, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_model_card_states_the_contract(tmp_path):
    folder = mz.save_pretrained(_tiny("unetr_brats"), tmp_path)
    card = (folder / "README.md").read_text()
    assert "Inputs, in order: FLAIR, T1w, T1gd, T2w" in card and "Outputs: TC, WT, ET (sigmoid)" in card
    assert "Label scheme: msd_task01" in card and "license: apache-2.0" in card


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json: not found; a checkpoint folder holds"):
        mz.from_pretrained(tmp_path)


def test_weights_that_do_not_fit(tmp_path):
    folder = mz.save_pretrained(_tiny("unetr_brats"), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["feature_size"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"(?s)model\.safetensors: weights do not fit unetr_brats .*size mismatch"
    ):
        mz.from_pretrained(folder)


def test_truncated_weights(tmp_path):
    folder = mz.save_pretrained(_tiny("unet_brats"), tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot read the weights"):
        mz.from_pretrained(folder)


def test_malformed_config(tmp_path):
    folder = mz.save_pretrained(_tiny("unet_brats"), tmp_path)
    (folder / "config.json").write_text('{"name": "unet_brats"}')
    with pytest.raises(CheckpointError, match=r"config\.json: not a medseg-zoo config \(KeyError"):
        mz.from_pretrained(folder)


def test_only_zoo_models_can_be_saved(tmp_path):
    with pytest.raises(TypeError, match=r"expected a model from medseg_zoo\.create_model, got Linear"):
        mz.save_pretrained(torch.nn.Linear(1, 1), tmp_path)


def test_from_the_hub(hub, tmp_path):
    model = _tiny("unetr_brats")
    folder = mz.save_pretrained(model, tmp_path / "ckpt")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    hub.add("org/unetr-test", files, revision="main")
    hub.add("org/unetr-test", files, revision="v1")
    for spec in ("hf-hub:org/unetr-test", "hf-hub:org/unetr-test@v1"):
        loaded = mz.from_pretrained(spec, cache_dir=tmp_path / "cache")
        torch.testing.assert_close(loaded.state_dict()["head.weight"], model.state_dict()["head.weight"])
    with pytest.raises(CheckpointError, match=r"hf-hub:org/missing: .*the repository does not exist"):
        mz.from_pretrained("hf-hub:org/missing", cache_dir=tmp_path / "cache")


def test_push_to_hub_uploads_a_loadable_folder(hub, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    uploaded = {}

    def upload_folder(self, *, repo_id, folder_path, **kwargs):  # the upload call itself, and nothing else
        uploaded.update({p.name: p.read_bytes() for p in __import__("pathlib").Path(folder_path).iterdir()})
        return type("CommitInfo", (), {"commit_url": f"{hub.url}/{repo_id}/commit/abc"})()

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    model = _tiny("unet_brats")
    url = mz.push_to_hub(model, "org/pushed", token="test-token")
    assert url.endswith("/org/pushed/commit/abc")
    assert hub.created == ["org/pushed"]  # the repository was created through the Hub API
    assert sorted(uploaded) == ["README.md", "config.json", "model.safetensors"]
    hub.add("org/pushed", uploaded)
    loaded = mz.from_pretrained("hf-hub:org/pushed", cache_dir=tmp_path)
    assert loaded.pretrained_cfg.contract == model.pretrained_cfg.contract
