"""The data-set plan against nnU-Net v2's own fingerprint extractor and planner (nnunetv2, a test-only dependency),
on two small data sets in nnU-Net's raw layout: isotropic MRI-like (two channels, zero background) and anisotropic
CT-like (0.8 x 0.8 mm in plane, 3-5 mm slices)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medseg_zoo as mz
from medseg_zoo.data import discover
from medseg_zoo.data.synthetic import make_ct_dataset
from medseg_zoo.planning import compare_with_contract, plan, target_spacing

pytest.importorskip("nnunetv2")


def _body(shape, rng, radii=0.35):
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij"))
    centre = rng.uniform(-0.1, 0.1, size=3)[:, None, None, None]
    d = np.sqrt((((grid - centre) / np.array(radii)[:, None, None, None]) ** 2).sum(0))
    return d


def _write_raw(root: Path, kind: str) -> Path:
    """An nnU-Net raw data set: the synthetic CT set, or an MRI-like one of two channels with zero background."""
    if kind == "ct":
        return make_ct_dataset(root, n_cases=4, shape=(72, 72, 14), seed=1)
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    channels = {"0": "T1", "1": "T2"}
    for i in range(4):
        shape = (40, 44, 36)
        head = _body(shape, rng, radii=(0.6, 0.55, 0.5)) < 1
        lesion = _body(shape, rng, radii=(0.15, 0.15, 0.15)) < 1
        affine = np.eye(4)  # RAS, 1 mm: the stored axes are the zoo's planning axes
        for k in range(len(channels)):
            image = np.where(head, 400 + 300 * lesion + rng.normal(0, 20, shape), 0).astype(np.float32)
            nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case{i}_{k:04d}.nii.gz")
        nib.save(nib.Nifti1Image(lesion.astype(np.uint8), affine), root / "labelsTr" / f"case{i}.nii.gz")
    meta = {"channel_names": channels, "labels": {"background": 0, "lesion": 1}, "numTraining": 4,
            "file_ending": ".nii.gz"}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


_NNUNET = """
import json, sys
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, plan_experiment_dataset
dataset_id = int(sys.argv[1])
fingerprint = extract_fingerprint_dataset(dataset_id, num_processes=1, show_progress_bar=False, verbose=False)
plans, _ = plan_experiment_dataset(dataset_id)
print(json.dumps({"fingerprint": fingerprint, "plans": plans}, default=float))
"""


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Both data sets with nnU-Net's fingerprint and plans of each (run in a process of its own: nnunetv2 reads
    its folders from the environment when imported)."""
    base = tmp_path_factory.mktemp("nnunet")
    env = {
        **os.environ,
        "nnUNet_raw": str(base / "raw"),
        "nnUNet_preprocessed": str(base / "preprocessed"),
        "nnUNet_results": str(base / "results"),
    }
    out = {}
    for dataset_id, kind in ((501, "mri"), (502, "ct")):
        root = _write_raw(base / "raw" / f"Dataset{dataset_id}_{kind.upper()}", kind)
        done = subprocess.run(
            [sys.executable, "-c", _NNUNET, str(dataset_id)], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-2000:]
        out[kind] = (root, json.loads(done.stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.parametrize("kind", ["mri", "ct"])
def test_the_plan_agrees_with_nnunet(kind, references, tmp_path):
    root, reference = references[kind]
    ours = plan(discover(root), "unet", cache_dir=tmp_path, progress=False)
    theirs = reference["plans"]["configurations"]["3d_fullres"]
    back = reference["plans"]["transpose_backward"]
    # nnU-Net's arrays are SimpleITK's (z, y, x), transposed by transpose_forward; the zoo's are the RAS axes.
    their_spacing = np.array(theirs["spacing"])[back][::-1]
    np.testing.assert_allclose(ours.spacing, their_spacing, atol=1e-3)
    their_patch = np.array(theirs["patch_size"])[back][::-1]
    assert (np.abs(np.array(ours.roi_size) - their_patch) <= np.array(ours.divisible_by)).all(), (
        ours.roi_size,
        their_patch,
    )
    schemes, masks = theirs["normalization_schemes"], theirs["use_mask_for_norm"]
    if kind == "ct":
        assert schemes == ["CTNormalization"] and masks == [False]
        kind_, low, high, mean, std = ours.normalization.split(":")
        stats = reference["fingerprint"]["foreground_intensity_properties_per_channel"]["0"]
        assert kind_ == "clip_zscore" and not ours.use_nonzero_mask
        np.testing.assert_allclose(
            [float(low), float(high), float(mean), float(std)],
            [stats["percentile_00_5"], stats["percentile_99_5"], stats["mean"], stats["std"]],
            rtol=2e-2,
        )
    else:
        assert schemes == ["ZScoreNormalization"] * 2 and masks == [True, True]
        assert ours.normalization == "zscore_nonzero_channelwise" and ours.use_nonzero_mask
    fingerprint = reference["fingerprint"]
    np.testing.assert_allclose(
        ours.fingerprint["cases"][0]["relative_size_after_crop"],
        np.prod(fingerprint["shapes_after_crop"][0]) / np.prod(ours.fingerprint["cases"][0]["shape"]),
        rtol=1e-6,
    )


def test_anisotropic_axis_takes_its_10th_percentile_never_below_the_others():
    spacings = np.array([[0.8, 0.8, 3.0], [0.8, 0.8, 4.0], [0.8, 0.8, 4.5], [0.8, 0.8, 5.0]])
    shapes = np.array([[300, 300, 40]] * 4)
    spacing, why = target_spacing(spacings, shapes)
    np.testing.assert_allclose(spacing, [0.8, 0.8, np.percentile([3, 4, 4.5, 5], 10)])
    assert "anisotropic" in why
    iso, why = target_spacing(spacings, np.array([[300, 300, 200]] * 4))  # enough slices: the median stands
    np.testing.assert_allclose(iso, [0.8, 0.8, 4.25])
    assert "median" in why


def test_the_plan_reaches_predict_through_the_saved_model(references, tmp_path):
    root, _ = references["ct"]
    found = plan(discover(root), "unet", cache_dir=tmp_path, progress=False)
    model = mz.create_model("unet", in_channels=["CT"], out_channels=2, channels=(4, 8, 16), strides=(2, 2))
    model.pretrained_cfg = model.pretrained_cfg.replace(contract=found.contract(model.pretrained_cfg.contract))
    folder = mz.save_pretrained(model, tmp_path / "planned")
    contract = mz.from_pretrained(folder).pretrained_cfg.contract
    assert contract.spacing == found.spacing and contract.normalization == found.normalization
    assert contract.roi_size == found.roi_size


def test_a_pretrained_contract_is_compared_with_the_data(references, tmp_path):
    from medseg_zoo.data.fingerprint import fingerprint

    root, _ = references["ct"]
    dataset = discover(root)
    contract = mz.create_model("unet_brats").pretrained_cfg.contract  # MRI, 1.5 x 1.5 x 2 mm, four channels
    lines = compare_with_contract(fingerprint(dataset, cache_dir=tmp_path, progress=False), contract, dataset.channels)
    text = "\n".join(lines)
    assert "cases lie far from the model's spacing 1.5 x 1.5 x 2 mm" in text
    assert "(0.8 x 0.8 x 3 mm: 0.43x)" in text  # 0.8 x 0.8 x 5 mm is within a factor of 2
    assert "the data's channels (CT) are not the model's (FLAIR, T1w, T1gd, T2w)" in text
    assert "the data is CT (channels CT) and the model was trained on other modalities" in text
