import nibabel as nib
import numpy as np
import pytest
import torch

import medseg_zoo as mz
from medseg_zoo import InputError, Predictor
from medseg_zoo.errors import DeviceError, OutputError
from medseg_zoo.inference.marker import written_by_zoo
from tests.inference.conftest import echo_input, make_echo, nested_label_map, predict, write

AFFINES = {
    "RAS": np.diag([1.0, 1.0, 1.0, 1.0]),
    "LPS": np.array([[-1.0, 0, 0, 10], [0, -1.0, 0, 20], [0, 0, 1.0, -5], [0, 0, 0, 1]]),
    "anisotropic PSR": np.array([[0, 0, 1.2, -10], [-0.9, 0, 0, 20], [0, 2.5, 0, -15], [0, 0, 0, 1]]),
    "oblique": np.array(
        [[0.966, -0.259, 0, 3], [0.259, 0.966, 0, -4], [0, 0, 2.0, 7], [0, 0, 0, 1]]  # 15 degrees about S
    ),
}


@pytest.mark.parametrize("orientation", list(AFFINES))
def test_geometry_round_trip_is_exact(echo, tmp_path, orientation):
    affine = AFFINES[orientation]
    label = nested_label_map((40, 34, 20))
    source = write(tmp_path / "case.nii.gz", echo_input(label), affine, qform_code=1, sform_code=2)
    out = tmp_path / "pred" / "case_seg.nii.gz"
    img = predict(echo, source, out, amp=False)
    saved = nib.load(out)
    src = nib.load(source)
    assert saved.shape == src.shape[:3] == img.shape
    assert saved.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(saved.affine, src.affine)
    np.testing.assert_array_equal(saved.header.get_qform(), src.header.get_qform())
    assert (int(saved.header["qform_code"]), int(saved.header["sform_code"])) == (1, 2)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), label)  # reoriented and back, voxel for voxel


@pytest.mark.parametrize("orientation", list(AFFINES))
def test_resampling_round_trip_keeps_geometry_and_content(tmp_path, orientation):
    model = make_echo(spacing=(1.5, 1.5, 2.0))
    label = nested_label_map((48, 40, 24), seed=1)
    source = write(tmp_path / "case.nii.gz", echo_input(label), AFFINES[orientation])
    pred = np.asarray(predict(model, source, amp=False).dataobj)
    assert pred.shape == label.shape
    # Down to 1.5 x 1.5 x 2 mm and back: boundaries blur (the 178-voxel ET most), nothing shifts.
    for value, min_dice in ((1, 0.95), (2, 0.95), (3, 0.8)):
        a, b = pred >= value, label >= value
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > min_dice
    shift = np.argwhere(pred >= 1).mean(0) - np.argwhere(label >= 1).mean(0)
    assert np.abs(shift).max() < 0.2  # voxels


def test_an_existing_output_is_replaced_only_when_medseg_zoo_wrote_it(echo, tmp_path):
    label = nested_label_map((20, 18, 10))
    source = write(tmp_path / "case.nii.gz", echo_input(label), AFFINES["LPS"])
    out = tmp_path / "seg.nii.gz"
    predict(echo, source, out, amp=False)
    header = nib.load(out).header
    assert header.get_intent() == ("label", (), "medseg-zoo") and written_by_zoo(out)
    predict(echo, source, out, amp=False)  # a rerun replaces its own output
    theirs = write(tmp_path / "theirs.nii.gz", label.astype(np.uint8), AFFINES["LPS"])  # another tool's label map
    before = theirs.read_bytes()
    with pytest.raises(OutputError, match=r"output .*theirs.nii.gz exists and was not written by medseg-zoo"):
        predict(echo, source, theirs, amp=False)
    assert theirs.read_bytes() == before and not written_by_zoo(theirs)


def test_input_smaller_than_the_roi(echo, tmp_path):
    label = nested_label_map((12, 10, 6))
    source = write(tmp_path / "small.nii.gz", echo_input(label), AFFINES["RAS"])
    np.testing.assert_array_equal(np.asarray(predict(echo, source, amp=False).dataobj), label)


