"""Export: every architecture variant the registry holds as ONNX (run by ONNX Runtime) and as a torch.export
program, checked against the eager model; the contract inside the file; the same whole-case pipeline on the export;
and the refusals (a roi the network cannot take, files without the zoo's metadata or from a newer format, wrong
channels, outputs that must not be written)."""

from __future__ import annotations

import csv
import dataclasses
import json

import nibabel as nib
import numpy as np
import onnx
import pytest
import torch

import medseg_zoo as mz
from medseg_zoo._registry import get_config
from medseg_zoo.cli import main
from medseg_zoo.errors import InvalidArgumentError, OutputError
from medseg_zoo.export import TOLERANCE, ExportedModel, ExportError, export_model, load_exported
from medseg_zoo.inference import InputError
from tests.conftest import build_tiny, single_models, snapshot, tiny_model

CHANNELS = ["FLAIR", "T1w", "T1gd", "T2w"]


def _variants() -> list[str]:
    """One registered name per architecture and set of constructor arguments (UNETR's two patch embeddings, the
    U-Nets with and without residual units, ...): a new family or variant is tested without being listed here."""
    seen: dict[tuple, str] = {}
    for name in single_models():
        cfg = get_config(name)
        seen.setdefault((cfg.architecture, tuple(sorted(cfg.model_args))), name)
    return sorted(seen.values())


def _tiny(name: str) -> torch.nn.Module:
    """The model at its test size; a 32^3 roi where the network is not built for one and runs on it (Swin UNETR
    needs 64^3: its instance norms need more than one voxel at the bottleneck)."""
    model = build_tiny(name).eval()
    cfg = model.pretrained_cfg
    if cfg.roi_arg is None:
        for side in (32, 64):
            try:
                with torch.no_grad():
                    model(torch.zeros(1, len(cfg.contract.in_channels), side, side, side))
            except (RuntimeError, ValueError):
                continue
            model.pretrained_cfg = cfg.replace(contract=dataclasses.replace(cfg.contract, roi_size=(side,) * 3))
            break
    return model


@pytest.mark.parametrize("name", _variants())
def test_onnx_export_matches_the_model_and_carries_its_contract(name, tmp_path):
    model = _tiny(name)
    report = export_model(model, tmp_path / f"{name}.onnx")
    assert [c.input for c in report.checks] == ["random", "synthetic case"]
    for check in report.checks:  # within 1e-4, or float32 rounding with the numbers that show it
        assert check.max_abs_diff <= TOLERANCE or "float32 rounding" in check.reason, str(check)
    exported = load_exported(report.path)
    assert exported.backend == "onnxruntime"
    assert exported.pretrained_cfg.contract == model.pretrained_cfg.contract
    assert exported.pretrained_cfg.name == name
    # Any batch size: three windows at once, against the eager model in float64
    x = torch.randn(3, len(model.pretrained_cfg.contract.in_channels), *report.roi_size)
    with torch.no_grad():
        got, eager = exported(x), model(x)
        reference = model.double()(x.double())
    assert got.shape == eager.shape
    assert (got.double() - reference).abs().max() <= max(TOLERANCE, 2 * (eager.double() - reference).abs().max())


@pytest.mark.parametrize("name", sorted({get_config(n).architecture: n for n in _variants()}.values()))
def test_torch_export_program_matches_the_model(name, tmp_path):
    model = _tiny(name)
    report = export_model(model, tmp_path / f"{name}.pt2")
    assert report.format == "torch-export"
    assert all(c.max_abs_diff <= TOLERANCE for c in report.checks), str(report)
    exported = load_exported(report.path)
    assert exported.backend == "torch"
    assert exported.pretrained_cfg.contract == model.pretrained_cfg.contract
    x = torch.randn(2, len(model.pretrained_cfg.contract.in_channels), *report.roi_size)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=0, atol=TOLERANCE)


