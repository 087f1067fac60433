"""Label schemes per data-set edition (defined in `medseg_zoo._schemes`, where the task contract reads them), and
exact conversions between label maps and output channels.

A scheme with ``regions`` describes overlapping regions predicted with a sigmoid (BraTS: TC, WT, ET); a scheme
without describes exclusive classes predicted with a softmax (one channel per label, background included).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

from medseg_zoo._schemes import Array, LabelScheme, LabelValueError, get_scheme, list_schemes

__all__ = [
    "LabelScheme",
    "LabelValueError",
    "LabelsToRegionsd",
    "RegionsToLabelsd",
    "get_scheme",
    "labels_to_regions",
    "list_schemes",
    "regions_to_labels",
    "scheme_from_dataset_json",
    "scheme_from_names",
]


def scheme_from_names(names: Sequence[str], name: str = "custom") -> LabelScheme:
    """An exclusive-class scheme whose label values are the positions of ``names`` (background first):
    ``["background", "lesion"]`` gives 0 -> background, 1 -> lesion.

    Raises:
        ValueError: If the names are empty, repeated, or do not start with the background.
    """
    names = [n.strip() for n in names]
    if len(names) < 2 or len(set(names)) != len(names) or not all(names):
        raise ValueError(f"labels {names!r}: expected two or more distinct names, the background (value 0) first")
    return LabelScheme(name, f"{name}: labels given by name, values 0..{len(names) - 1}", dict(enumerate(names)))


def scheme_from_dataset_json(dataset: Mapping[str, Any], name: str = "dataset") -> LabelScheme:
    """A scheme from a dataset.json ``"labels"`` map: exclusive classes (MSD: value -> name; nnU-Net v2: name ->
    value), or nnU-Net v2's regions (name -> a list of values, e.g. BraTS's ``"whole tumor": [1, 2, 3]``).

    Regions must nest, each adding one label value, which is named after the region that adds it; a
    ``regions_class_order`` must paint each region with the value it adds (the zoo decodes regions that way).

    Raises:
        ValueError: If the map is missing, not integer values with a background 0, or regions that do not nest.
    """
    raw = dataset.get("labels")
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"{name}: dataset.json has no 'labels' map, got {raw!r}")
    if any(isinstance(v, list | tuple) for v in raw.values()):
        return _regions_from_dataset_json(raw, dataset.get("regions_class_order"), name)
    try:
        if all(isinstance(v, int) for v in raw.values()):  # nnU-Net v2: {"background": 0, "liver": 1}
            labels = {int(v): str(k) for k, v in raw.items()}
        else:  # MSD: {"0": "background", "1": "liver"}
            labels = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}: dataset.json 'labels' must map integer values to names (or names to integers), got {raw!r}"
        ) from None
    if len(labels) != len(raw):
        raise ValueError(f"{name}: dataset.json 'labels' repeats a value: {raw!r}")
    return LabelScheme(name, f"{name} (dataset.json)", dict(sorted(labels.items())))


def _regions_from_dataset_json(raw: Mapping[str, Any], order: Any, name: str) -> LabelScheme:
    def values(v: Any) -> tuple[int, ...]:
        items = tuple(v) if isinstance(v, list | tuple) else (v,)
        if not items or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in items):
            raise ValueError(
                f"{name}: dataset.json 'labels' regions must list label values (integers >= 0), got {raw!r}"
            )
        return items

    parsed = {str(k): values(v) for k, v in raw.items()}
    background = next((k for k, v in parsed.items() if v == (0,)), None)
    if background is None:
        raise ValueError(f"{name}: dataset.json 'labels' has no background (value 0): {raw!r}")
    regions = {k: v for k, v in parsed.items() if k != background}
    labels, adds, seen = {0: background}, {}, set()
    for region, members in sorted(regions.items(), key=lambda item: len(item[1])):
        added = set(members) - seen
        if len(added) != 1 or not seen <= set(members):
            raise ValueError(
                f"{name}: dataset.json regions must be nested, each adding one label value; got {dict(regions)}"
            )
        adds[region] = added.pop()
        labels[adds[region]] = region
        seen = set(members)
    if order is not None and list(order) != [adds[region] for region in regions]:
        raise ValueError(
            f"{name}: dataset.json regions_class_order {list(order)} differs from the value each region adds "
            f"({[adds[region] for region in regions]}, regions in their order {list(regions)}); the zoo decodes "
            "regions by their nesting"
        )
    return LabelScheme(name, f"{name} (dataset.json regions)", dict(sorted(labels.items())), regions)


def labels_to_regions(label_map: Array, scheme: str | LabelScheme) -> Array:
    """Label map ``(...)`` -> binary channels ``(C, ...)``: the scheme's regions, or one-hot classes.

    Keeps the input's type (numpy or torch) and device; the output is ``uint8``. A leading singleton channel
    axis is accepted as well (MONAI's ``(1, D, H, W)``).

    Raises:
        ValueError: If the map has values outside the scheme.
    """
    scheme = get_scheme(scheme)
    scheme.check(label_map)
    lm = label_map[0] if label_map.ndim == 4 and label_map.shape[0] == 1 else label_map
    groups = list(scheme.regions.values()) if scheme.regions is not None else [(v,) for v in sorted(scheme.labels)]
    if isinstance(lm, torch.Tensor):
        values = [torch.tensor(g, device=lm.device, dtype=lm.dtype) for g in groups]
        return torch.stack([torch.isin(lm, v) for v in values]).to(torch.uint8)
    return np.stack([np.isin(lm, g) for g in groups]).astype(np.uint8)


def regions_to_labels(regions: Array, scheme: str | LabelScheme, dtype: Any = None) -> Array:
    """Binary channels ``(C, ...)`` -> label map ``(...)``; the exact inverse of `labels_to_regions`.

    Region schemes: the innermost active region decides, giving the label it adds to the regions inside it (for
    BraTS: ET -> enhancing, TC only -> necrotic core, WT only -> edema); this is exact for the channels of any
    label map and also settles inconsistent predictions (ET outside TC). Exclusive schemes: the label of the
    largest channel (argmax).

    Args:
        regions: Binary (or probability > 0.5) channels in the scheme's channel order.
        scheme: The scheme or its name.
        dtype: Output dtype; ``uint8`` by default.

    Raises:
        ValueError: If the channel count does not match the scheme.
    """
    scheme = get_scheme(scheme)
    if regions.shape[0] != len(scheme.channels):
        raise ValueError(
            f"expected {len(scheme.channels)} channels {scheme.channels} for scheme {scheme.name!r}, "
            f"got {regions.shape[0]} (shape {tuple(regions.shape)})"
        )
    dtype = np.uint8 if dtype is None else dtype
    is_torch = isinstance(regions, torch.Tensor)
    r = regions.detach().cpu().numpy() if is_torch else np.asarray(regions)
    if scheme.regions is None:
        values = np.array(sorted(scheme.labels))
        out = values[np.argmax(r, axis=0)]
    else:
        active = r > 0.5
        out = np.zeros(r.shape[1:], dtype=dtype)
        order = sorted(range(len(scheme.channels)), key=lambda i: len(scheme.regions[scheme.channels[i]]))
        inner: set[int] = set()
        own = {}
        for i in order:  # innermost first: the label each region adds
            (own[i],) = set(scheme.regions[scheme.channels[i]]) - inner
            inner |= set(scheme.regions[scheme.channels[i]])
        for i in reversed(order):  # outermost first, so inner regions overwrite
            np.putmask(out, active[i], own[i])
    out = out.astype(dtype, copy=False)  # the region path already built it in this dtype
    return torch.from_numpy(out).to(regions.device) if is_torch else out


class _SchemeMapd(MapTransform):
    """A MONAI dictionary transform applying one label-scheme conversion to its keys."""

    def __init__(
        self, keys: Sequence[Hashable] | Hashable, scheme: str | LabelScheme, allow_missing_keys: bool = False
    ):
        super().__init__(keys, allow_missing_keys)
        self.scheme = get_scheme(scheme)

    def convert(self, value: Any) -> Any:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key] = self.convert(d[key])
            except ValueError as exc:  # name the file: MONAI's wrapper only names the transform
                source = getattr(d[key], "meta", {}).get("filename_or_obj", f"key {key!r}")
                raise LabelValueError(f"{source}: {exc}") from None
        return d

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keys={list(self.keys)}, scheme={self.scheme.name!r})"


class LabelsToRegionsd(_SchemeMapd):
    """MONAI dictionary transform: label map ``(1, D, H, W)`` -> channels ``(C, D, H, W)`` of a scheme."""

    def convert(self, value: Any) -> Any:
        return labels_to_regions(value, self.scheme)


class RegionsToLabelsd(_SchemeMapd):
    """MONAI dictionary transform: channels ``(C, D, H, W)`` -> label map ``(1, D, H, W)`` of a scheme."""

    def convert(self, value: Any) -> Any:
        return regions_to_labels(value, self.scheme)[None]