def test_per_channel_inputs_and_arrays(echo, tmp_path):
    label = nested_label_map((20, 20, 12))
    image = echo_input(label)
    paths = {
        name: write(tmp_path / f"{name}.nii.gz", image[..., i], AFFINES["LPS"])
        for i, name in enumerate(("FLAIR", "T1w", "T1gd", "T2w"))
    }
    shuffled = dict(reversed(list(paths.items())))  # order comes from the contract, not the mapping
    np.testing.assert_array_equal(np.asarray(predict(echo, shuffled, amp=False).dataobj), label)
    from_array = predict(echo, (torch.from_numpy(np.moveaxis(image, -1, 0)), AFFINES["LPS"]), amp=False)
    np.testing.assert_array_equal(np.asarray(from_array.dataobj), label)
    np.testing.assert_array_equal(from_array.affine, AFFINES["LPS"])


def test_kinds(echo, tmp_path):
    label = nested_label_map((20, 20, 12))
    source = write(tmp_path / "case.nii.gz", echo_input(label), AFFINES["RAS"])
    probs = predict(echo, source, kind="probabilities", amp=False)
    assert probs.shape == (20, 20, 12, 3) and probs.get_data_dtype() == np.float32
    regions = np.asarray(predict(echo, source, kind="regions", amp=False).dataobj)
    assert regions.shape == (20, 20, 12, 3) and regions.dtype == np.uint8
    np.testing.assert_array_equal(regions[..., 2], label == 3)
    with pytest.raises(ValueError, match="kind must be 'labels', 'probabilities' or 'regions', got 'masks'"):
        predict(echo, source, kind="masks")


def test_tta_and_ensembles(tmp_path):
    label = nested_label_map((24, 20, 16))
    source = write(tmp_path / "case.nii.gz", echo_input(label), AFFINES["RAS"])
    echo = make_echo()
    np.testing.assert_array_equal(np.asarray(predict(echo, source, tta=True, amp=False).dataobj), label)

    model = mz.create_model("unet_brats", channels=(4, 8), strides=(2,), num_res_units=1)
    model.pretrained_cfg = model.pretrained_cfg.replace(contract=echo.pretrained_cfg.contract)  # same preprocessing
    a = predict(model, source, kind="probabilities", amp=False).get_fdata()
    b = predict(echo, source, kind="probabilities", amp=False).get_fdata()
    both = predict([model, echo], source, kind="probabilities", amp=False).get_fdata()
    np.testing.assert_allclose(both, (a + b) / 2, atol=1e-5)


def test_ensemble_members_must_share_a_contract():
    with pytest.raises(ValueError, match="ensemble members must share a contract"):
        Predictor([make_echo(), make_echo(spacing=(1.0, 1.0, 1.0))])


def test_softmax_models_give_class_labels(tmp_path):
    model = mz.create_model(
        "unet", in_channels=["CT"], out_channels=["bg", "a", "b"], channels=(4, 8), strides=(2,), num_res_units=1
    )
    source = write(
        tmp_path / "ct.nii.gz", np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32), AFFINES["RAS"]
    )
    labels = np.asarray(predict(model, source, amp=False).dataobj)
    probs = predict(model, source, kind="probabilities", amp=False).get_fdata()
    np.testing.assert_array_equal(labels, probs.argmax(-1))  # no label scheme: class indices


def test_bf16_autocast_agrees_with_fp32(tmp_path):
    model = mz.create_model("unet_brats", channels=(4, 8), strides=(2,), num_res_units=1)
    source = write(
        tmp_path / "case.nii.gz",
        np.random.default_rng(0).normal(100, 20, size=(24, 24, 16, 4)).astype(np.float32),
        AFFINES["RAS"],
    )
    fp32 = predict(model, source, kind="probabilities", amp=False).get_fdata()
    bf16 = predict(model, source, kind="probabilities", amp=True).get_fdata()
    assert np.abs(fp32 - bf16).mean() < 0.01 and np.abs(fp32 - bf16).max() < 0.1


