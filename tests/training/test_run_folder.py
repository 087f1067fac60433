"""The run folder's rules: --overwrite deletes only a provable run's own files; a checkpoint is never a run;
resume reads only a run; a failed write leaves the run resumable."""

import json
import math
import shutil

import pytest
from safetensors import SafetensorError

import medseg_zoo as mz
import medseg_zoo.hub
from medseg_zoo.cli import main
from medseg_zoo.errors import OutputError, TrainingError
from medseg_zoo.training import Callback, Trainer
from medseg_zoo.training.run_folder import RunFolder
from tests.conftest import snapshot, tiny_config, tiny_model

TRAIN = ["--epochs", "1", "--val-every", "1", "--no-progress"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data):
    run = tmp_path_factory.mktemp("finished") / "run"
    Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=1)).fit()
    return run


def _project(root):
    """A user's project folder that happens to hold a config.json."""
    (root / "results").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"learning_rate": 0.1}))
    (root / "notes.txt").write_text("my notes")
    (root / "analysis.py").write_text("print('mine')")
    (root / "results" / "table.csv").write_text("a,b\n1,2\n")
    return root


def test_overwrite_refuses_a_users_folder_with_a_config_json(tiny_data, tiny_checkpoint, tmp_path, capsys):
    project = _project(tmp_path / "project")
    before = snapshot(project)
    argv = ["train", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_data), "--output", str(project)]
    assert main([*argv, *TRAIN, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert (
        "project already holds files (analysis.py, config.json, notes.txt, results/) and is not a medseg-zoo run" in err
    )
    assert "its config.json is not a medseg-zoo run's (it names no format)." in err
    assert "--overwrite deletes only the files of a medseg-zoo run, so nothing was deleted. Choose an empty" in err
    assert snapshot(project) == before


def test_overwrite_refuses_a_run_holding_a_users_files(finished_run, tiny_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for path in finished_run.rglob("*"):
        if path.is_file():
            (run / path.relative_to(finished_run)).parent.mkdir(parents=True, exist_ok=True)
            (run / path.relative_to(finished_run)).write_bytes(path.read_bytes())
    (run / "notes.txt").write_text("mine")
    (run / "best" / "my_eval.csv").write_text("mine")
    before = snapshot(run)
    with pytest.raises(OutputError, match=r"also holds files a run does not write \(best/my_eval.csv, notes.txt\)"):
        Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=1), overwrite=True)
    assert snapshot(run) == before


def test_overwrite_refuses_links_whatever_they_point_to(finished_run, tiny_data, tmp_path):
    """A run writes no links: ``last/`` linked to a user's saved model, or a checkpoint file linked to a user's
    file, is the user's (before, the link stopped shutil.rmtree with a traceback halfway through the run)."""
    mine = tmp_path / "my_model"
    mz.save_pretrained(tiny_model(), mine)
    run = tmp_path / "run"
    for path in finished_run.rglob("*"):
        if path.is_file() and path.parent.name != "last":
            (run / path.relative_to(finished_run)).parent.mkdir(parents=True, exist_ok=True)
            (run / path.relative_to(finished_run)).write_bytes(path.read_bytes())
    (run / "last").symlink_to(mine, target_is_directory=True)
    (run / "best" / "README.md").unlink()
    (run / "best" / "README.md").symlink_to(mine / "README.md")
    before, ours = snapshot(run), snapshot(mine)
    with pytest.raises(OutputError, match=r"also holds files a run does not write \(best/README.md, last/\)"):
        Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=1), overwrite=True)
    with pytest.raises(OutputError, match=r"resume: .*last is a link to .*my_model; a run writes its checkpoints"):
        Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=2), resume=True)  # would save into my_model
    assert snapshot(run) == before and snapshot(mine) == ours


