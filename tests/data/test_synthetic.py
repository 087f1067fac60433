import json

import nibabel as nib
import numpy as np
import pytest

from medseg_zoo.data.discovery import DataSetError
from medseg_zoo.data.synthetic import MODALITIES, make_case, make_dataset


def test_case_has_nested_regions_and_contrasts():
    image, label, _ = make_case((48, 48, 48), seed=1)
    assert image.shape == (48, 48, 48, 4) and image.dtype == np.int16
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1, 2, 3}
    brain = image[..., 0] > 0
    assert (label[~brain] == 0).all()  # tumour inside the brain, zero background
    mean = {lab: image[label == lab].mean(axis=0) for lab in (1, 2, 3)}
    flair, t1, t1gd = 0, 1, 2
    assert mean[1][flair] > mean[2][flair]  # edema bright on FLAIR
    assert mean[3][t1gd] > mean[3][t1] * 1.5  # the rim enhances with gadolinium
    assert mean[3][t1gd] > mean[2][t1gd]  # necrotic core does not


def test_same_seed_same_case_other_seed_other_grid():
    a = make_case((24, 24, 24), seed=5)
    b = make_case((24, 24, 24), seed=5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    orientations = {nib.aff2axcodes(make_case((16, 16, 16), seed=s)[2]) for s in range(12)}
    assert len(orientations) > 2 and ("R", "A", "S") in orientations  # RAS and others


def test_make_dataset_writes_msd_layout(tmp_path):
    root = make_dataset(tmp_path / "ds", n_cases=2, shape=(24, 24, 16), seed=0)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and list(meta["modality"].values()) == list(MODALITIES)
    image = nib.load(root / "imagesTr" / "BRATS_000.nii.gz")
    label = nib.load(root / "labelsTr" / "BRATS_000.nii.gz")
    assert image.shape == (24, 24, 16, 4) and label.shape == (24, 24, 16)
    np.testing.assert_array_equal(image.affine, label.affine)
    assert not list(root.rglob("*.tmp*"))  # atomic writes leave nothing behind


def test_make_dataset_completes_an_interrupted_run(tmp_path):
    root = make_dataset(tmp_path / "ds", n_cases=2, shape=(16, 16, 16), seed=0)
    first = (root / "imagesTr" / "BRATS_000.nii.gz").stat().st_mtime_ns
    (root / "labelsTr" / "BRATS_001.nii.gz").unlink()  # as if stopped half-way
    make_dataset(root, n_cases=2, shape=(16, 16, 16), seed=0)
    assert (root / "labelsTr" / "BRATS_001.nii.gz").exists()
    assert (root / "imagesTr" / "BRATS_000.nii.gz").stat().st_mtime_ns == first  # kept, not rewritten


def test_other_scanner_differs_in_grid_contrast_and_scale():
    image, label, affine = make_case((32, 32, 12), seed=3, domain="other_scanner")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(spacing, (1.0, 1.0, 3.0))  # thick slices
    assert nib.aff2axcodes(affine) in {("L", "P", "I"), ("A", "I", "L"), ("S", "R", "A")}
    default, _, _ = make_case((32, 32, 12), seed=3)
    brain = image[..., 0] > 0
    assert image[brain].mean() > 2.5 * default[default[..., 0] > 0].mean()  # another intensity scale
    assert set(np.unique(label)) <= {0, 1, 2, 3} and (label > 0).any()  # the same regions


def test_anatomy_task_labels_white_matter_and_ventricles(tmp_path):
    image, label, _ = make_case((48, 48, 48), seed=1, task="anatomy")
    tumour_image, tumour, _ = make_case((48, 48, 48), seed=1)
    np.testing.assert_array_equal(image, tumour_image)  # the same images, other labels
    assert set(np.unique(label)) == {0, 1, 2}
    assert (label[tumour > 0] == 0).all()
    t1 = 1
    assert image[label == 1][:, t1].mean() > image[label == 2][:, t1].mean()  # white matter bright on T1w
    root = make_dataset(tmp_path / "anatomy", n_cases=1, shape=(16, 16, 16), task="anatomy")
    assert json.loads((root / "dataset.json").read_text())["labels"] == {
        "0": "background",
        "1": "white matter",
        "2": "ventricles",
    }


def test_variant_names_are_checked_and_a_folder_keeps_its_variant(tmp_path):
    with pytest.raises(ValueError, match="domain must be one of 'brats', 'other_scanner', got 'mri'"):
        make_case((16, 16, 16), domain="mri")
    make_dataset(tmp_path / "ds", n_cases=1, shape=(16, 16, 16), task="anatomy")
    with pytest.raises(DataSetError, match=r"domain brats, task anatomy; asked for .* task tumour"):
        make_dataset(tmp_path / "ds", n_cases=1, shape=(16, 16, 16))
