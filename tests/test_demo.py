import json
import re

import nibabel as nib
import numpy as np
import pytest

from medseg_zoo.cli import main
from medseg_zoo.demo import run_demo
from tests.conftest import snapshot

SMALL = {"epochs": 2, "cases": 7, "shape": (32, 32, 32), "progress": False}


def test_demo_writes_every_file_with_numbers_from_the_run(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(out, **SMALL)
    held_out = summary["held_out_cases"]
    assert held_out == ["BRATS_003", "BRATS_004", "BRATS_005", "BRATS_006"]
    for name in held_out:
        prediction = nib.load(out / "predictions" / f"{name}.nii.gz")
        image = nib.load(out / "data" / "imagesTr" / f"{name}.nii.gz")
        assert prediction.shape == image.shape[:3] and np.allclose(prediction.affine, image.affine)
        assert (out / "overlays" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "run" / "best" / "model.safetensors").is_file()
    written = json.loads((out / "summary.json").read_text())
    assert written == summary
    assert [c["case"] for c in summary["cases"]] == held_out
    dice = [v for c in summary["cases"] for k, v in c.items() if k.startswith("dice_")]
    assert len(dice) == 12 and all(0 <= v <= 1 for v in dice)
    assert 0 <= summary["mean_dice"] <= 1
    assert summary["mean_dice"] == pytest.approx(np.mean(list(summary["mean"].values())))
    assert set(summary["seconds"]) == {"data", "training", "evaluation", "total"}
    assert summary["model"] == "unet_brats_small" and summary["parameters"] > 0 and summary["device"] == "cpu"
    assert summary["epochs"] == summary["epochs_planned"] == 2

    data = {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*.nii.gz")}
    run_demo(out, **SMALL)  # a second run reuses the data set
    assert {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*.nii.gz")} == data


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], r"--epochs must be a positive whole number, got 0"),
        (["--minutes", "0"], r"--minutes must be a positive number of minutes, got 0.0"),
        (["--minutes", "-2"], r"--minutes must be a positive number of minutes, got -2.0"),
        (["--model", "unet_bratz"], r"unknown model 'unet_bratz'"),
        (["--device", "cuda:5"], r"device 'cuda:5' is not available"),
        (["--output", "{tmp}/taken"], r"--output .*taken holds other files \(mine.txt\); choose a new folder"),
        (["--output", "{tmp}/taken/mine.txt"], r"--output .*mine.txt is a file"),
    ],
)
def test_bad_demo_arguments_write_nothing(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    before = snapshot(tmp_path)
    assert main(["demo", *(a.format(tmp=tmp_path) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert snapshot(tmp_path) == before and not (tmp_path / "demo-output").exists()
