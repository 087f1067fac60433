"""What a prediction input may be and how a bad one is refused: the file first (exists, an image, its dimensions,
its values), then the channel count, then the channel order; a discovered Case; an output or preview folder."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

import medseg_zoo as mz
from medseg_zoo.cli import main
from medseg_zoo.data import discover
from medseg_zoo.errors import OutputError
from medseg_zoo.inference import InputError
from tests.conftest import snapshot, tiny_model
from tests.inference.conftest import MSD_CHANNELS

CHANNEL_RULE = "must say which channel is which"


def _nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4) if affine is None else affine), path)
    return path


def _bytes(path, content: bytes):
    path.write_bytes(content)
    return path


def _singular(path):
    img = nib.Nifti1Image(np.ones((16, 16, 16, 4), np.float32), None)
    img.set_qform(None, code=0)
    img.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=2)  # a slice of no thickness
    nib.save(img, path)
    return path


def _truncated(path):
    _nifti(path, np.ones((16, 16, 16, 4)))
    path.write_bytes(path.read_bytes()[:300])
    return path


def _png(path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.savefig(path, format="png")
    return path


def _nan(path):
    data = np.ones((16, 16, 16, 4))
    data[3, 4, 5, 1] = np.nan
    return _nifti(path, data)


BAD_FILES = [
    # (id, make(folder) -> path, the real problem the message must name)
    ("missing", lambda d: d / "nothing.nii.gz", r"nothing.nii.gz: file not found"),
    ("empty file", lambda d: _bytes(d / "empty.nii.gz", b""), r"empty.nii.gz: cannot read the image"),
    ("text named .nii.gz", lambda d: _bytes(d / "t.nii.gz", gzip.compress(b"hi")), r"t.nii.gz: cannot read the image"),
    ("a PNG", lambda d: _png(d / "picture.png"), r"picture.png: cannot read the image"),
    ("truncated gzip", lambda d: _truncated(d / "cut.nii.gz"), r"cut.nii.gz: cannot read the image"),
    ("3-D file", lambda d: _nifti(d / "flair.nii.gz", np.ones((16, 16, 16))),
     r"flair.nii.gz: image shape \(16, 16, 16\) has no channel axis; expected a 4-D image \(X, Y, Z, 4\)"),
    ("3 channels", lambda d: _nifti(d / "three.nii.gz", np.ones((16, 16, 16, 3))), r"has 3 channels"),
    ("NaN voxels", lambda d: _nan(d / "nan.nii.gz"), r"nan.nii.gz: 1 NaN/inf voxel\(s\); expected finite"),
    ("singular affine", lambda d: _singular(d / "flat.nii.gz"), r"flat.nii.gz: the affine is singular"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "message"), [r[1:] for r in BAD_FILES], ids=[r[0] for r in BAD_FILES])
def test_the_file_is_checked_before_the_channel_order(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError, match=message) as caught:
        mz.predict(tiny_model(), path)  # no channels=: the channel rule must not speak first
    assert CHANNEL_RULE not in str(caught.value)


def test_a_usable_file_then_asks_for_its_channel_order(tmp_path):
    path = _nifti(tmp_path / "case.nii.gz", np.random.default_rng(0).random((16, 16, 16, 4)))
    with pytest.raises(InputError, match=CHANNEL_RULE):
        mz.predict(tiny_model(), path)


def test_a_discovered_case_is_an_input(tiny_data, tmp_path):
    model = tiny_model()
    case = discover(tiny_data).cases[0]
    assert case.channels == tuple(MSD_CHANNELS)
    from_case = mz.predict(model, case, amp=False)
    from_file = mz.predict(model, case.images[0], channels=MSD_CHANNELS, amp=False)
    np.testing.assert_array_equal(np.asarray(from_case.dataobj), np.asarray(from_file.dataobj))


def test_an_output_folder_receives_the_case_by_name(tiny_data, tmp_path):
    model = tiny_model()
    case = discover(tiny_data).cases[1]
    (tmp_path / "out").mkdir()
    mz.predict(model, case, output=tmp_path / "out", amp=False)
    mz.predict(model, str(case.images[0]), output=tmp_path / "out", channels=MSD_CHANNELS, amp=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{case.name}.nii.gz"]
    assert nib.load(tmp_path / "out" / f"{case.name}.nii.gz").shape == nib.load(case.images[0]).shape[:3]


def test_preview_shows_the_predicted_structures(tiny_data, tmp_path):
    from PIL import Image

    model = tiny_model()
    case = discover(tiny_data).cases[2]
    out = mz.predict(model, case, output=tmp_path / "seg.nii.gz", preview=tmp_path / "seg.png", amp=False)
    with Image.open(tmp_path / "seg.png") as img:
        assert img.format == "PNG" and img.size[0] > 600 and img.info["Software"] == "medseg-zoo"
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 10  # a picture, not a blank page
    assert np.asarray(out.dataobj).any()
    # a picture medseg-zoo wrote is replaced; a user's picture is not; a preview needs labels
    mz.predict(model, case, preview=tmp_path / "seg.png", amp=False)
    _png(tmp_path / "mine.png")
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match=r"preview .*mine.png exists and was not written by medseg-zoo"):
        mz.predict(model, case, preview=tmp_path / "mine.png")
    with pytest.raises(ValueError, match="a preview describe labels"):
        mz.predict(model, case, preview=tmp_path / "p.png", kind="probabilities")
    with pytest.raises(OutputError, match=r"preview .*p.jpg: expected a file name ending in .png"):
        mz.predict(model, case, preview=tmp_path / "p.jpg")
    assert snapshot(tmp_path) == before


def test_cli_preview_for_one_case_and_a_folder(tiny_data, tiny_checkpoint, tmp_path, capsys):
    images = tiny_data / "imagesTr"
    common = ["predict", "--checkpoint", str(tiny_checkpoint), "--amp", "off"]
    first = sorted(images.iterdir())[0]
    assert (
        main([*common, "-i", str(first), "-o", str(tmp_path / "a.nii.gz"), "--preview", str(tmp_path / "a.png")]) == 0
    )
    assert (tmp_path / "a.png").is_file()
    assert main([*common, "-i", str(images), "-o", str(tmp_path / "segs"), "--preview", str(tmp_path / "pngs")]) == 0
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == [
        p.name.replace(".nii.gz", ".png") for p in sorted(images.iterdir())
    ]
    assert main([*common, "-i", str(images), "-o", str(tmp_path / "s2"), "--preview", str(tmp_path / "one.png")]) == 2
    assert "--preview" in capsys.readouterr().err and not (tmp_path / "s2").exists()
