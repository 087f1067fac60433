"""DICOM in and out, on series the tests write themselves: exact geometry whatever the orientation, numbering or
file names; refusals naming the file and the value; DICOM SEG and statistics written and read back."""

from __future__ import annotations

import json
import os

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless, generate_uid

import medseg_zoo as mz
from medseg_zoo.cli import main
from medseg_zoo.data.synthetic import make_case
from medseg_zoo.errors import OutputError
from medseg_zoo.inference import InputError
from medseg_zoo.inference.dicom import read_dicom_seg, read_series
from medseg_zoo.inference.marker import written_by_zoo
from tests.conftest import snapshot, tiny_model
from tests.inference.dicom_series import write_series

CHANNELS = ["FLAIR", "T1w", "T1gd", "T2w"]
SHAPE = (24, 20, 12)


def _affine(kind: str) -> np.ndarray:
    if kind == "ras":
        return np.diag([1.0, 1.0, 1.0, 1.0])
    if kind == "lps":  # BraTS's stored orientation
        return np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    if kind == "anisotropic":
        return np.diag([0.8, 0.8, 3.0, 1.0]) + np.array([[0, 0, 0, -10], [0, 0, 0, 5], [0, 0, 0, 20], [0, 0, 0, 0]])
    # oblique: rotated about two axes, slices stepping against the normal's direction
    a, b = np.radians(17), np.radians(-9)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    out = np.eye(4)
    out[:3, :3] = rz @ rx @ np.diag([1.1, 0.9, -2.5])
    out[:3, 3] = [30.0, -12.5, 7.25]
    return out


def _volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2000, size=SHAPE).astype(np.float32)


def assert_same_voxels(data_a, affine_a, data_b, affine_b, tol_mm: float = 1e-4) -> None:
    """Both volumes put the same values at the same places: b's grid is a's with axes permuted or flipped,
    voxel centres within ``tol_mm``."""
    to_b = np.linalg.inv(affine_b) @ affine_a
    exact = np.round(to_b)
    assert np.abs(affine_b @ exact - affine_a).max() <= tol_mm, "the grids differ by more than the tolerance"
    index = np.indices(data_a.shape).reshape(3, -1)
    in_b = (exact[:3, :3] @ index + exact[:3, 3:]).astype(int)
    np.testing.assert_array_equal(data_b[tuple(in_b)].reshape(data_a.shape), data_a)


@pytest.mark.parametrize("kind", ["ras", "lps", "anisotropic", "oblique"])
def test_geometry_round_trip(tmp_path, kind):
    data, affine = _volume(), _affine(kind)
    write_series(tmp_path / "s", data, affine)
    series = read_series(tmp_path / "s")
    assert_same_voxels(data, affine, series.data, series.affine)


def test_order_comes_from_positions_not_numbers_or_names(tmp_path):
    data, affine = _volume(1), _affine("oblique")
    names = [f"{n:03d}.dcm" for n in np.random.default_rng(0).permutation(SHAPE[2])]
    write_series(tmp_path / "s", data, affine, reverse_instance_numbers=True, names=names)
    series = read_series(tmp_path / "s")
    assert_same_voxels(data, affine, series.data, series.affine)
    depth = [
        np.dot([float(v) for v in ds.ImagePositionPatient], np.cross(*np.reshape(ds.ImageOrientationPatient, (2, 3))))
        for ds in series.datasets
    ]
    assert np.all(np.diff(depth) > 0)


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    data = np.round(_volume(2) * 2.5) - 1024
    write_series(tmp_path / "s", data, _affine("ras"), slope=2.5, intercept=-1024)
    series = read_series(tmp_path / "s")
    np.testing.assert_allclose(series.data, data, atol=1.25)  # stored as int16 steps of the slope


def test_compressed_transfer_syntax(tmp_path):
    data, affine = _volume(3), _affine("lps")
    for path in write_series(tmp_path / "s", data, affine):
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    assert pydicom.dcmread(next((tmp_path / "s").iterdir())).file_meta.TransferSyntaxUID == RLELossless
    series = read_series(tmp_path / "s")
    assert_same_voxels(data, affine, series.data, series.affine)


def test_missing_slice_is_refused_naming_the_files(tmp_path):
    write_series(tmp_path / "s", _volume(), _affine("ras"), drop=5)
    with pytest.raises(InputError, match=r"IM0006\.dcm: 1 slice\(s\) missing between IM0004\.dcm and IM0006\.dcm"):
        read_series(tmp_path / "s")


