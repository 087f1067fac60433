"""Bad input across the API and the CLI: each row gives the error type (or exit code), a fragment of the message,
and proves that no file was created or changed (every file under the test's folder hashed before and after).
Training's own bad inputs are in tests/training/test_bad_inputs.py."""

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

import medseg_zoo as mz
from medseg_zoo.cli import main
from medseg_zoo.convert import ConversionError
from medseg_zoo.data import DataCheckError, DataSetError, check_dataset, discover, make_dataset
from medseg_zoo.errors import (
    DeviceError,
    InvalidArgumentError,
    InvalidOverrideError,
    OutputError,
    TrainingError,
    UnknownModelError,
)
from medseg_zoo.hub import CheckpointError, HubError
from medseg_zoo.inference import InputError
from medseg_zoo.training import TrainConfig, Trainer, evaluate, recipe
from medseg_zoo.transforms.labels import LabelValueError
from tests.conftest import snapshot
from tests.inference.conftest import MSD_CHANNELS, make_echo


@pytest.fixture
def work(tmp_path, tiny_data, tiny_checkpoint):
    """A folder with inputs the rows point at: a case, a checkpoint, a data set, a folder of cases."""
    shutil.copytree(tiny_data, tmp_path / "data")
    shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    cases = tmp_path / "cases"
    (cases / "a").mkdir(parents=True)
    (cases / "b").mkdir()
    for folder in ("a", "b"):
        shutil.copy(tmp_path / "data" / "imagesTr" / "BRATS_000.nii.gz", cases / folder / "case.nii.gz")
    (tmp_path / "note.txt").write_text("a file")
    (tmp_path / "outdir.nii.gz").mkdir()  # a folder with a file's name
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 4), np.float32), np.eye(4)), tmp_path / "echo.nii.gz")
    return tmp_path


def _echo_case(work):
    return work / "echo.nii.gz"


def _checkpoint_with(work, change):
    config = json.loads((work / "ckpt" / "config.json").read_text())
    change(config)
    (work / "ckpt" / "config.json").write_text(json.dumps(config))
    return work / "ckpt"


def _label_with(work, value):
    """BRATS_000's label with one voxel of ``value``; returns its training item."""
    path = work / "data" / "labelsTr" / "BRATS_000.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = value
    nib.save(nib.Nifti1Image(data, img.affine), path)
    return {"image": str(work / "data" / "imagesTr" / "BRATS_000.nii.gz"), "label": str(path)}


def _shift_label(work, mm=5.0):
    """BRATS_001's label moved 5 mm off its image."""
    path = work / "data" / "labelsTr" / "BRATS_001.nii.gz"
    img = nib.load(path)
    affine = img.affine.copy()
    affine[0, 3] += mm
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), path)
    return work


def _dataset_json(work, change):
    meta = json.loads((work / "data" / "dataset.json").read_text())
    change(meta)
    (work / "data" / "dataset.json").write_text(json.dumps(meta))
    return work / "data"


def _bundle(work, network_def):
    root = work / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": network_def, "classes": 3}))
    torch.save({}, root / "models" / "model.pt")
    return root


def _monai_unetr(work):
    import monai

    path = work / "monai_unetr.pt"
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in monai.networks.nets.UNETR(4, 3, (32, 32, 32)).state_dict().items()}
    torch.save({k: torch.zeros(s) for k, s in shapes.items()}, path)
    return path


