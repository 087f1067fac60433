"""``compile``: the Trainer's step and the Predictor's windows through torch.compile give eager's numbers."""

from __future__ import annotations

import copy
import csv

import pytest
import torch

import medseg_zoo as mz
from medseg_zoo.errors import TrainingError
from medseg_zoo.training import Trainer
from tests.conftest import tiny_config, tiny_model
from tests.numerics import assert_as_accurate


def test_predictor_compiled_is_as_accurate_as_eager():
    model = tiny_model().eval()
    x = torch.randn(1, 4, 24, 20, 18)
    eager = mz.Predictor(model, amp=False).probabilities(x)
    compiled_predictor = mz.Predictor(model, amp=False, compile=True)
    compiled = compiled_predictor.probabilities(x)
    assert compiled_predictor._networks[0] is not model  # the windows really ran through the compiled network
    exact = mz.Predictor(copy.deepcopy(model).double(), amp=False).probabilities(x.double())
    assert_as_accurate(compiled, eager, exact)


def test_trainer_compiled_follows_the_eager_run(tiny_data, tmp_path):
    runs = {}
    for compile_ in (False, True):
        trainer = Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / str(compile_), epochs=1, compile=compile_))
        trainer.fit()
        assert isinstance(trainer.network, torch._dynamo.eval_frame.OptimizedModule) == compile_
        with open(tmp_path / str(compile_) / "metrics.csv") as f:
            runs[compile_] = next(csv.DictReader(f))
    # One epoch of a few steps: compiled kernels sum in other orders, so the loss agrees to float32 rounding
    # carried through those steps, far inside 1e-3.
    assert float(runs[True]["train_loss"]) == pytest.approx(float(runs[False]["train_loss"]), rel=1e-3)
    assert float(runs[True]["mean_dice"]) == pytest.approx(float(runs[False]["mean_dice"]), abs=1e-3)


def test_compile_must_be_a_bool(tmp_path):
    with pytest.raises(TrainingError, match=r"compile='yes' \(expected True or False\)"):
        tiny_config(tmp_path, compile="yes")
