import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg_zoo.cli import main


def test_list(capsys):
    assert main(["list", "unetr*"]) == 0
    out = capsys.readouterr().out
    assert "unetr_brats" in out and "49.7M" in out and "FLAIR,T1w,T1gd,T2w -> TC,WT,ET (sigmoid)" in out
    assert "unet_brats" not in out


def test_list_pretrained_lists_only_published(capsys):
    assert main(["list", "--pretrained"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert "unetr_brats" not in names and "swin_unetr_brats21" in names and len(names) >= 16


def test_info(capsys):
    assert main(["info", "unetr_brats"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 49_667_123
    assert info["contract"]["label_scheme"] == "msd_task01"


def test_unknown_model_exits_2_with_a_hint(capsys):
    assert main(["info", "unetr_bratz"]) == 2
    assert "Did you mean 'unetr_brats'" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "medseg-zoo"
    assert exe.exists(), f"the medseg-zoo console script is not installed at {exe}"
    result = subprocess.run([str(exe), "list", "unet"], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[1].startswith("unet ")


def test_check_data(msd_dataset, capsys):
    assert main(["check-data", str(msd_dataset), "--model", "unetr_brats"]) == 0
    out = capsys.readouterr().out
    assert "msd layout): 4 cases, channels FLAIR, T1w, T1gd, T2w, label scheme msd_task01" in out
    assert "no problems found" in out


def test_check_data_reports_problems_with_exit_1(msd_dataset, tmp_path, capsys):
    pairs = tmp_path / "pairs"  # no dataset.json: the given scheme is all there is
    shutil.copytree(msd_dataset / "imagesTr", pairs / "images")
    shutil.copytree(msd_dataset / "labelsTr", pairs / "labels")
    assert main(["check-data", str(pairs), "--label-scheme", "brats2021"]) == 1
    assert "label values [3] are not in scheme 'brats2021'" in capsys.readouterr().out


def test_a_scheme_that_contradicts_the_dataset_json_is_refused(msd_dataset, capsys):
    assert main(["check-data", str(msd_dataset), "--label-scheme", "brats2023"]) == 2
    err = capsys.readouterr().err
    assert "label scheme 'brats2023' (BraTS 2023 adult glioma) does not match the labels the data set declares" in err
    assert "1: 'edema' in dataset.json, 'necrotic tumour core' in the scheme" in err


def test_check_data_on_a_missing_folder(tmp_path, capsys):
    assert main(["check-data", str(tmp_path / "nope")]) == 2
    assert "nope: no such folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import medseg_zoo as mz

    model = mz.create_model("unet_brats", channels=(4, 8), strides=(2,), num_res_units=1)
    return mz.save_pretrained(model, tmp_path_factory.mktemp("ckpt"))


def test_predict_a_folder(msd_dataset, checkpoint, tmp_path, capsys):
    out = tmp_path / "preds"
    args = ["predict", "--checkpoint", str(checkpoint), "-i", str(msd_dataset / "imagesTr"), "-o", str(out)]
    assert main([*args, "--amp", "off", "--overlap", "0.25"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"BRATS_00{i}.nii.gz" for i in range(4)]
    for name in names:
        pred, src = nib.load(out / name), nib.load(msd_dataset / "imagesTr" / name)
        assert pred.shape == src.shape[:3] and np.array_equal(pred.affine, src.affine)
        assert pred.get_data_dtype() == np.uint8


def test_predict_one_case_from_channel_files(msd_dataset, checkpoint, tmp_path):
    img = nib.load(msd_dataset / "imagesTr" / "BRATS_000.nii.gz")
    data = np.asanyarray(img.dataobj)
    items = []
    for c, name in enumerate(("FLAIR", "T1w", "T1gd", "T2w")):
        nib.save(nib.Nifti1Image(data[..., c], img.affine), tmp_path / f"{name}.nii.gz")
        items.append(f"{name}={tmp_path / f'{name}.nii.gz'}")
    out = tmp_path / "seg.nii.gz"
    assert main(["predict", "--checkpoint", str(checkpoint), "-i", *items, "-o", str(out), "--kind", "regions"]) == 0
    assert nib.load(out).shape == (*img.shape[:3], 3)


def test_predict_errors_are_hints(checkpoint, tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(checkpoint), "-i", str(tmp_path / "no.nii.gz"), "-o", "x.nii.gz"]) == 2
    assert "no.nii.gz: file not found" in capsys.readouterr().err
    (tmp_path / "a.nii.gz").write_bytes(b"")  # inputs and outputs are checked first, then the model
    assert (
        main(["predict", "-m", "unetr_brats", "-i", str(tmp_path / "a.nii.gz"), "-o", str(tmp_path / "b.nii.gz")]) == 2
    )
    assert "the weights of unetr_brats are not published yet" in capsys.readouterr().err