API = [
    # (id, call(work) or (prepare(work), call(prepared)), error, message)
    ("model name not a string", lambda w: mz.create_model(123), UnknownModelError, r"a model name is a string"),
    (
        "evaluate writing predictions onto the labels",
        lambda w: evaluate(
            mz.from_pretrained(w / "ckpt"),
            discover(w / "data").cases,
            "msd_task01",
            predictions=w / "data" / "labelsTr",
        ),
        OutputError,
        r"output .*labelsTr/BRATS_000.nii.gz is the input .*labelsTr/BRATS_000.nii.gz: refusing to replace an input",
    ),
    ("unknown model", lambda w: mz.create_model("unetr_bratz"), UnknownModelError, r"Did you mean 'unetr_brats'"),
    (
        "channel count as float",
        lambda w: mz.create_model("unet_brats", in_channels=2.0),
        InvalidOverrideError,
        r"in_channels must be a count or a sequence of names, got 2.0",
    ),
    (
        "channel count as bool",
        lambda w: mz.create_model("unet_brats", out_channels=True),
        InvalidOverrideError,
        r"out_channels must be a count or a sequence of names, got True",
    ),
    ("spatial_dims 2", lambda w: mz.create_model("unet_brats", spatial_dims=2), InvalidArgumentError, r"must be 3"),
    (
        "scheme against outputs",
        lambda w: mz.create_model("unet_brats", out_channels=["bg", "lesion"], label_scheme="msd_task01"),
        InvalidArgumentError,
        r"label scheme 'msd_task01' needs sigmoid regions TC, WT, ET; the contract has sigmoid outputs bg, lesion",
    ),
    (
        "unknown label scheme",
        lambda w: mz.create_model("unet", in_channels=1, out_channels=2, label_scheme="brats2030"),
        InvalidArgumentError,
        r"unknown label scheme 'brats2030'; known schemes: brats2018",
    ),
    (
        "unknown normalisation",
        lambda w: mz.TaskContract(("CT",), ("bg", "x"), "softmax", (8, 8, 8), normalization="ct_window"),
        ValueError,
        r"normalization 'ct_window' is not supported",
    ),
    (
        "list instead of a tuple",
        lambda w: mz.predict(make_echo(), [np.zeros((4, 8, 8, 8)), np.eye(4)]),
        InputError,
        r"prediction input: a list of 2 items; expected a 4-D NIfTI path, \{channel name: path\}, a discovered Case "
        r"or an \(array",
    ),
    (
        "zero affine",
        lambda w: mz.predict(make_echo(), (np.zeros((4, 8, 8, 8)), np.zeros((4, 4)))),
        InputError,
        r"array input: the affine is singular or not finite \(voxel sizes 0, 0, 0 mm\)",
    ),
    (
        "output is the input",
        lambda w: mz.predict(make_echo(), str(_echo_case(w)), output=w / "echo.nii.gz"),
        OutputError,
        r"output .*echo.nii.gz is the input .*refusing to replace an input",
    ),
    (
        "output without a NIfTI suffix",
        lambda w: mz.predict(make_echo(), str(_echo_case(w)), output=w / "seg.png"),
        OutputError,
        r"output .*seg.png: expected a file name ending in .nii.gz or .nii",
    ),
    (
        "output is a folder for an array",
        lambda w: mz.predict(make_echo(), (np.zeros((4, 8, 8, 8)), np.eye(4)), output=w / "outdir.nii.gz"),
        OutputError,
        r"outdir.nii.gz is a folder, and an array input has no name to give the file: give a file name",
    ),
    (
        "output under a file",
        lambda w: mz.predict(make_echo(), str(_echo_case(w)), output=w / "note.txt" / "seg.nii.gz"),
        OutputError,
        r"note.txt is not a writable folder",
    ),
    ("sw_batch_size 0", lambda w: mz.Predictor(make_echo(), sw_batch_size=0), ValueError, r"sw_batch_size must be"),
    ("GPU that is not there", lambda w: mz.Predictor(make_echo(), device="cuda:7"), DeviceError, r"not available"),
    ("unknown device", lambda w: mz.Predictor(make_echo(), device="gpu0"), DeviceError, r"unknown device 'gpu0'"),
    (
        "voxel sizes that explode the grid",
        lambda w: mz.predict(
            mz.create_model("unet_brats", channels=(4, 8), strides=(2,), num_res_units=1),
            (np.ones((4, 8, 8, 8)), np.diag([100.0, 100.0, 100.0, 1.0])),
        ),
        InputError,
        r"8x8x8 voxels of 100 x 100 x 100 mm would become ~1.14e\+08 voxels .*Check the voxel sizes",
    ),
    (
        "checkpoint with a null contract",
        (lambda w: _checkpoint_with(w, lambda c: c.update(contract=None)), mz.from_pretrained),
        CheckpointError,
        r"config.json: not a medseg-zoo config",
    ),
    (
        "checkpoint with null model_args",
        (lambda w: _checkpoint_with(w, lambda c: c.update(model_args=None)), mz.from_pretrained),
        CheckpointError,
        r"config.json: not a medseg-zoo config",
    ),
    (
        "checkpoint with an unknown label scheme",
        (lambda w: _checkpoint_with(w, lambda c: c["contract"].update(label_scheme="x")), mz.from_pretrained),
        CheckpointError,
        r"unknown label scheme 'x'",
    ),
    (
        "checkpoint with an unknown normalisation",
        (lambda w: _checkpoint_with(w, lambda c: c["contract"].update(normalization="x")), mz.from_pretrained),
        CheckpointError,
        r"normalization 'x' is not supported",
    ),
    (
        "checkpoint of an unknown model",
        (lambda w: _checkpoint_with(w, lambda c: c.update(name="unet_bratz")), mz.from_pretrained),
        CheckpointError,
        r"unknown model 'unet_bratz'",
    ),
    (
        "labels that do not give the outputs",
        lambda w: mz.transforms.training_transforms(mz.create_model("unet_brats"), label_scheme="btcv"),
        ValueError,
        r"the data's labels do not give the model's outputs: label scheme 'btcv' needs softmax",
    ),
    (
        "synthetic data set over another seed",
        lambda w: make_dataset(w / "data", n_cases=2, shape=(32, 32, 32), seed=1),
        DataSetError,
        r"holds synthetic cases of seed 7, shape \[32, 32, 32\], domain brats, task tumour; asked for seed 1,",
    ),
    (
        "synthetic data set over other files",
        lambda w: make_dataset(w / "cases", n_cases=2, shape=(16, 16, 16)),
        DataSetError,
        r"cases holds other files",
    ),
    (
        "dataset.json training null",
        (lambda w: _dataset_json(w, lambda m: m.update(training=None)), discover),
        DataSetError,
        r"'training' must be a list of image/label entries, got None",
    ),
    (
        "dataset.json entries not strings",
        (lambda w: _dataset_json(w, lambda m: m.update(training=[{"image": 3, "label": 4}])), discover),
        DataSetError,
        r"training entries need 'image' and 'label' paths \(strings\), got \{'image': 3",
    ),
    (
        "unknown label scheme for a data set",
        lambda w: discover(w / "data", label_scheme="brats2030"),
        DataSetError,
        r"unknown label scheme 'brats2030'",
    ),
    (
        "MONAI UNETR into unetr_brats",
        (_monai_unetr, lambda path: mz.convert_checkpoint(path, "monai", "unetr_brats", img_size=32)),
        ConversionError,
        r"the weights do not fit unetr_brats: .*The checkpoint's hidden size is 768: use unetr or unetr_btcv or",
    ),
    (
        "bundle with a reference to nothing",
        (
            lambda w: _bundle(w, {"_target_": "UNet", "out_channels": "@n"}),
            lambda path: mz.convert_checkpoint(path, "monai-bundle", "unet_brats"),
        ),
        ConversionError,
        r"network_def\['out_channels'\] refers to '@n', which the config does not define",
    ),
    (
        "bundle with an expression",
        (
            lambda w: _bundle(w, {"_target_": "UNet", "channels": "$[16, 32]"}),
            lambda path: mz.convert_checkpoint(path, "monai-bundle", "unet_brats"),
        ),
        ConversionError,
        r"network_def\['channels'\] is '\$\[16, 32\]', a bundle expression or macro; medseg-zoo does not run bundle",
    ),
    (
        "checkpoint with an unknown model argument",
        (lambda w: _checkpoint_with(w, lambda c: c["model_args"].update(bogus=1)), mz.from_pretrained),
        CheckpointError,
        r"config.json: unet_brats: medseg_zoo.models.unet.UNet takes no argument 'bogus'",
    ),
    (
        "an argument the UNet does not take",  # MONAI's UNet is extended through *args, **kwargs
        lambda w: mz.create_model("unet_brats", bogus=1),
        InvalidOverrideError,
        r"takes no argument 'bogus'. Valid arguments: in_channels, out_channels, spatial_dims, channels",
    ),
    ("spatial_dims 4", lambda w: mz.create_model("unetr_brats", spatial_dims=4), InvalidArgumentError, r"got 4"),
    (
        "a 2-D img_size",
        lambda w: mz.create_model("unetr", in_channels=1, out_channels=2, img_size=(96, 96)),
        InvalidArgumentError,
        r"unetr: img_size must be three positive integers, got \(96, 96\)",
    ),
    (
        "a width the heads do not divide",  # MONAI refuses it; only the seed's configuration sets dim_head
        lambda w: mz.create_model("unetr", in_channels=1, out_channels=2, hidden_size=512, num_heads=12),
        ValueError,
        r"hidden size 512 should be divisible by num_heads 12",
    ),
    (
        "dataset.json listing a case twice",
        (lambda w: _dataset_json(w, lambda m: m["training"].append(m["training"][0])), discover),
        DataSetError,
        r"dataset.json: BRATS_000, .*BRATS_000.nii.gz.* listed more than once",
    ),
    (
        "a label scheme that contradicts the dataset.json",
        lambda w: discover(w / "data", label_scheme="brats2023"),
        DataSetError,
        r"label scheme 'brats2023' .*does not match the labels the data set declares \(1: 'edema' in dataset.json",
    ),
    (
        "training on a number",
        lambda w: Trainer(make_echo(), 123, TrainConfig(output=str(w / "run"))),
        TrainingError,
        r"data must be a data set folder .* or a DataSet, got int 123",
    ),
    (
        "callbacks that are not Callbacks",
        lambda w: Trainer(make_echo(), w / "data", TrainConfig(output=str(w / "run")), callbacks=[print]),
        TrainingError,
        r"callbacks must be a list of Callback objects .*got <built-in function print>",
    ),
    (
        "callbacks not in a list",  # was "'builtin_function_or_method' object is not iterable"
        lambda w: Trainer(make_echo(), w / "data", TrainConfig(output=str(w / "run")), callbacks=print),
        TrainingError,
        r"callbacks must be a list of Callback objects .*got <built-in function print>",
    ),
    (
        "a recipe change that is no field",  # was TypeError: __init__() got an unexpected keyword argument
        lambda w: recipe("unet_brats", learning_rate=1e-3),
        TrainingError,
        r"TrainConfig has no field learning_rate; its fields: output, .*lr, ",
    ),
    (
        "a label scheme beside a DataSet",
        lambda w: Trainer(
            make_echo(), discover(w / "data"), TrainConfig(output=str(w / "run")), label_scheme="brats2021"
        ),
        TrainingError,
        r"label_scheme='brats2021' applies to a data set folder; a DataSet already has its scheme \(msd_task01\)",
    ),
    (
        "a 4-D file without its channel names",  # MSD's FLAIR, T1w, T1gd, T2w into T1c, T1, T2, FLAIR: garbage
        lambda w: mz.predict(make_echo(), str(_echo_case(w))),
        InputError,
        r"echo.nii.gz: a 4-D file for a model of 4 channels must say which channel is which: the model reads FLAIR",
    ),
    (
        "channel names that are not the model's",
        lambda w: mz.predict(make_echo(), str(_echo_case(w)), channels=["CT", "PET", "T1w", "T2w"]),
        InputError,
        r"the file's channels CT, PET, T1w, T2w are not the model's \(FLAIR, T1w, T1gd, T2w\)",
    ),
    (
        "predict a folder that is not a case",
        lambda w: mz.predict(make_echo(), str(w / "cases")),
        InputError,
        r"cases is a folder; expected a NIfTI file",
    ),
    (
        "a label outside the scheme in the training pipeline",  # the file and the values first, not MONAI's wrapper
        (
            lambda w: _label_with(w, 4),
            lambda item: mz.transforms.training_transforms(mz.create_model("unet_brats"))(item),
        ),
        LabelValueError,
        r"BRATS_000.nii.gz: .*label values \[4\] are not in scheme 'msd_task01'",
    ),
    (
        "check_dataset on a path with a bad label",  # a path is discovered
        (lambda w: _label_with(w, 4) and w / "data", lambda root: check_dataset(root).raise_for_errors()),
        DataCheckError,
        r"BRATS_000: .*label values \[4\] are not in scheme 'msd_task01'",
    ),
]


