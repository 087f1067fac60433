import pytest

from medseg_zoo.errors import TrainingError
from medseg_zoo.training import TrainConfig, list_recipes, recipe


def test_seed_recipes_keep_the_tutorial_settings():
    assert {"default", "unet_brats", "unetr_brats", "unetr_monai"} <= set(list_recipes())
    for name, epochs in (("unetr_brats", 180), ("unetr_monai", 180), ("unet_brats", 170)):
        config = recipe(name)
        assert (config.optimizer, config.lr, config.weight_decay, config.schedule) == ("adamw", 1e-4, 1e-5, "constant")
        assert (config.batch_size, config.epochs, config.val_every) == (2, epochs, 5)
        assert config.foreground_ratio == 0 and config.grad_clip is None and config.recipe == name
    assert recipe("unet_brats", epochs=3).epochs == 3


def test_round_trip_through_json_values():
    config = TrainConfig(fold=(1, 5), max_minutes=2.5)
    assert TrainConfig.from_dict({**config.to_dict(), "fold": [1, 5]}) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, r"epochs=0 \(expected an integer >= 1\)"),
        ({"batch_size": 2.0}, r"batch_size=2.0 \(expected an integer >= 1\)"),
        ({"lr": -1.0}, r"lr=-1.0 \(expected a finite number > 0\)"),
        ({"lr": float("inf")}, r"lr=inf \(expected a finite number > 0\)"),
        ({"output": None}, r"output=None \(expected a folder path\)"),
        ({"val_fraction": 1.0}, r"val_fraction=1.0 \(expected a finite number > 0 and < 1\)"),
        ({"fold": (5, 5)}, r"fold=\(5, 5\) \(expected k/n or \(k, n\) with n >= 2 and 0 <= k < n"),
        ({"fold": "0/1"}, r"fold=\(0, 1\) \(expected k/n or \(k, n\) with n >= 2"),
        ({"fold": "first"}, r"fold='first' \(expected k/n or \(k, n\)"),
        ({"grad_clip": float("nan")}, r"grad_clip=nan \(expected a finite number > 0\)"),
        ({"progress": "no"}, r"progress='no' \(expected True or False\)"),
        ({"amp": "fp8"}, r"amp='fp8' \(expected 'auto' or 'bf16' or 'fp16' or 'off'\)"),
        ({"optimizer": "adam"}, r"optimizer='adam' \(expected 'sgd' or 'adamw'\)"),
        ({"max_minutes": 0}, r"max_minutes=0 \(expected a finite number > 0\)"),
        ({"max_minutes": -3}, r"max_minutes=-3 \(expected a finite number > 0\)"),
    ],
)
def test_bad_values_are_named(changes, message):
    with pytest.raises(TrainingError, match=message):
        TrainConfig(**changes)


def test_unknown_recipe_and_field():
    with pytest.raises(TrainingError, match=r"unknown recipe 'nnunet_v1'; recipes: default, nnunet, openmind, "):
        recipe("nnunet_v1")
    with pytest.raises(TrainingError, match=r"TrainConfig has no field epoch"):
        TrainConfig().replace(epoch=3)


def test_a_fold_as_text():
    assert TrainConfig(fold="1/5").fold == (1, 5) == TrainConfig(fold=[1, 5]).fold