def test_overwrite_replaces_a_run_and_only_its_files(finished_run, tiny_data, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=1)).fit()
    (run / ".metrics.csv.abc123.tmp.csv").write_text("left by a killed write")
    old = (run / "last" / "model.safetensors").read_bytes()
    Trainer(tiny_model(seed=5), tiny_data, tiny_config(run, epochs=1), overwrite=True).fit()
    assert (run / "last" / "model.safetensors").read_bytes() != old
    assert not list(run.glob(".*tmp*"))
    assert json.loads((run / "config.json").read_text())["format_version"] == 1


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_checkpoint_folder_is_never_a_run_folder(finished_run, tiny_data, overwrite, capsys):
    best = finished_run / "best"
    before = snapshot(finished_run)
    argv = ["train", "--model", "unet_brats", "--data", str(tiny_data), "--output", str(best), *TRAIN]
    assert main([*argv, *(["--overwrite"] if overwrite else [])]) == 2
    err = capsys.readouterr().err
    assert "is a saved model" in err and "--overwrite" not in err.split("error:")[1]
    assert snapshot(finished_run) == before
    with pytest.raises(OutputError, match="is a saved model"):
        Trainer(tiny_model(), tiny_data, tiny_config(best), overwrite=overwrite)


def test_a_run_must_not_replace_the_checkpoint_it_starts_from(finished_run, tiny_data, capsys):
    before = snapshot(finished_run)
    argv = ["train", "--checkpoint", str(finished_run / "best"), "--data", str(tiny_data)]
    assert main([*argv, "--output", str(finished_run), "--overwrite", *TRAIN]) == 2
    assert "overlaps the checkpoint" in capsys.readouterr().err
    assert snapshot(finished_run) == before


def test_train_config_without_an_output_writes_nothing(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingError, match=r"output=None \(expected a folder path\)"):
        Trainer(tiny_model(), tiny_data, tiny_config(tmp_path).replace(output=None)).fit()
    assert not (tmp_path / "None").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model", "unetr_brats"], r"--resume: --model unetr_brats \(the run's: unet_brats\): a resumed run keeps"),
        (["--checkpoint", "/nonexistent"], r"--checkpoint /nonexistent \(the run's: scratch\)"),
        (["--pretrained"], r"--pretrained True \(the run's: False\)"),
        (
            ["--recipe", "unet_brats", "--label-scheme", "brats2021"],
            r"--label-scheme brats2021 \(the run's: msd_task01\)",
        ),
        (["--recipe", "unet_brats"], r"--recipe unet_brats \(the run's: default\)"),
        (["--lr", "0.5", "--seed", "3"], r"--lr 0.5 \(the run's: 0.01\); --seed 3 \(the run's: 0\)"),
        (["--roi-size", "32"], r"--roi-size 32 32 32 \(the run's: \(16, 16, 16\)\)"),
        (["--in-channels", "2"], r"--in-channels 2 \(the run's: 4\)"),
    ],
)
def test_resume_refuses_options_that_contradict_the_run(finished_run, options, message, capsys):
    before = snapshot(finished_run)
    assert main(["train", "--output", str(finished_run), "--resume", *options]) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err
    assert f"start a new run from its weights: --checkpoint {finished_run / 'last'} --output NEW" in err
    assert snapshot(finished_run) == before


def test_resume_accepts_its_own_options_and_records_the_new_epochs(finished_run, tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    same = ["--model", "unet_brats", "--data", str(tiny_data), "--lr", "0.01", "--in-channels", "4", "--seed", "0"]
    same += ["--label-scheme", "msd_task01", "--roi-size", "16", "16", "16", "--recipe", "default", "--in-channels"]
    same += ["FLAIR,T1w,T1gd,T2w"]
    assert main(["train", "--output", str(run), "--resume", *same, "--epochs", "2", "--no-progress"]) == 0, (
        capsys.readouterr().err
    )
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["config"]["epochs"] == 2 and recorded["resumed"][-1]["epochs"] == 2
    assert len(RunFolder(run).run_config()["split"]["train"]) > 0
    assert (run / "metrics.csv").read_text().count("\n") == 3  # header and two epochs
    assert main(["train", "--output", str(run), "--resume", "--epochs", "1"]) == 2
    assert "--epochs 1 (the run's: 2)" in capsys.readouterr().err


def test_resume_refuses_another_model(finished_run, tiny_data):
    other = mz.create_model("unetr_brats", img_size=(16, 16, 16), feature_size=4, hidden_size=32, mlp_dim=64,
                            num_heads=4, dim_head=8)  # fmt: skip
    with pytest.raises(TrainingError, match=r"the run in .* trains unet_brats, the model given is unetr_brats"):
        Trainer(other, tiny_data, tiny_config(finished_run, epochs=1), resume=True)


class _Rates(Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_start(self, trainer):
        self.rates.append(max(g["lr"] for g in trainer.optimizer.param_groups))


def test_extending_a_finished_run_stretches_its_schedule(tiny_data, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=2)).fit()
    rates = _Rates()
    rows = Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=3), resume=True, callbacks=[rates]).fit()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[1]["lr"] == 0  # the two-epoch cosine schedule had ended
    assert rates.rates[0] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 2 / 3)))  # now it spans 3 epochs
    assert "the learning-rate schedule now spans 3 epochs" in (run / "train.log").read_text()


