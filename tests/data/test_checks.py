import dataclasses
import gzip
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from medseg_zoo.data import DataCheckError, check_dataset, discover
from medseg_zoo.models.unetr import BRATS_MSD_CONTRACT


def test_clean_data_set_passes(msd_dataset):
    report = check_dataset(discover(msd_dataset), BRATS_MSD_CONTRACT)
    assert report.ok and not report.problems
    assert "no problems found" in str(report)
    report.raise_for_errors()


@pytest.fixture
def broken(msd_dataset, tmp_path):
    """The synthetic data set with one problem per case, plus extra cases."""
    root = tmp_path / "broken"
    shutil.copytree(msd_dataset, root)
    images, labels = root / "imagesTr", root / "labelsTr"
    meta = json.loads((root / "dataset.json").read_text())
    extra = {
        "BRATS_004": "truncated",
        "BRATS_005": "empty label",
        "BRATS_006": "3-D image",
        "BRATS_007": "missing label file",
    }
    for name in extra:
        shutil.copy(images / "BRATS_000.nii.gz", images / f"{name}.nii.gz")
        shutil.copy(labels / "BRATS_000.nii.gz", labels / f"{name}.nii.gz")
        meta["training"].append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})

    def rewrite(path, fn, dtype=None, affine=None):
        img = nib.load(path)
        data = fn(np.asanyarray(img.dataobj).copy())
        nib.save(nib.Nifti1Image(data.astype(dtype or data.dtype), img.affine if affine is None else affine), path)

    rewrite(labels / "BRATS_000.nii.gz", lambda d: np.where(d == 3, 5, d).astype(np.uint8))  # value outside scheme
    shifted = nib.load(labels / "BRATS_001.nii.gz").affine.copy()
    shifted[0, 3] += 2.0
    rewrite(labels / "BRATS_001.nii.gz", lambda d: d, affine=shifted)  # label on another grid

    def nan(d):
        d = d.astype(np.float32)
        d[0, 0, 0, 1] = np.nan
        return d

    rewrite(images / "BRATS_002.nii.gz", nan)
    rewrite(labels / "BRATS_003.nii.gz", lambda d: d[:, :, :-2])  # shape mismatch

    raw = gzip.decompress((images / "BRATS_004.nii.gz").read_bytes())
    (images / "BRATS_004.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    rewrite(labels / "BRATS_005.nii.gz", np.zeros_like)
    rewrite(images / "BRATS_006.nii.gz", lambda d: d[..., 0])
    (labels / "BRATS_007.nii.gz").unlink()
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_every_problem_is_reported(broken):
    report = check_dataset(discover(broken), dataclasses.replace(BRATS_MSD_CONTRACT, in_channels=("a", "b", "c")))
    text = str(report)
    expected = [
        "error: (data set): the data has 4 channel(s) (FLAIR, T1w, T1gd, T2w), the model reads 3 (a, b, c)",
        "BRATS_000.nii.gz: label values [5] are not in scheme 'msd_task01'",
        "BRATS_001.nii.gz: label affine differs from the image's (max difference 2 mm)",
        "BRATS_002.nii.gz: 1 NaN/inf voxel(s)",
        "BRATS_003.nii.gz: label shape (32, 32, 30) differs from image shape (32, 32, 32)",
        "BRATS_004.nii.gz: cannot read the image",
        "warning: BRATS_005: ",
        "label map is empty (background only)",
        "BRATS_006.nii.gz: image shape (32, 32, 32) has 1 channel(s), expected 4 (FLAIR, T1w, T1gd, T2w)",
        "BRATS_007.nii.gz: file not found",
    ]
    for line in expected:
        assert line in text, f"missing {line!r} in\n{text}"
    assert not report.ok
    assert len({p.case for p in report.errors}) == 8  # the data set, and every broken case but the empty one
    with pytest.raises(DataCheckError, match=r"8 error\(s\) in 8 case\(s\), 1 warning\(s\)"):
        report.raise_for_errors()


def test_per_channel_files_must_agree(msd_dataset, tmp_path):
    from tests.data.test_discovery import _to_nnunet

    root = _to_nnunet(msd_dataset, tmp_path / "nn")
    path = root / "imagesTr" / "BRATS_000_0002.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:-1], img.affine), path)
    (root / "imagesTr" / "BRATS_001_0003.nii.gz").unlink()
    text = str(check_dataset(discover(root)))
    assert "BRATS_000_0002.nii.gz: channel file shape (31, 32, 32), expected 3-D (32, 32, 32)" in text
    assert "BRATS_001_0003.nii.gz: file not found" in text


def test_a_label_file_no_case_uses_is_a_warning(msd_dataset, tmp_path):
    root = tmp_path / "pairs"
    shutil.copytree(msd_dataset / "imagesTr", root / "images")
    shutil.copytree(msd_dataset / "labelsTr", root / "labels")
    (root / "images" / "BRATS_001.nii.gz").rename(root / "images" / "BRATS_01.nii.gz")  # misnamed: two orphans
    dataset = discover(root, label_scheme="msd_task01")
    assert dataset.unused_labels == (root / "labels" / "BRATS_001.nii.gz",)
    report = check_dataset(dataclasses.replace(dataset, cases=dataset.cases[:1]))  # a subset keeps the folder's
    assert [str(p) for p in report.problems if "no case uses" in p.message] == [
        f"warning: (data set): {root / 'labels' / 'BRATS_001.nii.gz'}: a label file no case uses (no image of that "
        "name?); it is left out"
    ]
