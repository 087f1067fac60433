"""medseg-zoo train / evaluate / predict end to end on tiny synthetic data, in both data-set layouts; a run killed
by a signal and resumed; two gloo processes under torchrun against one process with the same global batch."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

import medseg_zoo as mz
from medseg_zoo.cli import main
from tests.data.test_discovery import _to_nnunet

TRAIN = ["--epochs", "2", "--val-every", "1", "--no-progress"]


def _losses(run):
    with open(run / "metrics.csv") as f:
        return [(float(r["train_loss"]), float(r["mean_dice"])) for r in csv.DictReader(f)]


@pytest.mark.parametrize("layout", ["msd", "nnunet"])
def test_train_then_predict_then_evaluate(layout, tiny_data, tiny_checkpoint, tmp_path, capsys):
    data = tiny_data if layout == "msd" else _to_nnunet(tiny_data, tmp_path / "Dataset001_BraTS")
    run = tmp_path / "run"
    assert main(["train", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--output", str(run), *TRAIN]) == 0
    assert f"best checkpoint: {run / 'best'}" in capsys.readouterr().out
    assert len(_losses(run)) == 2

    val = json.loads((run / "config.json").read_text())["split"]["val"]
    inputs = (
        [str(tiny_data / "imagesTr" / f"{name}.nii.gz") for name in val]
        if layout == "msd"
        else [
            f"{c}={data / 'imagesTr' / f'{val[0]}_{i:04d}.nii.gz'}"
            for i, c in enumerate(("FLAIR", "T1w", "T1gd", "T2w"))
        ]
    )
    out = tmp_path / "predictions"
    assert main(["predict", "--checkpoint", str(run / "best"), "-i", *inputs, "-o", str(out)]) == 0
    written = sorted(out.iterdir())
    assert [p.name for p in written] == [f"{name}.nii.gz" for name in (val if layout == "msd" else val[:1])]
    label = nib.load(tiny_data / "labelsTr" / written[0].name)
    seg = nib.load(written[0])
    assert seg.shape == label.shape and np.allclose(seg.affine, label.affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}  # msd_task01 values

    table = tmp_path / "dice.csv"
    assert main(["evaluate", "--checkpoint", str(run / "best"), "--data", str(data), "--output", str(table)]) == 0
    printed = capsys.readouterr().out
    assert "Dice TC" in printed and str(table) in printed
    rows = list(csv.DictReader(table.open()))
    assert [r["case"] for r in rows] == [*val, "mean"]


def test_evaluate_all_and_test_splits(tiny_data, tiny_checkpoint, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_data), "--split", "all"]) == 0
    assert capsys.readouterr().out.count("BRATS_") == 6
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_data), "--split", "val"]) == 2
    assert "--split val needs the run folder of the checkpoint" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_data), "--split", "test"]) == 2
    assert "no labelled test cases (imagesTs/ with labelsTs/)" in capsys.readouterr().err


def test_a_killed_run_leaves_a_loadable_checkpoint_and_resumes(tiny_data, tiny_checkpoint, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "medseg_zoo", "train", "--checkpoint", str(tiny_checkpoint)]
    command += ["--data", str(tiny_data), "--output", str(run), "--epochs", "6", "--val-every", "1", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / "metrics.csv").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)  # in the second epoch: no handler runs, no chance to tidy up
    process.wait()
    assert process.returncode == -signal.SIGKILL
    done = len(_losses(run))
    assert 1 <= done < 6
    mz.from_pretrained(run / "last")  # loadable as it is
    assert main(["train", "--output", str(run), "--resume", "--no-progress"]) == 0
    assert [int(r["epoch"]) for r in csv.DictReader((run / "metrics.csv").open())] == [1, 2, 3, 4, 5, 6]
    assert not list(run.rglob(".*tmp*"))  # no temporary file left behind


def test_torchrun_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_data, tiny_checkpoint, tmp_path):
    common = ["--checkpoint", str(tiny_checkpoint), "--data", str(tiny_data), "--fold", "0/3", *TRAIN]
    assert main(["train", *common, "--output", str(tmp_path / "one"), "--batch-size", "2"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "medseg_zoo", "train", *common, "--output", str(tmp_path / "two"), "--batch-size", "1"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 2
    for (loss_a, dice_a), (loss_b, dice_b) in zip(one, two, strict=True):
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
        assert dice_b == pytest.approx(dice_a, abs=1e-4)


def test_a_checkpoint_starts_a_new_task_with_a_separate_validation_set(tiny_checkpoint, tmp_path, capsys):
    """--checkpoint with --out-channels data: the head replaced for the data's labels, the start named in one
    line and recorded with its hash; --val-data validates on another folder."""
    from medseg_zoo.data import make_dataset

    train = make_dataset(tmp_path / "anatomy", n_cases=3, shape=(32, 32, 32), seed=3, task="anatomy")
    val = make_dataset(tmp_path / "anatomy_val", n_cases=1, shape=(32, 32, 32), seed=4, task="anatomy")
    run = tmp_path / "run"
    args = ["train", "--checkpoint", str(tiny_checkpoint), "--out-channels", "data", "--data", str(train)]
    assert main([*args, "--val-data", str(val), "--output", str(run), *TRAIN]) == 0
    log = (run / "train.log").read_text()  # the console's lines too (without --no-progress)
    assert f"start: unet_brats from {tiny_checkpoint.resolve()} (sha256 " in log
    assert "; re-initialised 5 (model.2.0.conv.weight" in log  # the last up block: the head for new labels
    record = json.loads((run / "config.json").read_text())
    assert record["model"]["start"]["source"] == str(tiny_checkpoint.resolve()) and record["model"]["start"]["sha256"]
    assert record["data"]["val_root"] == str(val.resolve()) and len(record["split"]["train"]) == 3
    assert mz.from_pretrained(run / "best").pretrained_cfg.contract.out_channels == (
        "background",
        "white matter",
        "ventricles",
    )


def test_a_generic_model_is_planned_from_the_data_and_the_plan_reaches_predict(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--model", "unet", "--data", str(tiny_data), "--output", str(run), "--epochs", "1"]
    assert main([*args, "--no-progress", "--spacing", "2"]) == 0
    err = capsys.readouterr().err
    assert "--spacing (2.0, 2.0, 2.0) overrides the plan's" in err
    assert "plan for unet: spacing 2 x 2 x 2 mm, roi 32 x 32 x 32, batch 2, zscore_nonzero_channelwise" in err
    record = json.loads((run / "config.json").read_text())
    assert record["plan"]["roi_size"] == [32, 32, 32] and record["plan"]["rules"]["spacing"].startswith("the median")
    contract = mz.from_pretrained(run / "best").pretrained_cfg.contract
    assert contract.spacing == (2.0, 2.0, 2.0) and contract.normalization == "zscore_nonzero_channelwise"
    assert contract.roi_size == (32, 32, 32)


def test_a_task_model_keeps_its_contract(tiny_data, tmp_path, capsys):
    args = ["train", "--model", "unet_brats", "--data", str(tiny_data), "--output", str(tmp_path / "r")]
    assert main([*args, "--spacing", "1", "--epochs", "1"]) == 2  # refused before the model is built
    assert "--spacing and --normalization apply to generic architectures; unet_brats has a contract" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "r").exists()
