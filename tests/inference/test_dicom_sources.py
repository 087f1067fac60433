"""DICOM series as they come from the field: anonymised (type-2 attributes missing or empty), enhanced multi-frame
CT and MR, several series in one folder. A DICOM Segmentation is written for each, and every refusal comes before
inference, naming the attribute and the file."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import medseg_zoo as mz
from medseg_zoo.inference import InputError, Predictor
from medseg_zoo.inference.dicom import SEG_SOURCE_TYPE_2, read_dicom_seg, read_series
from tests.conftest import snapshot, tiny_model
from tests.inference.dicom_series import write_enhanced, write_series
from tests.inference.test_dicom import _affine, _volume, assert_same_voxels

STRUCTURES = {1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"}


def _one_channel(name: str = "FLAIR"):
    return tiny_model(in_channels=[name])


def _edit(folder, change) -> None:
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_anonymised_series_gets_a_segmentation(tmp_path, how):
    write_series(tmp_path / "s", _volume(1), _affine("oblique"))

    def anonymise(ds) -> None:
        for key in SEG_SOURCE_TYPE_2:
            if how == "missing":
                delattr(ds, key) if key in ds else None
            else:
                setattr(ds, key, "")

    _edit(tmp_path / "s", anonymise)
    assert "PatientBirthDate" not in pydicom.dcmread(next((tmp_path / "s").iterdir())) or how == "empty"
    labels = mz.predict(_one_channel(), tmp_path / "s", tmp_path / "seg.dcm", output_type="dicom-seg", amp=False)
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    for key in SEG_SOURCE_TYPE_2:  # present, empty: what the standard allows for an unknown type-2 value
        assert key in seg and str(seg.get(key) or "") == ""
    back = read_dicom_seg(tmp_path / "seg.dcm", read_series(tmp_path / "s"), STRUCTURES)
    np.testing.assert_array_equal(back, np.asarray(labels.dataobj))


@pytest.mark.parametrize("key", ["FrameOfReferenceUID", "StudyInstanceUID"])
def test_a_missing_type_1_attribute_is_refused_before_inference(tmp_path, monkeypatch, key):
    paths = write_series(tmp_path / "s", _volume(2), _affine("ras"))
    ds = pydicom.dcmread(paths[3])
    delattr(ds, key)
    ds.save_as(paths[3])

    def no_inference(*args, **kwargs):
        raise AssertionError("inference ran before the refusal")

    monkeypatch.setattr(Predictor, "predict_volume", no_inference)
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match=rf"IM0003\.dcm: {key} is missing; a DICOM Segmentation references"):
        mz.predict(_one_channel(), tmp_path / "s", tmp_path / "seg.dcm", output_type="dicom-seg")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_enhanced_multiframe_geometry(tmp_path, modality):
    data = np.round(_volume(3) * 2.0) - 1000
    affine = _affine("oblique")
    order = list(np.random.default_rng(0).permutation(data.shape[2]))  # frames stored out of slice order
    write_enhanced(tmp_path / "mf" / "image.dcm", data, affine, modality=modality, frame_order=order, slope=2.0,
                   intercept=-1000)  # fmt: skip
    series = read_series(tmp_path / "mf")
    assert series.frames is not None and len(series.datasets) == 1
    assert_same_voxels(data, affine, series.data, series.affine)


def test_enhanced_multiframe_to_dicom_seg_and_back(tmp_path):
    data, affine = _volume(4), _affine("anisotropic")
    order = list(np.random.default_rng(1).permutation(data.shape[2]))
    source = write_enhanced(tmp_path / "mf" / "image.dcm", data, affine, modality="MR", frame_order=order)
    labels = mz.predict(_one_channel(), tmp_path / "mf", tmp_path / "seg.dcm", output_type="dicom-seg", amp=False)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(source).SeriesInstanceUID
    assert int(seg.NumberOfFrames) == data.shape[2] * len(STRUCTURES)
    back = read_dicom_seg(tmp_path / "seg.dcm", read_series(tmp_path / "mf"), STRUCTURES)
    np.testing.assert_array_equal(back, np.asarray(labels.dataobj))
    # the same labels as the same voxels given as an array: frame order never moves a label
    series = read_series(tmp_path / "mf")
    expected = mz.predict(_one_channel(), (series.data[None], series.affine), amp=False)
    np.testing.assert_array_equal(np.asarray(labels.dataobj), np.asarray(expected.dataobj))


def test_a_multiframe_image_without_per_frame_positions_is_refused(tmp_path):
    path = write_enhanced(tmp_path / "mf" / "image.dcm", _volume(5), _affine("ras"))
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence
    ds.save_as(path)
    with pytest.raises(InputError, match=r"image\.dcm: a multi-frame image of 12 frames without a PerFrame"):
        read_series(tmp_path / "mf")


def test_several_series_in_one_folder_to_dicom_seg(tmp_path, monkeypatch):
    first, second = generate_uid(), generate_uid()
    write_series(tmp_path / "s", _volume(6), _affine("ras"), series_uid=first, description="axial")
    write_series(tmp_path / "s", _volume(7), _affine("lps"), series_uid=second, names=[f"b{k}.dcm" for k in range(12)])
    model = _one_channel()
    with pytest.raises(
        InputError, match=rf"(?s)holds 2 series; choose one with --series-uid.*{first} .*axial.*{second}"
    ):
        mz.predict(model, tmp_path / "s", tmp_path / "seg.dcm", output_type="dicom-seg")
    assert not (tmp_path / "seg.dcm").exists()
    mz.predict(model, tmp_path / "s", tmp_path / "seg.dcm", output_type="dicom-seg", series_uid=second, amp=False)
    assert hd.seg.segread(tmp_path / "seg.dcm").ReferencedSeriesSequence[0].SeriesInstanceUID == second
