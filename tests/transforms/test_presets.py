import dataclasses
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

import medseg_zoo as mz
from medseg_zoo.data import discover
from medseg_zoo.transforms import (
    cached_dataset,
    inference_transforms,
    preprocessing_key,
    training_transforms,
    validation_transforms,
)

CONTRACT = mz.TaskContract(
    in_channels=("FLAIR", "T1w", "T1gd", "T2w"),
    out_channels=("TC", "WT", "ET"),
    activation="sigmoid",
    roi_size=(32, 32, 16),
    spacing=(1.5, 1.5, 2.0),
    orientation="RAS",
    label_scheme="msd_task01",
)


@pytest.fixture
def psr_case(tmp_path):
    """A 4-channel case stored P-S-R with anisotropic spacing (1.0, 2.0, 1.2) mm, and its label."""
    shape = (30, 20, 25)
    affine = np.array([[0, 0, 1.2, -10], [-1.0, 0, 0, 20], [0, 2.0, 0, -15], [0, 0, 0, 1]])
    assert nib.aff2axcodes(affine) == ("P", "S", "R")
    rng = np.random.default_rng(0)
    image = rng.uniform(1, 100, size=(*shape, 4)).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[10:20, 5:15, 8:18] = 1
    label[12:18, 7:13, 10:16] = 2
    label[14:16, 9:11, 12:14] = 3
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "label.nii.gz")
    return {"image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nii.gz")}


def test_inference_preprocessing_reorients_and_resamples(psr_case):
    out = inference_transforms(CONTRACT)({"image": psr_case["image"]})
    image = out["image"]
    assert nib.aff2axcodes(image.affine.numpy()) == ("R", "A", "S")
    np.testing.assert_allclose(image.pixdim.numpy(), (1.5, 1.5, 2.0))
    # extents: R 25 * 1.2 = 30 mm, A 30 * 1.0 = 30 mm, S 20 * 2.0 = 40 mm
    assert tuple(image.shape) == (4, 20, 20, 20)
    brain = image[0] != 0
    assert abs(image[0][brain].mean().item()) < 1e-3  # z-scored over non-zero voxels


def test_inference_preprocessing_is_invertible(psr_case):
    transform = inference_transforms(CONTRACT)
    out = transform({"image": psr_case["image"]})
    back = transform.inverse(out)["image"]
    source = nib.load(psr_case["image"])
    assert tuple(back.shape[1:]) == source.shape[:3]
    np.testing.assert_allclose(back.affine.numpy(), source.affine, atol=1e-4)


def test_training_pipeline_gives_roi_crops_of_regions(psr_case):
    out = training_transforms(CONTRACT)(psr_case)
    assert out["image"].shape == (4, 32, 32, 16)
    assert out["label"].shape == (3, 32, 32, 16) and out["label"].dtype == torch.uint8
    tc, wt, et = out["label"].bool()
    assert (wt | ~tc).all() and (tc | ~et).all()  # ET in TC in WT


def test_validation_pipeline_centre_crop(psr_case):
    out = validation_transforms(CONTRACT)(psr_case)
    assert out["image"].shape == (4, 32, 32, 16) and out["label"].shape == (3, 32, 32, 16)


def test_data_scheme_other_than_the_contract(tmp_path, psr_case):
    # BraTS 2021 labels (1, 2, 4) feed the same TC/WT/ET outputs.
    img = nib.load(psr_case["label"])
    data = np.asanyarray(img.dataobj)
    brats = np.select([data == 1, data == 2, data == 3], [2, 1, 4], 0).astype(np.uint8)  # edema, NCR, ET
    nib.save(nib.Nifti1Image(brats, img.affine), tmp_path / "brats.nii.gz")
    case = {"image": psr_case["image"], "label": str(tmp_path / "brats.nii.gz")}
    a = validation_transforms(CONTRACT)(psr_case)["label"]
    b = validation_transforms(CONTRACT, label_scheme="brats2021")(case)["label"]
    torch.testing.assert_close(a, b)


def test_a_contract_whose_scheme_contradicts_its_outputs_is_refused_when_made():
    with pytest.raises(
        ValueError, match=r"'msd_task01' needs sigmoid regions TC, WT, ET; the contract has sigmoid outputs WT"
    ):
        dataclasses.replace(CONTRACT, out_channels=("WT", "TC", "ET"))


@pytest.mark.parametrize("build", [training_transforms, validation_transforms])
def test_data_labels_must_give_the_model_outputs(build):
    with pytest.raises(ValueError, match=r"labels do not give the model's outputs: label scheme 'btcv' needs softmax"):
        build(CONTRACT, label_scheme="btcv")


def test_unknown_normalization_is_refused_when_the_contract_is_made():
    with pytest.raises(ValueError, match="normalization 'minmax' is not supported; expected one of zscore_nonzero"):
        dataclasses.replace(CONTRACT, normalization="minmax")


