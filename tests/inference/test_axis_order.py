"""A model trained on SimpleITK's axis order (nnU-Net, nnssl) sees each volume as its publisher fed it."""

import copy

import nibabel as nib
import numpy as np
import torch

import medseg_zoo as mz
from medseg_zoo._registry import get_config
from medseg_zoo.convert import convert_state_dict
from medseg_zoo.inference import load_volume
from tests.convert.test_pretraining_sources import TINY_RESENC, _perturbed, publisher_resenc
from tests.numerics import assert_as_accurate


def test_a_zyx_model_equals_its_publishers_network_fed_simpleitk_arrays(tmp_path):
    shape = (32, 48, 64)  # asymmetric: a transposition would not go unnoticed
    rng = np.random.default_rng(0)
    image = rng.normal(100, 20, size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 1.0, 1.0])), tmp_path / "case.nii.gz")
    source = _perturbed(publisher_resenc(1, 3))
    source.decoder.deep_supervision = False
    model = mz.create_model("resenc_l_openmind", out_channels=3, roi_size=shape[::-1], **TINY_RESENC)
    assert model.pretrained_cfg.contract.axis_order == "zyx"
    model.load_state_dict(convert_state_dict(source.state_dict(), "nnssl", get_config("resenc_l_openmind")))

    predictor = mz.Predictor(model, amp=False, overlap=0.0)
    ours = predictor.predict_volume(load_volume(str(tmp_path / "case.nii.gz"), ["MRI"]), "probabilities")

    def publisher(network, dtype):  # nnssl: the SimpleITK array (z, y, x), z-scored, softmax
        array = torch.from_numpy(image.transpose(2, 1, 0).copy()).to(dtype)
        array = (array - array.mean()) / array.std(unbiased=False)
        with torch.no_grad():
            probabilities = torch.softmax(network.to(dtype)(array[None, None]), dim=1)[0]
        return probabilities.permute(3, 2, 1, 0)  # back to the file's (x, y, z), channels last

    exact = publisher(copy.deepcopy(source), torch.float64)
    assert ours.shape == (*shape, 3)
    assert_as_accurate(torch.from_numpy(ours), publisher(source, torch.float32), exact)