def test_export_leaves_the_model_as_it_was(tmp_path):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(model, tmp_path / "m.pt2")
    assert model.channels_last_on_cpu  # the CPU speed-ups are back on
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all("forward" not in vars(m) for m in model.modules())  # no patched forward left behind


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A synthetic BraTS-like case on an oblique grid, as a 4-D NIfTI."""
    from medseg_zoo.data.synthetic import make_case

    image, _, affine = make_case((40, 44, 36), seed=5)
    path = tmp_path_factory.mktemp("case") / "case.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), path)
    return path


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_whole_case_prediction_on_the_export_matches_torch(case, tmp_path, suffix):
    model = tiny_model()
    path = export_model(model, tmp_path / f"m{suffix}").path
    torch_labels = mz.predict(model, case, tmp_path / "torch.nii.gz", channels=CHANNELS, amp=False)
    exported = mz.predict(str(path), case, tmp_path / "exported.nii.gz", channels=CHANNELS)
    a, b = np.asarray(torch_labels.dataobj), np.asarray(exported.dataobj)
    assert (a == b).mean() >= 0.999
    source = nib.load(case)
    written = nib.load(tmp_path / "exported.nii.gz")
    assert written.shape == source.shape[:3]
    np.testing.assert_array_equal(written.affine, source.affine)
    assert written.header.get_best_affine().tolist() == source.header.get_best_affine().tolist()


def test_a_roi_the_network_cannot_take_names_the_nearest(tmp_path):
    with pytest.raises(ExportError, match=r"roi 33x32x30 .* multiple of 4.* nearest roi it takes is 32x32x32"):
        export_model(tiny_model(), tmp_path / "m.onnx", roi_size=(33, 32, 30))
    with pytest.raises(ExportError, match=r"multiple of 32.* nearest roi it takes is 32x64x96"):
        export_model(_tiny("swin_unetr_btcv"), tmp_path / "m.onnx", roi_size=(40, 64, 100))
    assert not any(tmp_path.iterdir())


def test_an_export_that_differs_from_the_model_fails_and_writes_nothing(tmp_path, monkeypatch):
    import medseg_zoo.export as export

    real = export.load_exported

    def off_by_a_little(path, **kw):
        model = real(path, **kw)
        run = model.forward
        model.forward = lambda x: run(x) + torch.tensor([0.0, 0.0, 1e-2]).reshape(1, 3, 1, 1, 1)
        return model

    monkeypatch.setattr(export, "load_exported", off_by_a_little)
    with pytest.raises(ExportError, match=r"differs from the eager model on the random input.* at output ET"):
        export_model(tiny_model(), tmp_path / "m.onnx")
    assert not any(tmp_path.iterdir())  # not even a temporary file


def _rewrite_metadata(path, change):
    proto = onnx.load(path)
    entries = {p.key: p.value for p in proto.metadata_props}
    del proto.metadata_props[:]
    for key, value in change(entries).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, path)


def test_files_without_the_zoos_metadata_or_from_a_newer_format_are_refused(tmp_path):
    path = export_model(tiny_model(), tmp_path / "m.onnx").path
    newer = tmp_path / "newer.onnx"
    newer.write_bytes(path.read_bytes())
    _rewrite_metadata(newer, lambda m: {"medseg_zoo": json.dumps({**json.loads(m["medseg_zoo"]), "format_version": 2})})
    with pytest.raises(ExportError, match=r"newer medseg-zoo .*version 2; this version reads up to 1"):
        load_exported(newer)
    _rewrite_metadata(path, lambda m: {})
    with pytest.raises(ExportError, match="no medseg-zoo metadata"):
        load_exported(path)
    with pytest.raises(ExportError, match="no medseg-zoo metadata"):
        mz.Predictor(str(path))
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(ExportError, match=r"not a torch\.export program"):
        load_exported(tmp_path / "junk.pt2")
    with pytest.raises(ExportError, match="file not found"):
        load_exported(tmp_path / "missing.onnx")


def test_wrong_channels_are_refused_before_any_inference(case, tmp_path, monkeypatch):
    exported = load_exported(export_model(tiny_model(), tmp_path / "m.onnx").path)
    ran = []
    monkeypatch.setattr(exported._runner, "run", lambda *a, **k: ran.append(1))
    affine = np.eye(4)
    with pytest.raises(InputError, match="4"):
        mz.predict(exported, (np.ones((3, 20, 20, 20), np.float32), affine))
    with pytest.raises(ValueError, match=r"expects windows \(B, 4, 16, 16, 16\).*got \(1, 3, 16, 16, 16\)"):
        exported(torch.zeros(1, 3, 16, 16, 16))
    assert not ran


def test_backend_and_precision_are_checked(tmp_path):
    model = tiny_model()
    path = export_model(model, tmp_path / "m.onnx").path
    with pytest.raises(InvalidArgumentError, match="export the model first"):
        mz.Predictor(model, backend="onnxruntime")
    with pytest.raises(ExportError, match="runs on the 'onnxruntime' backend, not 'torch'"):
        mz.Predictor(str(path), backend="torch")
    with pytest.raises(InvalidArgumentError, match="float32 it was exported in"):
        mz.Predictor(str(path), amp="bf16")
    assert isinstance(mz.Predictor(str(path), backend="onnxruntime").models[0], ExportedModel)


def test_outputs_that_must_not_be_written_are_refused(tmp_path):
    model = tiny_model()
    (tmp_path / "taken.onnx").write_bytes(b"mine")
    with pytest.raises(OutputError, match="exists; pass overwrite=True"):
        export_model(model, tmp_path / "taken.onnx")
    assert (tmp_path / "taken.onnx").read_bytes() == b"mine"
    with pytest.raises(OutputError, match=r"ending in \.onnx or \.pt2"):
        export_model(model, tmp_path / "m.bin")
    with pytest.raises(OutputError, match=r"ending in \.pt2"):
        export_model(model, tmp_path / "m.onnx", format="torch-export")
    for name in ("taken.onnx", "taken.pt2"):  # a user's file is kept even with overwrite
        (tmp_path / name).write_bytes(b"mine")
        with pytest.raises(OutputError, match="holds no medseg-zoo metadata: --overwrite replaces only a file"):
            export_model(model, tmp_path / name, overwrite=True)
        assert (tmp_path / name).read_bytes() == b"mine"
    (tmp_path / "ours.onnx").write_bytes(export_model(model, tmp_path / "first.onnx").path.read_bytes())
    assert (
        export_model(tiny_model(seed=3), tmp_path / "ours.onnx", overwrite=True).path.read_bytes()
        != (tmp_path / "first.onnx").read_bytes()
    )


def test_cli_exports_a_checkpoint_and_predicts_with_onnxruntime(tiny_checkpoint, case, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "synthetic case: max |exported - eager|" in printed
    before = snapshot(tiny_checkpoint)
    seg = tmp_path / "seg.nii.gz"
    command = ["predict", "--checkpoint", str(out), "--backend", "onnxruntime", "-i", str(case), "-o", str(seg)]
    assert main([*command, "--channels", ",".join(CHANNELS)]) == 0
    expected = mz.predict(mz.from_pretrained(tiny_checkpoint), case, channels=CHANNELS, amp=False)
    assert (np.asarray(nib.load(seg).dataobj) == np.asarray(expected.dataobj)).mean() >= 0.999
    assert snapshot(tiny_checkpoint) == before
    # the output may not be the checkpoint's own file, nor an existing file without --overwrite
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "-m", "swin_unetr_brats21", "--pretrained", "-o", str(tmp_path / "e.onnx")]) == 2
    assert "ensemble; export each member" in capsys.readouterr().err


def test_evaluate_scores_an_exported_file_as_its_checkpoint(tiny_data, tiny_checkpoint, tmp_path):
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "-o", str(out)]) == 0
    means = {}
    for source, amp in ((out, "auto"), (tiny_checkpoint, "off")):  # an exported file has no run: every case
        table = tmp_path / f"{source.name}.csv"
        argv = ["evaluate", "--checkpoint", str(source), "--data", str(tiny_data), "--amp", amp, "--split", "all"]
        assert main([*argv, "--output", str(table)]) == 0
        rows = list(csv.DictReader(table.open()))
        assert len(rows) == len(mz.data.discover(tiny_data).cases) + 1
        means[source] = {k: float(v) for k, v in rows[-1].items() if k.startswith("dice_")}
    for key, value in means[tiny_checkpoint].items():  # labels >= 99.9 % equal: Dice within a few thousandths
        assert means[out][key] == pytest.approx(value, abs=5e-3), key