def _bad(tmp_path, name, data=None, raw=None):
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        write(path, data, np.eye(4))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: _bad(p, "nan.nii.gz", np.full((8, 8, 8, 4), np.nan, np.float32)),
            r"nan\.nii\.gz: 2048 NaN/inf voxel\(s\); expected finite intensities",
        ),
        (
            lambda p: _bad(p, "three.nii.gz", np.zeros((8, 8, 8, 3), np.float32)),
            r"three\.nii\.gz: image shape \(8, 8, 8, 3\) has 3 channels; expected a 4-D image \(X, Y, Z, 4\)",
        ),
        (
            lambda p: _bad(p, "flat.nii.gz", np.zeros((8, 8, 8), np.float32)),
            r"flat\.nii\.gz: image shape \(8, 8, 8\) has no channel axis; expected a 4-D image",
        ),
        (lambda p: _bad(p, "junk.nii.gz", raw=b"not a nifti file"), r"junk\.nii\.gz: cannot read the image"),
        (lambda p: p / "missing.nii.gz", r"missing\.nii\.gz: file not found"),
    ],
)
def test_bad_inputs_leave_no_output(echo, tmp_path, make, message):
    source = make(tmp_path)
    out = tmp_path / "out" / "seg.nii.gz"
    with pytest.raises(InputError, match=message):
        predict(echo, source, out)
    assert not out.exists() and not (out.parent.exists() and list(out.parent.iterdir()))


def test_truncated_file(echo, tmp_path):
    import gzip

    path = write(tmp_path / "case.nii.gz", np.ones((16, 16, 16, 4), np.float32), np.eye(4))
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(InputError, match=r"case\.nii\.gz: cannot read the image"):
        predict(echo, path)


def test_per_channel_errors(echo, tmp_path):
    a = write(tmp_path / "a.nii.gz", np.ones((8, 8, 8), np.float32), np.eye(4))
    b = write(tmp_path / "b.nii.gz", np.ones((8, 8, 6), np.float32), np.eye(4))
    with pytest.raises(InputError, match=r"missing \['T1gd', 'T2w'\], unexpected \['T1'\]; the model reads FLAIR, T1w"):
        predict(echo, {"FLAIR": a, "T1w": a, "T1": a})
    with pytest.raises(InputError, match=r"b\.nii\.gz: grid \(8, 8, 6\) differs from .*a\.nii\.gz \(8, 8, 8\)"):
        predict(echo, {"FLAIR": a, "T1w": a, "T1gd": a, "T2w": b})


def test_array_input_shape_error(echo):
    with pytest.raises(InputError, match=r"array input: shape \(3, 8, 8, 8\) .*expected \(4, X, Y, Z\) channels first"):
        predict(echo, (np.zeros((3, 8, 8, 8)), np.eye(4)))


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"overlap": 1.0}, ValueError, r"overlap must be a number in \[0, 1\), got 1.0"),
        ({"sw_batch_size": 0}, ValueError, r"sw_batch_size must be a positive integer, got 0"),
        ({"device": "gpu"}, DeviceError, r"unknown device 'gpu'.*expected auto, cpu, cuda or cuda:N"),
        ({"device": "cuda:7"}, DeviceError, r"device 'cuda:7' is not available: this machine has cpu and"),
        ({"amp": "fp8"}, DeviceError, r"unknown mixed-precision mode 'fp8'"),
    ],
)
def test_bad_options(echo, options, error, message):
    with pytest.raises(error, match=message):
        Predictor(echo, **options)


def test_model_grid_decisions_for_large_volumes(tmp_path, monkeypatch):
    from medseg_zoo.inference import predictor, sliding

    label = nested_label_map((40, 36, 60))
    source = write(tmp_path / "case.nii.gz", echo_input(label), AFFINES["LPS"])
    echo = make_echo()
    reference = np.asarray(predict(echo, source, amp=False).dataobj)
    monkeypatch.setattr(predictor, "PROBABILITY_BUDGET", 1)  # decide on the model grid, nearest back
    monkeypatch.setattr(sliding, "LARGE_BAND", 1)  # blend in float16
    np.testing.assert_array_equal(np.asarray(predict(echo, source, amp=False).dataobj), reference)
    regions = np.asarray(predict(echo, source, kind="regions", amp=False).dataobj)
    np.testing.assert_array_equal(regions[..., 1], label > 0)

    model = mz.create_model("unet", in_channels=4, out_channels=5, channels=(4, 8), strides=(2,), num_res_units=1)
    softmax = np.asarray(predict(model, source, amp=False).dataobj)  # model-grid argmax, float16 blending
    monkeypatch.undo()
    assert (softmax == np.asarray(predict(model, source, amp=False).dataobj)).mean() > 0.99