def test_pipelines_read_the_contract_from_the_model():
    model = mz.create_model("unet_brats", channels=(4, 8), strides=(2,), num_res_units=1)
    assert isinstance(inference_transforms(model).transforms[-1], type(inference_transforms(CONTRACT).transforms[-1]))
    with pytest.raises(TypeError, match=r"expected a TaskContract or a model from medseg_zoo\.create_model"):
        inference_transforms(torch.nn.Linear(1, 1))


def test_preprocessing_key_follows_the_contract():
    key = preprocessing_key(CONTRACT)
    assert key == preprocessing_key(CONTRACT)
    assert key != preprocessing_key(dataclasses.replace(CONTRACT, spacing=(1.0, 1.0, 1.0)))
    assert key != preprocessing_key(CONTRACT, label_scheme="brats2021")
    assert key == preprocessing_key(dataclasses.replace(CONTRACT, roi_size=(64, 64, 64)))  # crop is not cached


def test_persistent_cache_is_keyed(msd_dataset, tmp_path):
    data = [c.to_dict() for c in discover(msd_dataset).cases[:2]]
    transform = validation_transforms(CONTRACT)
    with pytest.raises(ValueError, match="cache_dir needs key=preprocessing_key"):
        cached_dataset(data, transform, cache_dir=tmp_path)
    key = preprocessing_key(CONTRACT)
    cached = cached_dataset(data, transform, cache_dir=tmp_path, key=key)
    first = cached[0]
    assert list((tmp_path / key).glob("*.pt"))  # the deterministic prefix is on disk
    np.testing.assert_array_equal(np.asarray(cached[0]["image"]), np.asarray(first["image"]))
    plain = cached_dataset(data, transform, in_memory=False)[0]
    np.testing.assert_array_equal(np.asarray(plain["image"]), np.asarray(first["image"]))


def test_a_corrected_file_is_preprocessed_again(msd_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(msd_dataset, root)
    data = [c.to_dict() for c in discover(root).cases[:1]]
    transform, key = validation_transforms(CONTRACT), preprocessing_key(CONTRACT)
    before = cached_dataset(data, transform, cache_dir=tmp_path / "cache", key=key)[0]["label"]
    path = root / "labelsTr" / "BRATS_000.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, dtype=np.uint8), img.affine), path)  # the label is corrected
    after = cached_dataset(data, transform, cache_dir=tmp_path / "cache", key=key)[0]["label"]
    assert before.sum() > 0 and after.sum() == 0


def test_ct_window_normalization(tmp_path):
    contract = dataclasses.replace(
        CONTRACT, in_channels=("CT",), normalization="clip_scale:-57:164", spacing=None, label_scheme=None
    )
    ct = np.array([-1000, -57, 53.5, 164, 3000], dtype=np.float32).reshape(5, 1, 1)
    nib.save(nib.Nifti1Image(ct, np.eye(4)), tmp_path / "ct.nii.gz")
    out = inference_transforms(contract)({"image": str(tmp_path / "ct.nii.gz")})["image"]
    np.testing.assert_allclose(out.numpy().ravel(), [0, 0, 0.5, 1, 1], atol=1e-6)
    with pytest.raises(ValueError, match=r"normalization 'clip_scale:-57' is not supported; expected one of"):
        dataclasses.replace(contract, normalization="clip_scale:-57")


def test_nnunet_ct_normalization_clips_then_zscores_with_the_data_sets_statistics(tmp_path):
    contract = dataclasses.replace(
        CONTRACT, in_channels=("CT",), normalization="clip_zscore:-100:300:50:40", spacing=None, label_scheme=None
    )
    ct = np.array([-1000, -100, 50, 90, 300, 3000], dtype=np.float32).reshape(6, 1, 1)
    nib.save(nib.Nifti1Image(ct, np.eye(4)), tmp_path / "ct.nii.gz")
    out = inference_transforms(contract)({"image": str(tmp_path / "ct.nii.gz")})["image"]
    expected = (np.clip(ct.ravel().astype(np.float64), -100, 300) - 50) / 40  # nnU-Net's CTNormalization
    np.testing.assert_allclose(out.numpy().ravel(), expected, atol=1e-5)
    for bad in ("clip_zscore:-100:300", "clip_zscore:-100:300:50:0", "clip_scale:-1:1:0:1"):
        with pytest.raises(ValueError, match="is not supported"):
            dataclasses.replace(contract, normalization=bad)


def test_zscore_then_rescale_normalization(tmp_path):
    contract = dataclasses.replace(
        CONTRACT, in_channels=("CT",), normalization="zscore_nonzero_rescale:-1:1", spacing=None, label_scheme=None
    )
    ct = np.random.default_rng(0).normal(100, 300, size=(6, 5, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(ct, np.eye(4)), tmp_path / "ct.nii.gz")
    out = inference_transforms(contract)({"image": str(tmp_path / "ct.nii.gz")})["image"]
    assert out.min().item() == pytest.approx(-1) and out.max().item() == pytest.approx(1)