@pytest.mark.parametrize(("call", "error", "message"), [r[1:] for r in API], ids=[r[0] for r in API])
def test_api(call, error, message, work):
    prepare, call = call if isinstance(call, tuple) else (lambda w: w, call)
    argument = prepare(work)  # the bad input itself is made first
    before = snapshot(work)
    with pytest.raises(error, match=message):
        call(argument)
    assert snapshot(work) == before


def test_push_offline(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubError, match=r"cannot push to me/x: 127.0.0.1:9 cannot be reached"):
        mz.push_to_hub(make_echo(), "me/x")


def _case(work, name="BRATS_000"):
    return str(work / "data" / "imagesTr" / f"{name}.nii.gz")


def _predict(work, *arguments):
    return ["predict", "--checkpoint", str(work / "ckpt"), *arguments]


CLI = [
    # (id, argv(work), exit code, stderr fragment)
    (
        "predict into the input folder",
        lambda w: _predict(w, "-i", str(w / "data" / "imagesTr"), "-o", str(w / "data" / "imagesTr")),
        2,
        r"output .*imagesTr/BRATS_000.nii.gz is the input .*refusing to replace an input",
    ),
    (
        "predict into the data set's labels",  # the ground truth was replaced by predictions, exit 0
        lambda w: _predict(w, "-i", str(w / "data" / "imagesTr"), "-o", str(w / "data" / "labelsTr")),
        2,
        r"output .*labelsTr/BRATS_000.nii.gz exists and was not written by medseg-zoo: refusing to replace it",
    ),
    (
        "predict onto a user's label map",
        lambda w: _predict(w, "-i", _case(w), "-o", str(w / "data" / "labelsTr" / "BRATS_001.nii.gz")),
        2,
        r"output .*BRATS_001.nii.gz exists and was not written by medseg-zoo",
    ),
    (
        "statistics onto a user's JSON",
        lambda w: (
            (w / "seg_statistics.json").write_text("{}")
            and _predict(w, "-i", _case(w), "-o", str(w / "seg.nii.gz"), "--statistics")
        ),
        2,
        r"statistics file .*seg_statistics.json exists and was not written by medseg-zoo",
    ),
    (
        "predict onto the input file",
        lambda w: _predict(w, "-i", _case(w), "-o", _case(w)),
        2,
        r"is the input",
    ),
    (
        "two inputs of the same name",
        lambda w: _predict(
            w, "-i", str(w / "cases/a/case.nii.gz"), str(w / "cases/b/case.nii.gz"), "-o", str(w / "out")
        ),
        2,
        r"inputs .*a/case.nii.gz and .*b/case.nii.gz would both be written to .*out/case.nii.gz",
    ),
    (
        "several inputs, one output file",
        lambda w: _predict(w, "-i", _case(w), _case(w, "BRATS_001"), "-o", str(w / "seg.nii.gz")),
        2,
        r"-o .*seg.nii.gz names one file but there are 2 inputs",
    ),
    (
        "output of another format",
        lambda w: _predict(w, "-i", _case(w), "-o", str(w / "seg.mha")),
        2,
        r"expected a .nii.gz / .nii file name for one input, or a folder",
    ),
    (
        "missing input",
        lambda w: _predict(w, "-i", str(w / "nope.nii.gz"), "-o", str(w / "o")),
        2,
        r"nope.nii.gz: file not found",
    ),
    (
        "GPU that is not there",
        lambda w: _predict(w, "-i", _case(w), "-o", str(w / "o"), "--device", "cuda:7"),
        2,
        r"device 'cuda:7' is not available",
    ),
    (
        "check-data with training null",
        lambda w: ["check-data", str(_dataset_json(w, lambda m: m.update(training=None)))],
        2,
        r"'training' must be a list",
    ),
    (
        "check-data with an unknown scheme",
        lambda w: ["check-data", str(w / "data"), "--label-scheme", "brats2030"],
        2,
        r"unknown label scheme 'brats2030'; known schemes",
    ),
    (
        "check-data for a model that reads other channels and labels",
        lambda w: ["check-data", str(w / "data"), "--model", "segresnet_brats"],
        1,
        None,  # a report on stdout, checked below
    ),
    (
        "convert onto a file",
        lambda w: [
            "convert",
            "--from",
            "monai",
            str(w / "note.txt"),
            "--model",
            "unetr_monai",
            "--to",
            str(w / "note.txt"),
        ],
        2,
        r"--to .*note.txt is a file; expected a folder",
    ),
    (
        "convert into a folder of other files",
        lambda w: [
            "convert",
            "--from",
            "monai",
            str(w / "note.txt"),
            "--model",
            "unetr_monai",
            "--to",
            str(w / "data"),
        ],
        2,
        r"--to .*data holds other files \(dataset.json, imagesTr, labelsTr\)",
    ),
    ("info of a number", lambda w: ["info", "123"], 2, r"unknown model '123'"),
    (
        "evaluate onto a ground-truth label",
        lambda w: [*_evaluate(w), "--output", str(w / "data" / "labelsTr" / "BRATS_000.nii.gz")],
        2,
        r"--output .*labelsTr/BRATS_000.nii.gz: expected a file name ending in .csv",
    ),
    (
        "evaluate onto a label named .csv",
        lambda w: [*_evaluate(_renamed_label(w)), "--output", str(w / "data" / "labelsTr" / "BRATS_000.csv")],
        2,
        r"--output .*BRATS_000.csv is the input .*refusing to replace an input",
    ),
    (
        "evaluate into the checkpoint",
        lambda w: [*_evaluate(w), "--output", str(w / "ckpt" / "dice.csv")],
        2,
        r"--output .*ckpt/dice.csv lies inside the checkpoint .*which this command reads",
    ),
    (
        "evaluate into the data set",
        lambda w: [*_evaluate(w), "--output", str(w / "data" / "dice.csv")],
        2,
        r"lies inside the data set",
    ),
    (
        "evaluate onto an existing folder",
        lambda w: [*_evaluate(w), "--output", str(w / "cases")],
        2,
        r"--output .*cases: expected a file name ending in .csv",
    ),
    (
        "evaluate with a label 5 mm off its image",
        lambda w: _evaluate(_shift_label(w)),
        2,
        None,  # the data check's report
    ),
    (
        "evaluate with a scheme the data set contradicts",
        lambda w: [*_evaluate(w), "--label-scheme", "brats2023"],
        2,
        r"does not match the labels the data set declares",
    ),
    (
        "train with the cache in a file",
        lambda w: [*_train(w), "--cache-dir", str(w / "note.txt")],
        2,
        r"cache_dir .*note.txt is a file; expected a folder",
    ),
    (
        "train with a negative learning rate",
        lambda w: [*_train(w), "--lr", "-1e-3"],
        2,
        r"lr=-0.001 \(expected a finite number > 0\)",
    ),
    ("train with an infinite learning rate", lambda w: [*_train(w), "--lr", "inf"], 2, r"lr=inf \(expected a finite"),
    (
        "evaluate a checkpoint that does not exist",
        lambda w: ["evaluate", "--checkpoint", str(w / "no_such_run" / "best"), "--data", str(w / "data")],
        2,
        r"--checkpoint .*no_such_run/best: no such file or folder; expected a model folder",
    ),
]


