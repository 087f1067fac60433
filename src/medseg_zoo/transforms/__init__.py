"""Transforms: label schemes (`labels`), contract-driven MONAI pipelines (`presets`) and resampling between
parallel grids (`resample`)."""

from medseg_zoo.transforms.labels import (
    LabelScheme,
    LabelsToRegionsd,
    RegionsToLabelsd,
    get_scheme,
    labels_to_regions,
    list_schemes,
    regions_to_labels,
    scheme_from_dataset_json,
    scheme_from_names,
)
from medseg_zoo.transforms.presets import (
    cached_dataset,
    data_scheme,
    inference_transforms,
    preprocessing_key,
    preprocessing_transforms,
    training_transforms,
    validation_transforms,
)
from medseg_zoo.transforms.resample import SeparableSpacingd, resample_parallel

__all__ = [
    "LabelScheme",
    "LabelsToRegionsd",
    "RegionsToLabelsd",
    "SeparableSpacingd",
    "cached_dataset",
    "data_scheme",
    "get_scheme",
    "inference_transforms",
    "labels_to_regions",
    "list_schemes",
    "preprocessing_key",
    "preprocessing_transforms",
    "regions_to_labels",
    "resample_parallel",
    "scheme_from_dataset_json",
    "scheme_from_names",
    "training_transforms",
    "validation_transforms",
]
