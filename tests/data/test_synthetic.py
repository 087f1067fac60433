import json

import nibabel as nib
import numpy as np

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
