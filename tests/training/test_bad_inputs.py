"""Every bad input to training is refused before anything is written, with the problem and the fix."""

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from medseg_zoo.cli import main
from medseg_zoo.data import DataCheckError, DataSetError
from medseg_zoo.errors import DeviceError, OutputError, TrainingError
from medseg_zoo.training import Trainer
from tests.conftest import snapshot, tiny_config, tiny_model


def _copy(tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    return root


def _set_label(path, change):
    img = nib.load(path)
    nib.save(nib.Nifti1Image(change(np.asarray(img.dataobj)), img.affine), path)


def _relabel(root):
    _set_label(root / "labelsTr" / "BRATS_001.nii.gz", lambda d: np.where(d == 3, 4, d).astype(np.uint8))
    return root


def _regrid(root):
    _set_label(root / "labelsTr" / "BRATS_002.nii.gz", lambda d: d[:, :, :30])
    return root


def _two_cases(root):
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"] = meta["training"][:1]
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


CASES = [
    # (what, prepare data, model changes, config changes, error, message)
    ("missing data folder", lambda r: r / "nowhere", {}, {}, DataSetError, r"nowhere: no such folder"),
    (
        "empty data folder",
        lambda r: (r / "empty").mkdir() or r / "empty",
        {},
        {},
        DataSetError,
        r"not a data set folder",
    ),
    (
        "label values outside the scheme",
        _relabel,
        {},
        {},
        DataCheckError,
        r"BRATS_001.nii.gz: label values \[4\] are not in scheme 'msd_task01'",
    ),
    ("image/label grid mismatch", _regrid, {}, {}, DataCheckError, r"label shape \(32, 32, 30\) differs from image"),
    (
        "too few cases for a split",
        _two_cases,
        {},
        {},
        TrainingError,
        r"1 labelled case\(s\) cannot give a training and a validation part .*add cases, or change --val-fraction",
    ),
    (
        "channel count",
        lambda r: r,
        {"in_channels": 2},
        {},
        DataCheckError,
        r"the data has 4 channel\(s\) .*the model reads 2 .*--in-channels FLAIR,T1w,T1gd,T2w",
    ),
    (
        "batch larger than the cases",
        lambda r: r,
        {},
        {"batch_size": 8},
        TrainingError,
        r"batch size 8 is larger than the 5 training cases: use --batch-size 5 or fewer",
    ),
    ("CUDA without a GPU", lambda r: r, {}, {"device": "cuda:9"}, DeviceError, r"device 'cuda:9' is not available"),
    ("unknown device", lambda r: r, {}, {"device": "tpu"}, DeviceError, r"unknown device 'tpu'"),
    (
        "freeze without an encoder",
        lambda r: r,
        {},
        {"freeze_encoder_epochs": 2},
        TrainingError,
        r"unet_brats names no encoder .*freeze_encoder_epochs and layer_decay do not apply",
    ),
]


@pytest.mark.parametrize(("what", "prepare", "model", "config", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_refused_before_anything_is_written(what, prepare, model, config, error, message, tiny_data, tmp_path):
    root = prepare(_copy(tiny_data, tmp_path))
    before = snapshot(tmp_path)
    with pytest.raises(error, match=message):
        Trainer(tiny_model(**model), root, tiny_config(tmp_path / "run", **config)).fit()
    assert snapshot(tmp_path) == before


def test_run_folders_are_never_overwritten_by_accident(tiny_data, tmp_path):
    data = _copy(tiny_data, tmp_path)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    for output, options, error, message in [
        (taken, {}, OutputError, r"output .*taken already holds files \(notes.txt\) and is not a medseg-zoo run"),
        (taken, {"overwrite": True}, OutputError, r"not a medseg-zoo run folder: .*so nothing was deleted"),
        (data / "run", {}, OutputError, r"overlaps the data set"),
        (tmp_path / "fresh", {"resume": True}, TrainingError, r"resume: .*fresh is not a run folder"),
    ]:
        with pytest.raises(error, match=message):
            Trainer(tiny_model(), data, tiny_config(output), **options).fit()
    assert snapshot(tmp_path) == before


def test_resume_refuses_a_damaged_state(tiny_data, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=1)).fit()
    state = run / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    before = snapshot(run)
    message = r"resume: cannot read .*trainer_state.pt .*damaged or from another run. .*last holds the weights of"
    with pytest.raises(TrainingError, match=message + r" the last completed epoch: start a new run from them with"):
        Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=2), resume=True).fit()
    after = snapshot(run)
    after.pop("run.lock"), before.pop("run.lock")  # the lock names its latest owner; nothing else may change
    assert after == before
    state.unlink()
    with pytest.raises(TrainingError, match=r"has no completed epoch \(trainer_state.pt is missing\)"):
        Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=2), resume=True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--resume"], r"resume: .* is not a run folder"),
        ([], r"give --data and --model \(or --checkpoint\), or --resume"),
        (["--model", "unet_brats", "--data", "nowhere"], r"nowhere: no such folder"),
        (["--model", "unet_brats", "--data", "."], r"not a data set folder"),
        (["--model", "unetr_bratz", "--data", "."], r"unknown model 'unetr_bratz'. Did you mean 'unetr_brats'"),
        (["--recipe", "fast", "--model", "unet_brats", "--data", "."], r"unknown recipe 'fast'"),
        (["--model", "unet_brats", "--data", ".", "--epochs", "0"], r"epochs=0 \(expected an integer >= 1\)"),
    ],
)
def test_cli_errors_exit_2_with_the_message(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--output", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medseg-zoo: error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--in-channels=0", "argument --in-channels: a count must be 1 or more, got '0'"),  # was ignored, exit 0
        ("--out-channels=-2", "argument --out-channels: a count must be 1 or more, got '-2'"),
        ("--in-channels=,", "argument --in-channels: expected 'data', a count or comma-separated names, got ','"),
    ],
)
def test_channel_counts_below_one_are_refused(option, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", "unet_brats", "--data", ".", "--output", str(tmp_path / "run"), option])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["train", "--model", "unet_brats", "--data", "."], ["export", "-m", "unet_brats"]])
def test_a_roi_of_two_numbers_is_refused_not_read_as_a_cube(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--output", str(tmp_path / "out"), "--roi-size", "32", "64"])
    assert exit_.value.code == 2
    assert "--roi-size takes one number (a cube) or three, got 2: [32, 64]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_roi_larger_than_every_volume_is_said(tiny_data, tmp_path):
    trainer = Trainer(tiny_model(roi_size=(64, 64, 64)), tiny_data, tiny_config(tmp_path / "run"))
    assert any("roi 64x64x64 is larger than every training volume on the model grid" in w for w in trainer.warnings)
    assert not any("roi" in w for w in Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / "run")).warnings)