@pytest.mark.parametrize(
    ("command", "code"),
    [(lambda w: _train(w), 2), (lambda w: _evaluate(w), 2), (lambda w: ["check-data", str(w / "data")], 1)],
    ids=["train", "evaluate", "check-data"],
)
def test_a_missing_labels_folder_is_named_per_case(work, command, code, capsys):
    shutil.rmtree(work / "data" / "labelsTr")  # dataset.json still lists the label files
    before = snapshot(work)
    assert main(command(work)) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "FileNotFoundError" not in out + err
    assert re.search(r"BRATS_000: .*labelsTr/BRATS_000.nii.gz", out + err), out + err
    assert snapshot(work) == before


def _evaluate(work):
    return ["evaluate", "--checkpoint", str(work / "ckpt"), "--data", str(work / "data"), "--split", "all"]


def _train(work):
    return ["train", "--checkpoint", str(work / "ckpt"), "--data", str(work / "data"), "--output", str(work / "run")]


def _renamed_label(work):
    """A data set whose label files end in .csv (listed so in its dataset.json)."""
    (work / "data" / "labelsTr" / "BRATS_000.nii.gz").rename(work / "data" / "labelsTr" / "BRATS_000.csv")
    _dataset_json(work, lambda m: m["training"][0].update(label="./labelsTr/BRATS_000.csv"))
    return work


