"""medseg-zoo predict over a folder under torchrun: the cases are shared among the processes, each written once."""

import os
import re
import subprocess
import sys

import nibabel as nib
import numpy as np

from medseg_zoo.cli import main


def test_torchrun_shares_the_cases_and_writes_each_once(tiny_data, tiny_checkpoint, tmp_path, capsys):
    images = tiny_data / "imagesTr"
    common = ["predict", "--checkpoint", str(tiny_checkpoint), "-i", str(images), "--device", "cpu"]
    assert main([*common, "-o", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "medseg_zoo", *common, "-o", str(tmp_path / "two")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    names = sorted(p.name for p in images.glob("*.nii.gz"))
    # Two processes print into one pipe: their lines can run together, so the names are found, not split.
    written = sorted(re.findall(r"BRATS_\d{3}\.nii\.gz", result.stdout))
    assert written == names  # every case once: none twice, none left out
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == names
    for name in names:
        one, two = nib.load(tmp_path / "one" / name), nib.load(tmp_path / "two" / name)
        np.testing.assert_array_equal(np.asanyarray(two.dataobj), np.asanyarray(one.dataobj))
        np.testing.assert_array_equal(two.affine, one.affine)
