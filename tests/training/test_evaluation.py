"""Evaluation in the challenges' language: BraTS lesion-wise metrics equal to panoptica called as brats-evaluation
calls it; prediction files scored without a model, with the model path's checks; a results CSV without empty cells
and a sidecar that says what the numbers mean."""

from __future__ import annotations

import csv
import json
import math
import sys

import nibabel as nib
import numpy as np
import pytest

from medseg_zoo.cli import main
from medseg_zoo.data import DataCheckError, discover, make_dataset
from medseg_zoo.errors import MissingExtraError
from medseg_zoo.training import evaluate
from medseg_zoo.transforms.labels import scheme_from_names

# brats-evaluation's "gli" configuration with MSD Task01's label values (1 edema, 2 non-enhancing, 3 enhancing):
# the reference the zoo's numbers are compared with, written here independently of the zoo's own copy.
REFERENCE_CONFIG = """!Panoptica_Evaluator
decision_metric: null
decision_threshold: null
edge_case_handler: !EdgeCaseHandler
  empty_list_std: !EdgeCaseResult NAN
  listmetric_zeroTP_handling:
    !Metric DSC: !MetricZeroTPEdgeCaseHandling {empty_prediction_result: !EdgeCaseResult ZERO,
      empty_reference_result: !EdgeCaseResult ZERO, no_instances_result: !EdgeCaseResult NAN,
      normal: !EdgeCaseResult ZERO}
    !Metric NSD: !MetricZeroTPEdgeCaseHandling {empty_prediction_result: !EdgeCaseResult ZERO,
      empty_reference_result: !EdgeCaseResult ZERO, no_instances_result: !EdgeCaseResult NAN,
      normal: !EdgeCaseResult ZERO}
    !Metric HD95: !MetricZeroTPEdgeCaseHandling {empty_prediction_result: !EdgeCaseResult INF,
      empty_reference_result: !EdgeCaseResult INF, no_instances_result: !EdgeCaseResult NAN,
      normal: !EdgeCaseResult INF}
expected_input: !InputType SEMANTIC
global_metrics: [!Metric DSC,!Metric NSD, !Metric HD95]
instance_approximator: !ConnectedComponentsInstanceApproximator {cca_backend: null}
instance_matcher: !MaxBipartiteMatching {matching_metric: !Metric DSC,
  matching_threshold: 0.000001}
instance_metrics: [!Metric DSC, !Metric NSD, !Metric HD95]
log_times: false
save_group_times: false
segmentation_class_groups: !SegmentationClassGroups
  groups:
    tc: !LabelMergeGroup
      single_instance: false
      value_labels: [2, 3]
    wt: !LabelMergeGroup
      single_instance: false
      value_labels: [1, 2, 3]
    et: !LabelGroup
      single_instance: false
      value_labels: [3]
verbose: false
"""