@pytest.mark.parametrize(("argv", "code", "message"), [r[1:] for r in CLI], ids=[r[0] for r in CLI])
def test_cli(argv, code, message, work, capsys):
    args = argv(work)
    before = snapshot(work)
    assert main(args) == code
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    if message is not None:
        assert err.startswith("medseg-zoo: error: "), err
        assert re.search(message, err), err
    assert snapshot(work) == before


def test_check_data_compares_channels_and_labels_with_the_model(work, capsys):
    assert main(["check-data", str(work / "data"), "--model", "segresnet_brats"]) == 1
    out = capsys.readouterr().out
    assert "the data's channels are FLAIR, T1w, T1gd, T2w, the model reads T1c, T1, T2, FLAIR: the same channels" in out
    assert "--in-channels FLAIR,T1w,T1gd,T2w" in out
    assert "the model writes labels of scheme 'brats2018' (values 0, 1, 2, 4), the data's are 'msd_task01'" in out


@pytest.mark.parametrize("read_ahead", ["off", "on"])  # on: the next case is read while this one is predicted
def test_folder_prediction_goes_on_past_a_bad_case_and_skips_existing(work, capsys, read_ahead):
    folder = work / "data" / "imagesTr"
    reference = work / "reference"
    assert main(["predict", "--checkpoint", str(work / "ckpt"), "-i", str(folder), "-o", str(reference)]) == 0
    (folder / "BRATS_003.nii.gz").write_bytes(b"not a nifti")
    out = work / "predictions"
    common = ["predict", "--checkpoint", str(work / "ckpt"), "-i", str(folder), "-o", str(out)]
    capsys.readouterr()
    assert main([*common, "--read-ahead", read_ahead]) == 1
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == [f"BRATS_00{i}.nii.gz" for i in (0, 1, 2, 4, 5)]
    assert "1 of 6 case(s) failed" in captured.err and "BRATS_003: " in captured.err
    assert "cannot read the image" in captured.err
    assert [line.split("/")[-1] for line in captured.out.split()] == [f"BRATS_00{i}.nii.gz" for i in (0, 1, 2, 4, 5)]
    for path in out.iterdir():
        expected = nib.load(reference / path.name)
        np.testing.assert_array_equal(np.asanyarray(nib.load(path).dataobj), np.asanyarray(expected.dataobj))
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (folder / "BRATS_003.nii.gz").unlink()
    assert main([*common, "--skip-existing", "--read-ahead", read_ahead]) == 0
    assert "BRATS_000.nii.gz (exists, skipped)" in capsys.readouterr().out
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in written.items())  # not rewritten