def test_a_failed_write_leaves_the_run_resumable(tiny_data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = medseg_zoo.hub.save_file
    calls = []

    def full_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # epoch 1 writes best/ and last/; epoch 2 fails
            raise SafetensorError("No space left on device (os error 28)")
        return real(*args, **kwargs)

    monkeypatch.setattr(medseg_zoo.hub, "save_file", full_disk)
    with pytest.raises(TrainingError, match=r"cannot write epoch 2's results .*No space left.*--resume"):
        Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=2)).fit()
    assert not list(run.rglob(".*tmp*"))
    monkeypatch.setattr(medseg_zoo.hub, "save_file", real)
    rows = Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=2), resume=True).fit()
    assert [r["epoch"] for r in rows] == [1, 2]


def test_a_failed_first_write_leaves_no_empty_checkpoint(tiny_data, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(medseg_zoo.hub, "save_file", full_disk)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"No epoch was completed; start again with: .*--overwrite"):
        Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=1)).fit()
    assert not (run / "best").exists() and not (run / "last").exists() and not list(run.glob(".*tmp*"))
    RunFolder(run).check_new(overwrite=True)  # what is left is a run that --overwrite may replace


def test_save_pretrained_onto_a_file(tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(mz.CheckpointError, match=r"file is a file; save_pretrained writes a folder"):
        mz.save_pretrained(tiny_model(), tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"


def test_save_pretrained_keeps_a_users_readme_and_config(tmp_path):
    project = _project(tmp_path / "project")
    (project / "README.md").write_text("# my project")
    before = snapshot(project)
    with pytest.raises(mz.CheckpointError, match=r"holds config.json, README.md and is not a medseg-zoo checkpoint"):
        mz.save_pretrained(tiny_model(), project)
    assert snapshot(project) == before
    saved = mz.save_pretrained(tiny_model(), tmp_path / "ckpt")
    (saved / "notes.txt").write_text("mine")
    mz.save_pretrained(tiny_model(seed=4), saved)  # a checkpoint is replaced, its other files kept
    assert (saved / "notes.txt").read_text() == "mine" and mz.from_pretrained(saved) is not None


def test_resume_after_the_data_moved(tiny_data, tiny_checkpoint, tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny_data, data)
    assert main(["train", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--output", str(run), *TRAIN]) == 0
    data.rename(tmp_path / "moved")
    resume = ["train", "--output", str(run), "--resume", "--epochs", "2", "--no-progress"]
    assert main(resume) == 2
    assert f"the run's data set {data} is gone; if it moved, pass its new place with --data" in capsys.readouterr().err
    assert main([*resume, "--data", str(tmp_path / "moved")]) == 0
    assert f"note: resuming on the data set {tmp_path / 'moved'}; the run started on {data}" in capsys.readouterr().err


def test_evaluate_asks_for_a_checkpoint_of_a_run_folder(finished_run, tiny_data, capsys):
    assert main(["evaluate", "--checkpoint", str(finished_run), "--data", str(tiny_data)]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint {finished_run} is a run folder; evaluate one of its checkpoints: --checkpoint " in err
