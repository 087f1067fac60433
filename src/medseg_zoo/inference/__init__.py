"""Inference: whole volumes in, predictions on the same grid out."""

from medseg_zoo.inference.io import InputError, Volume, load_volume, save_nifti
from medseg_zoo.inference.predictor import Predictor, predict

__all__ = ["InputError", "Predictor", "Volume", "load_volume", "predict", "save_nifti"]
