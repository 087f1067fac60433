"""Training: the Trainer, its configuration and recipes, the loss from a contract, evaluation of a model."""

from medseg_zoo.training.evaluation import Evaluation, evaluate
from medseg_zoo.training.losses import loss_for
from medseg_zoo.training.recipes import RECIPES, TrainConfig, list_recipes, recipe
from medseg_zoo.training.trainer import Callback, Trainer

__all__ = [
    "RECIPES",
    "Callback",
    "Evaluation",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "list_recipes",
    "loss_for",
    "recipe",
]
