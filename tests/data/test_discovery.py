import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from medseg_zoo.data import DataSetError, discover
from medseg_zoo.transforms import get_scheme


def test_msd(msd_dataset):
    ds = discover(msd_dataset)
    assert ds.layout == "msd"
    assert ds.channels == ("FLAIR", "T1w", "T1gd", "T2w")
    assert ds.scheme is get_scheme("msd_task01")  # recognised from the label names
    assert [c.name for c in ds.cases] == ["BRATS_000", "BRATS_001", "BRATS_002", "BRATS_003"]
    assert ds.cases[0].to_dict()["image"].endswith("imagesTr/BRATS_000.nii.gz")


def test_explicit_scheme_wins(msd_dataset):
    assert discover(msd_dataset, label_scheme="monai_tutorial").scheme.name == "monai_tutorial"


def _to_nnunet(msd, root):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for path in sorted((msd / "imagesTr").iterdir()):
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
        case = path.name.removesuffix(".nii.gz")
        for c in range(data.shape[3]):
            nib.save(nib.Nifti1Image(data[..., c], img.affine), root / "imagesTr" / f"{case}_{c:04d}.nii.gz")
        shutil.copy(msd / "labelsTr" / path.name, root / "labelsTr" / path.name)
    meta = {
        "channel_names": {"0": "FLAIR", "1": "T1w", "2": "T1gd", "3": "T2w"},
        "labels": {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3},
        "numTraining": 4,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nnunet_v2(msd_dataset, tmp_path):
    ds = discover(_to_nnunet(msd_dataset, tmp_path / "Dataset001_BraTS"))
    assert ds.layout == "nnunet"
    assert ds.channels == ("FLAIR", "T1w", "T1gd", "T2w")
    assert ds.scheme.name == "msd_task01"
    case = ds.cases[0]
    assert [p.name for p in case.images] == [f"BRATS_000_{c:04d}.nii.gz" for c in range(4)]
    assert case.label.name == "BRATS_000.nii.gz"


def test_nnunet_other_labels_become_exclusive_classes(tmp_path):
    root = tmp_path / "Dataset002_Liver"
    (root / "imagesTr").mkdir(parents=True)
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = discover(root)
    assert ds.scheme.exclusive and ds.scheme.channels == ("background", "liver")


def test_pairs(msd_dataset, tmp_path):
    root = tmp_path / "pairs"
    shutil.copytree(msd_dataset / "imagesTr", root / "images")
    shutil.copytree(msd_dataset / "labelsTr", root / "labels")
    with pytest.raises(DataSetError, match=r"saying what its labels mean; pass label_scheme .*--labels background"):
        discover(root)
    ds = discover(root, label_scheme="msd_task01")
    assert ds.layout == "pairs" and len(ds.cases) == 4
    assert ds.channels == ("channel_0", "channel_1", "channel_2", "channel_3")  # counted from the 4-D header
    assert ds.cases[1].label.name == "BRATS_001.nii.gz"


def test_nnunet_region_labels_as_nnunets_brats_conversion_writes_them(msd_dataset, tmp_path):
    """nnU-Net v2's BraTS 2021 data set (Dataset137) declares regions: the values are MSD Task01's after its label
    conversion, grouped as whole tumour, tumour core and enhancing tumour, painted back in the order 1, 2, 3."""
    root = _to_nnunet(msd_dataset, tmp_path / "Dataset137_BraTS2021")
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    meta["regions_class_order"] = [1, 2, 3]
    (root / "dataset.json").write_text(json.dumps(meta))
    scheme = discover(root).scheme  # was refused: "'labels' must map integer values to names"
    assert scheme.regions == {"whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)}
    assert scheme.labels == {0: "background", 1: "whole tumor", 2: "tumor core", 3: "enhancing tumor"}
    assert discover(root, label_scheme="msd_task01").scheme.name == "msd_task01"  # the same grouping
    with pytest.raises(DataSetError, match=r"'brats2021' .* does not group the label values as the data set's"):
        discover(root, label_scheme="brats2021")
    meta["regions_class_order"] = [3, 2, 1]
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataSetError, match=r"regions_class_order \[3, 2, 1\] differs from the value each region"):
        discover(root)
    meta["file_ending"] = ".mha"
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataSetError, match=r"file_ending '.mha'; medseg-zoo reads NIfTI"):
        discover(root)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"not a data set folder: expected dataset\.json"),
        ("{not json", r"cannot read dataset\.json"),
        ('{"name": "x"}', r"neither MSD .* nor nnU-Net v2 .*keys found: \['name'\]"),
        ('{"modality": {"a": "T1"}, "labels": {"0": "bg"}}', r"'modality' must map '0', '1', \.\.\. to names"),
    ],
)
def test_bad_folders(tmp_path, content, message):
    if content is not None:
        (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(DataSetError, match=message):
        discover(tmp_path)