def test_written_files_get_the_users_umask(work):
    import os

    old = os.umask(0o022)
    try:
        seg = work / "seg.nii.gz"
        mz.predict(make_echo(), str(_echo_case(work)), output=seg, channels=MSD_CHANNELS)
        assert seg.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_evaluate_checks_the_data_against_the_checkpoint(work, capsys):
    argv = _evaluate(_shift_label(work))
    before = snapshot(work)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "BRATS_001.nii.gz: label affine differs from the image's (max difference 5 mm)" in err
    assert snapshot(work) == before


def test_predicting_an_input_without_signal_warns(work):
    case = work / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 4), dtype=np.float32), np.eye(4)), case)
    with pytest.warns(UserWarning, match=r"empty.nii.gz: no signal in channel\(s\) FLAIR \(every voxel 0\), T1w"):
        mz.predict(make_echo(), str(case), channels=MSD_CHANNELS)


def test_two_dimensional_images_are_named_as_such(work):
    from medseg_zoo.data import check_cases

    path = work / "data" / "imagesTr" / "BRATS_000.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), dtype=np.float32), np.eye(4)), path)
    (problem,) = [p for p in check_cases(discover(work / "data").cases[:1], ["FLAIR"], discover(work / "data").scheme)]
    assert "image shape (8, 8) is 2-D; expected a 3-D volume (X, Y, Z) or a 4-D one" in problem.message
