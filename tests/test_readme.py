"""The README's Python runs as written: pretrained weights from the fake Hub (a generated bundle of the same
layout), a synthetic case, a small lesion data set; training shortened to one epoch."""

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import SegResNet

import medseg_zoo as mz
from medseg_zoo._registry import get_config, register_model
from medseg_zoo.data.synthetic import make_case
from tests.test_pretrained import REPO, _pt, _without_md5

README = Path(__file__).parents[1] / "README.md"


def _one_epoch(**settings):
    """TrainConfig as the pages call it, shortened to one epoch whatever they ask for."""
    return mz.training.TrainConfig(**{**settings, "epochs": 1, "progress": False})


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def _lesion_data(root: Path) -> None:
    """An MSD-layout data set of one T1 channel and background/lesion labels."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(4):
        image, label, affine = make_case((32, 32, 32), seed=i)
        nib.save(nib.Nifti1Image(image[..., 1], affine), root / "imagesTr" / f"les_{i}.nii.gz")
        nib.save(nib.Nifti1Image((label > 0).astype(np.uint8), affine), root / "labelsTr" / f"les_{i}.nii.gz")
        training.append({"image": f"./imagesTr/les_{i}.nii.gz", "label": f"./labelsTr/les_{i}.nii.gz"})
    meta = {"modality": {"0": "T1"}, "labels": {"0": "background", "1": "lesion"}, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))


@pytest.fixture
def readme_world(hub, tmp_path, monkeypatch):
    torch.manual_seed(0)
    bundle = SegResNet(blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=16, in_channels=4, out_channels=3)
    hub.add(REPO, {"models/model.pt": _pt(bundle.state_dict()), "configs/inference.json": b"{}"})
    cfg = get_config("segresnet_brats")
    register_model(_without_md5(cfg), overwrite=True)  # the generated file cannot have the real bundle's md5
    monkeypatch.chdir(tmp_path)
    image, _, affine = make_case((32, 32, 32), seed=9)
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "case_0001.nii.gz")
    _lesion_data(tmp_path / "MyLesions")
    monkeypatch.setattr(mz, "TrainConfig", _one_epoch)
    yield tmp_path
    register_model(cfg, overwrite=True)


def test_readme_python_runs(readme_world):
    (block,) = python_blocks(README)
    exec(compile(block, str(README), "exec"), {})
    seg = nib.load(readme_world / "seg.nii.gz")
    case = nib.load(readme_world / "case_0001.nii.gz")
    assert seg.shape == case.shape[:3] and np.allclose(seg.affine, case.affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 4}  # BraTS 2018 values
    best = mz.from_pretrained(readme_world / "runs" / "lesions" / "best")
    contract = best.pretrained_cfg.contract
    assert contract.in_channels == ("T1",) and contract.out_channels == ("background", "lesion")
    assert contract.activation == "softmax" and contract.scheme.labels == {0: "background", 1: "lesion"}


DOCS = Path(__file__).parents[1] / "docs"
# The pages whose Python runs, in the order a newcomer reads them.
PAGES = [
    "index.md",
    "quickstart.md",
    "data-preparation.md",
    "fine-tuning.md",
    "adding-a-model.md",
    "api/data.md",
    "api/training.md",
    "api/inference.md",
    "api/dicom.md",
    "api/export.md",
    "api/hub.md",
    "api/models.md",
]


def test_every_page_with_python_is_run():
    with_python = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if python_blocks(p)}
    assert with_python - {"examples.md", "api/layers.md"} <= set(PAGES)  # those two include examples/, run apart


@pytest.fixture
def docs_world(hub, tmp_path, monkeypatch):
    """What the pages refer to: a synthetic Task01 folder, a case as one 4-D file and as channel files, imagesTs;
    segresnet_brats and swin_unetr_ssl served by the fake Hub (the latter at a tiny size, with a smaller roi)."""
    import dataclasses

    from monai.networks.nets import SwinUNETR

    from medseg_zoo.data import make_dataset
    from tests.convert.test_pretraining_sources import TINY_SWIN, swin_ssl_file
    from tests.inference.dicom_series import write_series

    torch.manual_seed(0)
    bundle = SegResNet(blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=16, in_channels=4, out_channels=3)
    hub.add(REPO, {"models/model.pt": _pt(bundle.state_dict()), "configs/inference.json": b"{}"})
    brats, ssl = get_config("segresnet_brats"), get_config("swin_unetr_ssl")
    small = _without_md5(brats)
    register_model(small.replace(contract=dataclasses.replace(small.contract, roi_size=(64, 64, 64))), overwrite=True)
    hub.files["model_swinvit.pt"] = _pt(swin_ssl_file(SwinUNETR(in_channels=1, out_channels=2, **TINY_SWIN)))
    url = dataclasses.replace(ssl.weights[0], url=f"{hub.url}/files/model_swinvit.pt")
    register_model(ssl.replace(weights=(url,), model_args={**ssl.model_args, **TINY_SWIN}), overwrite=True)
    monkeypatch.chdir(tmp_path)
    make_dataset("Task01_BrainTumour", n_cases=5, shape=(40, 40, 32), seed=4)
    image, _, affine = make_case((40, 40, 32), seed=11)
    nib.save(nib.Nifti1Image(image, affine), "case_0001.nii.gz")
    for name, channel in zip(("f", "t1", "t1c", "t2"), range(4), strict=True):
        nib.save(nib.Nifti1Image(image[..., channel], affine), f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(image[..., 0], affine), "flair.nii.gz")
    for channel, name in enumerate(("FLAIR", "T1w", "T1gd", "T2w")):  # the case as a DICOM series per channel
        write_series(Path("dicom/case_0001") / name, image[..., channel].astype(np.float32), affine, study_uid="1.2.3")
    Path("imagesTs").mkdir()
    for i in range(2):
        nib.save(nib.Nifti1Image(make_case((32, 32, 32), seed=20 + i)[0], affine), f"imagesTs/case_{i}.nii.gz")
    monkeypatch.setattr(mz, "TrainConfig", _one_epoch)  # the pages' models at full size, one epoch on small volumes
    yield tmp_path
    register_model(brats, overwrite=True)
    register_model(ssl, overwrite=True)
    for name in ("unetr_liver", "tinynet_spleen"):  # registered by the pages
        mz._registry._REGISTRY.pop(name, None)


def test_docs_python_runs_in_reading_order(docs_world):
    for page in PAGES:
        namespace: dict = {}  # a page's blocks continue one another, as a reader runs them
        for block in python_blocks(DOCS / page):
            exec(compile(block, str(DOCS / page), "exec"), namespace)
    assert sorted(p.name for p in (docs_world / "predictions").iterdir()) == ["case_0.nii.gz", "case_1.nii.gz"]
    assert (docs_world / "runs" / "unet" / "best" / "model.safetensors").is_file()
    assert mz.model_info("unetr_liver")["contract"]["normalization"] == "clip_scale:-175:250"
