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


def test_from_pretrained_for_a_new_task_replaces_the_head_and_keeps_the_rest(tmp_path):
    """A trained model as the start of another task: other outputs re-initialise the head, other input channels
    adapt the stem, the roi, spacing and normalisation stay the checkpoint's; the load report says so."""
    torch.manual_seed(0)
    model = mz.create_model("resenc_l_openmind", in_channels=["T1", "T2"], out_channels=2, roi_size=32,
                            features=(4, 8), strides=(1, 2), blocks=(1, 1))  # fmt: skip
    folder = mz.save_pretrained(model, tmp_path / "start")
    scheme = mz.transforms.LabelScheme("organs", "test", {0: "background", 1: "liver", 2: "spleen"})
    new = mz.from_pretrained(folder, in_channels=["CT"], label_scheme=scheme)
    contract = new.pretrained_cfg.contract
    assert contract.out_channels == ("background", "liver", "spleen") and contract.in_channels == ("CT",)
    assert contract.roi_size == (32, 32, 32) and contract.spacing == model.pretrained_cfg.contract.spacing
    report = new.load_report
    assert report.reinitialized == ["head.weight", "head.bias"] and report.adapted == ["stem.conv.weight"]
    assert report.sha256 and "re-initialised 2 (head.weight, head.bias)" in str(report)
    old = model.state_dict()
    kept = [k for k in report.loaded]
    assert kept and all(torch.equal(new.state_dict()[k], old[k]) for k in kept)
    torch.testing.assert_close(new.state_dict()["stem.conv.weight"], old["stem.conv.weight"].sum(1, keepdim=True))
    same = mz.from_pretrained(folder, out_channels=2)  # the same outputs: nothing re-initialised
    assert same.load_report.reinitialized == [] and same.pretrained_cfg.contract == model.pretrained_cfg.contract
