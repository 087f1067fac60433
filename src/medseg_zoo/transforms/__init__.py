"""Transforms: label schemes and conversions (:mod:`medseg_zoo.transforms.labels`)."""

from medseg_zoo.transforms.labels import (
    LabelScheme,
    LabelsToRegionsd,
    RegionsToLabelsd,
    get_scheme,
    labels_to_regions,
    list_schemes,
    regions_to_labels,
    scheme_from_dataset_json,
)

__all__ = [
    "LabelScheme",
    "LabelsToRegionsd",
    "RegionsToLabelsd",
    "get_scheme",
    "labels_to_regions",
    "list_schemes",
    "regions_to_labels",
    "scheme_from_dataset_json",
]