def test_gantry_tilt_is_refused(tmp_path):
    write_series(tmp_path / "s", _volume(), _affine("ras"), tilt_mm=0.2)
    with pytest.raises(InputError, match=r"degrees off the slice normal .*gantry tilt"):
        read_series(tmp_path / "s")


def test_uneven_spacing_and_mixed_sizes_are_refused(tmp_path):
    paths = write_series(tmp_path / "s", _volume(), _affine("ras"))
    ds = pydicom.dcmread(paths[4])
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.4]
    ds.save_as(paths[4])
    with pytest.raises(InputError, match=r"uneven spacing between IM000[34]\.dcm and IM000[45]\.dcm"):
        read_series(tmp_path / "s")
    paths = write_series(tmp_path / "t", _volume(), _affine("ras"))
    ds = pydicom.dcmread(paths[2])
    ds.Rows, ds.PixelData = 10, np.zeros((10, SHAPE[0]), np.int16).tobytes()
    ds.save_as(paths[2])
    with pytest.raises(InputError, match=r"IM0002\.dcm: 10x24 pixels where IM0000\.dcm has 20x24"):
        read_series(tmp_path / "t")


def test_two_series_in_one_folder(tmp_path):
    first, second = generate_uid(), generate_uid()
    write_series(tmp_path / "s", _volume(4), _affine("ras"), series_uid=first, description="axial")
    write_series(tmp_path / "s", _volume(5), _affine("lps"), series_uid=second, names=[f"b{k}.dcm" for k in range(12)])
    with pytest.raises(InputError, match=rf"(?s)holds 2 series; choose one with --series-uid.*{first}.*axial"):
        read_series(tmp_path / "s")
    chosen = read_series(tmp_path / "s", series_uid=second)
    assert_same_voxels(_volume(5), _affine("lps"), chosen.data, chosen.affine)
    with pytest.raises(InputError, match=r"no series 1\.2\.3"):
        read_series(tmp_path / "s", series_uid="1.2.3")


@pytest.fixture(scope="module")
def brats_series(tmp_path_factory):
    """One synthetic BraTS-like case as four series (one per channel) of one study, on an oblique grid."""
    root = tmp_path_factory.mktemp("dicom") / "case7"
    image, _, affine = make_case((36, 40, 28), seed=5)
    study = generate_uid()
    for i, channel in enumerate(CHANNELS):
        write_series(root / channel, image[..., i].astype(np.float32), affine, study_uid=study, description=channel)
    return root


def test_dicom_in_dicom_seg_out(brats_series, tmp_path):
    model = tiny_model()
    inputs = {c: brats_series / c for c in CHANNELS}
    labels = mz.predict(model, inputs, tmp_path / "seg.dcm", output_type="dicom-seg", amp=False)
    flair = read_series(brats_series / "FLAIR")
    # the same prediction as the same voxels and affine given as an array
    image = np.stack([read_series(brats_series / c).data for c in CHANNELS])
    expected = mz.predict(model, (image, flair.affine), amp=False)
    np.testing.assert_array_equal(np.asarray(labels.dataobj), np.asarray(expected.dataobj))
    np.testing.assert_array_equal(labels.affine, flair.affine)
    # read back with highdicom: the same voxels, referencing the FLAIR series, one named segment per structure
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == flair.uid
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["edema", "non-enhancing tumour", "enhancing tumour"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "79654002"  # SNOMED CT Edema
    back = read_dicom_seg(tmp_path / "seg.dcm", flair, {1: "edema", 2: "ntc", 3: "et"})
    np.testing.assert_array_equal(back, np.asarray(labels.dataobj))
    # a second prediction replaces the Segmentation medseg-zoo wrote, never another file
    assert written_by_zoo(tmp_path / "seg.dcm")
    mz.predict(model, inputs, tmp_path / "seg.dcm", output_type="dicom-seg", amp=False)
    pydicom.dcmread(brats_series / "FLAIR" / sorted(os.listdir(brats_series / "FLAIR"))[0]).save_as(tmp_path / "ct.dcm")
    with pytest.raises(OutputError, match=r"ct.dcm exists and was not written by medseg-zoo"):
        mz.predict(model, inputs, tmp_path / "ct.dcm", output_type="dicom-seg", amp=False)


def test_statistics_beside_the_output(tmp_path):
    image, _, affine = make_case((36, 40, 28), seed=6)
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "case.nii.gz")
    out = mz.predict(
        tiny_model(), tmp_path / "case.nii.gz", tmp_path / "seg.nii.gz", channels=CHANNELS, statistics=True, amp=False
    )
    labels = np.asarray(out.dataobj)
    report = json.loads((tmp_path / "seg_statistics.json").read_text())
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    assert report["voxel_volume_ml"] == pytest.approx(voxel_ml)
    assert "null intensity statistics" in report["empty_policy"]
    data = nib.load(tmp_path / "case.nii.gz").get_fdata()
    for value, name in [(1, "edema"), (2, "non-enhancing tumour"), (3, "enhancing tumour")]:
        entry, mask = report["structures"][name], labels == value
        assert entry["voxels"] == mask.sum() and entry["volume_ml"] == pytest.approx(mask.sum() * voxel_ml)
        if mask.any():
            assert entry["intensity"]["T1gd"]["mean"] == pytest.approx(data[..., 2][mask].mean())
            assert entry["intensity"]["FLAIR"]["max"] == data[..., 0][mask].max()
        else:
            assert entry["intensity"] is None
    assert report["regions"]["WT"]["voxels"] == np.isin(labels, [1, 2, 3]).sum()


