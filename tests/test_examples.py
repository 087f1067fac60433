"""Every script in examples/ runs, on tiny synthetic data, as a user would run it (its own command line)."""

import runpy
import sys
from pathlib import Path

import pytest

import medseg_zoo as mz

EXAMPLES = Path(__file__).parents[1] / "examples"
ARGS = {  # small sizes so that each runs in seconds
    "quickstart.py": ["--size", "32"],
    "predict_folder.py": ["--size", "32"],
    "finetune_custom_folder.py": ["--size", "32", "--epochs", "2", "--roi", "16"],
    "build_from_layers.py": [],
    "register_configuration.py": [],
    "convert_monai_bundle.py": [],
    "encoder_classifier.py": ["--small", "--size", "32", "--steps", "3"],
}


def test_every_example_is_run_here():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(ARGS)


@pytest.mark.parametrize("name", sorted(ARGS))
def test_example_runs(name, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, "--workdir", str(tmp_path / "work"), *ARGS[name]])
    monkeypatch.chdir(tmp_path)
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    finally:
        for registered in ("tiny_vit_unet_brats", "segresnet_liver"):
            mz._registry._REGISTRY.pop(registered, None)
    assert any((tmp_path / "work").rglob("*")), "the example wrote nothing into its workdir"