def test_a_warm_up_as_long_as_the_run_is_said(tiny_data, tmp_path):
    trainer = Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / "run", epochs=3, warmup_epochs=3))
    assert any("warmup_epochs=3 is not fewer than epochs=3" in w for w in trainer.warnings)
    shorter = Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / "run", epochs=3, warmup_epochs=2))
    assert not any("warmup" in w for w in shorter.warnings)


def test_data_warnings_reach_stderr_without_progress(tiny_data, tmp_path, capsys):
    root = _copy(tiny_data, tmp_path)
    _set_label(root / "labelsTr" / "BRATS_001.nii.gz", lambda d: np.zeros_like(d))
    Trainer(tiny_model(), root, tiny_config(tmp_path / "run", epochs=1, progress=False)).fit()
    err = capsys.readouterr().err
    assert "BRATS_001: " in err and "label map is empty (background only)" in err
    assert "epoch 1/1" not in err  # without progress, no epoch lines


def test_ctrl_c_says_how_to_resume(tiny_data, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    def interrupted(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    original = Trainer._train_epoch
    monkeypatch.setattr(Trainer, "_train_epoch", interrupted)
    run = tmp_path / "run"
    argv = ["train", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_data), "--output", str(run)]
    assert main([*argv, "--epochs", "3", "--val-every", "1", "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted. The run continues from its last completed epoch with: medseg-zoo train --output {run}" in err
    assert "Traceback" not in err
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    assert main(["train", "--output", str(run), "--resume", "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["config"]["epochs"] == 3


def test_ctrl_c_during_evaluate_is_one_line(tiny_data, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("medseg_zoo.training.evaluate", interrupted)
    table = tmp_path / "scores.csv"
    argv = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_data), "--split", "all"]
    assert main([*argv, "--output", str(table)]) == 130
    assert capsys.readouterr().err.strip() == (
        "medseg-zoo: interrupted; files already written are complete, nothing is half-written"
    )
    assert not table.exists()