def test_dicom_seg_requests_that_cannot_be_met_are_refused_before_any_work(brats_series, tmp_path):
    image, _, affine = make_case((20, 20, 20), seed=6)
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "case.nii.gz")
    model = tiny_model()
    with pytest.raises(InputError, match="references the DICOM series it segments"):
        mz.predict(model, tmp_path / "case.nii.gz", tmp_path / "seg.dcm", channels=CHANNELS, output_type="dicom-seg")
    with pytest.raises(OutputError, match=r"ending in \.dcm"):
        mz.predict(model, {c: brats_series / c for c in CHANNELS}, tmp_path / "seg.nii.gz", output_type="dicom-seg")
    before = snapshot(brats_series)
    with pytest.raises(OutputError, match="input series"):
        mz.predict(model, {c: brats_series / c for c in CHANNELS}, brats_series / "FLAIR" / "seg.nii.gz")
    with pytest.raises(ValueError, match="describe labels"):
        mz.predict(
            model, {c: brats_series / c for c in CHANNELS}, tmp_path / "p.nii.gz", kind="probabilities", statistics=True
        )
    with pytest.raises(InputError, match="a DICOM series is one channel; the model reads 4"):
        mz.predict(model, brats_series / "FLAIR")
    assert snapshot(brats_series) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz"]


def test_cli_series_per_channel_to_dicom_seg_and_statistics(brats_series, tmp_path, capsys):
    checkpoint = mz.save_pretrained(tiny_model(), tmp_path / "ck")
    channels = [item for c in CHANNELS for item in ("--input", f"{c}={brats_series / c}")]
    out = tmp_path / "out"
    common = ["predict", "--checkpoint", str(checkpoint), *channels, "--amp", "off", "-o", str(out)]
    assert main([*common, "--output-type", "dicom-seg", "--statistics"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["case7.dcm", "case7_statistics.json"]
    assert hd.seg.segread(out / "case7.dcm").SeriesDescription.startswith("medseg-zoo")


def test_cli_one_channel_model_chooses_a_series(tmp_path, capsys):
    first, second = generate_uid(), generate_uid()
    write_series(tmp_path / "s", _volume(4), _affine("ras"), series_uid=first)
    write_series(tmp_path / "s", _volume(5), _affine("lps"), series_uid=second, names=[f"b{k}.dcm" for k in range(12)])
    checkpoint = mz.save_pretrained(tiny_model(in_channels=["FLAIR"]), tmp_path / "ck")
    common = ["predict", "--checkpoint", str(checkpoint), "-i", str(tmp_path / "s"), "-o", str(tmp_path / "seg.nii.gz")]
    assert main(common) == 1
    assert "holds 2 series; choose one with --series-uid" in capsys.readouterr().err
    assert main([*common, "--series-uid", second]) == 0
    written = nib.load(tmp_path / "seg.nii.gz")
    series = read_series(tmp_path / "s", series_uid=second)
    assert written.shape == series.data.shape
    np.testing.assert_array_equal(written.affine, series.affine)