def _perturbed(label: np.ndarray, seed: int) -> np.ndarray:
    """A plausible prediction: the label shifted by a voxel, one lesion's enhancing part dropped, a false positive."""
    rng = np.random.default_rng(seed)
    pred = np.roll(label, shift=tuple(rng.integers(-1, 2, size=3)), axis=(0, 1, 2))
    if seed % 2:
        pred[pred == 3] = 2
    corner = tuple(slice(int(s * 0.1), int(s * 0.1) + 3) for s in label.shape)
    pred[corner] = 1
    return pred.astype(np.uint8)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Four synthetic cases (one of them 1 x 1 x 2 mm) and prediction files for them."""
    root = make_dataset(tmp_path_factory.mktemp("brats") / "Task01", n_cases=4, shape=(40, 40, 32), seed=3)
    folder = root.parent / "predictions"
    folder.mkdir()
    for i, case in enumerate(discover(root).cases):
        label = nib.load(case.label)
        data = np.asarray(label.dataobj)
        nib.save(nib.Nifti1Image(_perturbed(data, i), label.affine, label.header), folder / f"{case.name}.nii.gz")
    return root, folder


def test_brats_metrics_equal_panoptica_called_as_brats_evaluation_does(scored, tmp_path):
    from panoptica import Panoptica_Evaluator

    root, folder = scored
    dataset = discover(root)
    result = evaluate(folder, dataset.cases, dataset.scheme, metrics="brats")
    (tmp_path / "gli.yaml").write_text(REFERENCE_CONFIG)
    reference = Panoptica_Evaluator.load_from_config(tmp_path / "gli.yaml")
    for case, row in zip(dataset.cases, result.cases, strict=True):
        groups = {
            k: r.to_dict(True)
            # nibabel images, not paths: with SimpleITK installed panoptica reads paths with it and pairs the (z, y, x)
            # array with the (x, y, z) spacing, which moves the HD95 of anisotropic cases (panoptica 2.1.7)
            for k, r in reference.evaluate(nib.load(folder / f"{case.name}.nii.gz"), nib.load(case.label)).items()
        }
        for region in ("TC", "WT", "ET"):
            expected = groups[region.lower()]
            for ours, theirs in (
                ("lesion_dice", "sq_dsc"),
                ("lesion_nsd", "sq_nsd"),
                ("lesion_hd95", "sq_hd95"),
                ("dice", "global_bin_dsc"),
                ("nsd", "global_bin_nsd"),
                ("tp", "tp"),
                ("fp", "fp"),
                ("fn", "fn"),
            ):
                value, want = row[f"{ours}_{region}"], expected[theirs]
                assert value == pytest.approx(want, rel=1e-12, nan_ok=True), (case.name, region, ours)
            hd95 = expected["global_bin_hd95"]
            assert row[f"hd95_{region}"] == pytest.approx(373.0 if math.isinf(hd95) else hd95, rel=1e-12)
    # panoptica's global Dice is the default metrics' Dice
    default = evaluate(folder, dataset.cases, dataset.scheme)
    for ours, theirs in zip(default.cases, result.cases, strict=True):
        for region in ("TC", "WT", "ET"):
            assert ours[f"dice_{region}"] == pytest.approx(theirs[f"dice_{region}"], abs=1e-6)


def test_lesion_wise_and_global_differ_when_a_lesion_is_missed_and_one_is_invented(tmp_path):
    root = make_dataset(tmp_path / "Task01", n_cases=1, shape=(40, 40, 32), seed=1)
    case = discover(root).cases[0]
    label = nib.load(case.label)
    truth = np.zeros(label.shape, np.uint8)
    truth[4:12, 4:12, 4:12] = 1  # lesion A (edema)
    truth[6:10, 6:10, 6:10] = 3  # with an enhancing core
    truth[26:34, 26:34, 18:26] = 1  # lesion B (edema only)
    nib.save(nib.Nifti1Image(truth, label.affine, label.header), case.label)
    pred = truth.copy()
    pred[26:34, 26:34, 18:26] = 0  # B missed
    pred[30:34, 2:6, 2:6] = 1  # a false-positive lesion
    (tmp_path / "pred").mkdir()
    nib.save(nib.Nifti1Image(pred, label.affine, label.header), tmp_path / "pred" / f"{case.name}.nii.gz")
    row = evaluate(tmp_path / "pred", [case], discover(root).scheme, metrics="brats").cases[0]
    assert (row["tp_WT"], row["fp_WT"], row["fn_WT"]) == (1, 1, 1)
    assert row["lesion_dice_WT"] == pytest.approx(1.0)  # the matched lesion is perfect
    assert row["dice_WT"] == pytest.approx(2 * 512 / (512 + 64 + 1024))  # globally: B missed, 64 voxels invented
    assert row["lesion_dice_ET"] == row["dice_ET"] == pytest.approx(1.0)


def test_predictions_are_checked_before_anything_is_scored(scored, tmp_path):
    root, _ = scored
    dataset = discover(root)
    bad = tmp_path / "bad"
    bad.mkdir()
    first, second, third = dataset.cases[:3]
    label = nib.load(first.label)
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[:-1], label.affine), bad / f"{first.name}.nii.gz")
    values = np.asarray(nib.load(second.label).dataobj).copy()
    values[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(values, nib.load(second.label).affine), bad / f"{second.name}.nii.gz")
    with pytest.raises(DataCheckError) as error:
        evaluate(bad, dataset.cases[:3], dataset.scheme)
    message = str(error.value)
    assert f"{first.name}.nii.gz: grid (39, 40, 32)" in message and "differs from its label" in message
    assert f"{second.name}.nii.gz: label values [7] are not in scheme 'msd_task01'" in message
    assert f"{third.name}: no prediction" in message


def test_brats_metrics_need_regions_and_panoptica(scored, monkeypatch):
    root, folder = scored
    dataset = discover(root)
    classes = scheme_from_names(["background", "edema", "core", "enhancing"], name="classes")
    with pytest.raises(ValueError, match=r"label scheme 'classes' .* has classes background, edema, core, enhancing"):
        evaluate(folder, dataset.cases, classes, metrics="brats")
    monkeypatch.setitem(sys.modules, "panoptica", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'medseg-zoo\[brats\]'"):
        evaluate(folder, dataset.cases, dataset.scheme, metrics="brats")


def test_cases_must_be_cases_and_a_scheme_may_be_named(scored):
    root, folder = scored
    dataset = discover(root)
    with pytest.raises(
        TypeError, match=r"cases must be a data set's cases \(discover\(folder\).cases\), got PosixPath"
    ):
        evaluate(folder, root, dataset.scheme)
    assert evaluate(folder, dataset.cases, "msd_task01").cases == evaluate(folder, dataset.cases, dataset.scheme).cases


def test_cli_scores_prediction_files_into_a_csv_without_empty_cells(scored, tmp_path, capsys, monkeypatch):
    root, folder = scored
    out = tmp_path / "brats.csv"
    command = ["evaluate", "--predictions", str(folder), "--data", str(root), "--metrics", "brats"]
    assert main([*command, "--output", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows][-1] == "mean" and len(rows) == 5
    assert all(value != "" for row in rows for value in row.values())
    assert {"lesion_dice_TC", "lesion_hd95_ET", "nsd_WT", "fp_ET", "mean_lesion_dice"} <= set(rows[0])
    about = json.loads((tmp_path / "brats.json").read_text())
    assert about["metrics"] == "brats" and "373 mm" in about["empty_mask_policy"]
    first = discover(root).cases[0]
    assert about["spacing_mm"][first.name] == pytest.approx(list(nib.load(first.label).header.get_zooms()[:3]))
    # the default metrics' CSV: each case row has its own mean Dice and HD95, no empty cells either
    assert (
        main(["evaluate", "--predictions", str(folder), "--data", str(root), "--output", str(tmp_path / "d.csv")]) == 0
    )
    with open(tmp_path / "d.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(value != "" for row in rows for value in row.values())
    assert float(rows[0]["mean_dice"]) == pytest.approx(
        np.mean([float(rows[0][f"dice_{r}"]) for r in ("TC", "WT", "ET")])
    )
    assert "HD95 in mm" in capsys.readouterr().out
    # panoptica missing: one line naming the extra, exit status 2
    monkeypatch.setitem(sys.modules, "panoptica", None)
    assert main(command) == 2
    assert (
        capsys.readouterr().err.strip()
        == "medseg-zoo: error: BraTS metrics need panoptica: pip install 'medseg-zoo[brats]'"
    )


def test_a_models_written_predictions_score_as_the_model_does(tiny_data, tmp_path):
    from tests.conftest import tiny_model

    dataset = discover(tiny_data)
    model = tiny_model()
    direct = evaluate(model, dataset.cases, dataset.scheme, amp=False, predictions=tmp_path / "p")
    from_files = evaluate(tmp_path / "p", dataset.cases, dataset.scheme)
    assert from_files.cases == direct.cases


def test_an_existing_table_is_replaced_only_when_evaluate_wrote_it(scored, tmp_path, capsys, monkeypatch):
    root, folder = scored
    command = ["evaluate", "--predictions", str(folder), "--data", str(root)]
    calls = []
    monkeypatch.setattr("medseg_zoo.training.evaluate", lambda *a, **k: calls.append(a))
    mine = tmp_path / "mine.csv"
    mine.write_text("my,own,table\n")
    (tmp_path / "notes.json").write_text("{}")
    for target, overwrite in ((mine, []), (mine, ["--overwrite"]), (tmp_path / "notes.csv", ["--overwrite"])):
        assert main([*command, "--output", str(target), *overwrite]) == 2
        err = capsys.readouterr().err
        assert "exists" in err and ("--overwrite" in err if not overwrite else "not an evaluation table" in err)
    assert mine.read_text() == "my,own,table\n" and (tmp_path / "notes.json").read_text() == "{}"
    assert not calls  # refused before anything was evaluated
    monkeypatch.undo()

    ours = tmp_path / "scores.csv"
    assert main([*command, "--output", str(ours)]) == 0
    assert main([*command, "--output", str(ours)]) == 2  # kept without --overwrite
    assert main([*command, "--output", str(ours), "--overwrite"]) == 0
    ours.write_text(ours.read_text() + "a note of mine\n")  # changed since: the user's now
    assert main([*command, "--output", str(ours), "--overwrite"]) == 2
    assert ours.read_text().endswith("a note of mine\n")
