"""Find the cases, channel names and label scheme of a data set folder.

Three layouts are recognised:

- MSD (Medical Segmentation Decathlon): ``dataset.json`` with ``modality`` and ``training``; 4-D images.
- nnU-Net v2 raw: ``dataset.json`` with ``channel_names`` and ``file_ending``; one file per channel,
  ``imagesTr/CASE_0000.nii.gz``, ``imagesTr/CASE_0001.nii.gz``, ... and ``labelsTr/CASE.nii.gz``.
- Pairs: ``images/`` (or ``imagesTr/``) and ``labels/`` (or ``labelsTr/``) holding files of the same names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib

from medseg_zoo.transforms.labels import LabelScheme, get_scheme, list_schemes, scheme_from_dataset_json

__all__ = ["Case", "DataSet", "DataSetError", "discover"]

NIFTI = (".nii.gz", ".nii")


class DataSetError(ValueError):
    """A folder whose layout or metadata cannot be understood."""


@dataclass(frozen=True)
class Case:
    """One case: its image file(s) and label file.

    Attributes:
        name: Case identifier (file name without extension or channel suffix).
        images: One 4-D file holding every channel, or one 3-D file per channel in channel order.
        label: The label map, or ``None`` for unlabelled cases.
        channels: The channel names of the images, in order (its data set's), so that `medseg_zoo.predict` can
            put them in a model's order.
    """

    name: str
    images: tuple[Path, ...]
    label: Path | None = None
    channels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, str | list[str]]:
        """The MONAI data-dictionary form: ``{"image": path or [paths], "label": path}``."""
        images = [str(p) for p in self.images]
        out: dict[str, str | list[str]] = {"image": images[0] if len(images) == 1 else images}
        if self.label is not None:
            out["label"] = str(self.label)
        return out


@dataclass(frozen=True)
class DataSet:
    """A discovered data set.

    Attributes:
        root: The folder.
        layout: ``"msd"``, ``"nnunet"`` or ``"pairs"``.
        cases: Training cases, sorted by name.
        channels: Input channel names in order.
        scheme: The label scheme of the label maps.
        test: Test cases (``imagesTs/``, with their label from ``labelsTs/`` where there is one), sorted by name.
        unused_labels: Label files in the label folders that no case uses (a missing or misnamed image);
            `check_dataset` warns about them.
    """

    root: Path
    layout: Literal["msd", "nnunet", "pairs"]
    cases: tuple[Case, ...]
    channels: tuple[str, ...]
    scheme: LabelScheme
    test: tuple[Case, ...] = ()
    unused_labels: tuple[Path, ...] = ()


def _normalise(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.lower().replace("tumor", "tumour")).strip()


def _named(label_scheme: str | LabelScheme) -> LabelScheme:
    try:
        return get_scheme(label_scheme)
    except KeyError as exc:
        raise DataSetError(str(exc.args[0])) from None


def _scheme(root: Path, meta: dict, label_scheme: str | LabelScheme | None) -> LabelScheme:
    """The explicit scheme if given; else a built-in edition whose label names match the dataset.json's exactly;
    else the dataset.json's labels as exclusive classes."""
    if label_scheme is not None:
        scheme = _named(label_scheme)
        _check_against_dataset_json(root, meta, scheme)
        return scheme
    try:
        labels = scheme_from_dataset_json(meta, root.name)
    except ValueError as exc:
        raise DataSetError(f"{root / 'dataset.json'}: {exc}; or pass label_scheme") from None
    names = {v: _normalise(n) for v, n in labels.labels.items()}
    for candidate in map(get_scheme, list_schemes()):
        if candidate.name != "monai_tutorial" and {v: _normalise(n) for v, n in candidate.labels.items()} == names:
            return candidate
    return labels


def _check_against_dataset_json(root: Path, meta: dict, scheme: LabelScheme) -> None:
    """A scheme given for a data set whose dataset.json names its labels must give each value the same meaning:
    otherwise every score and every trained output would silently mean another structure."""
    try:
        own = scheme_from_dataset_json(meta, root.name)
    except ValueError:
        return  # no usable labels map: the given scheme is all there is
    if own.regions is not None:  # nnU-Net regions name regions, not values: the same grouping is the same meaning
        groups = sorted(map(sorted, own.regions.values()))
        if scheme.regions is None or sorted(map(sorted, scheme.regions.values())) != groups:
            raise DataSetError(
                f"{root / 'dataset.json'}: label scheme {scheme.name!r} ({scheme.edition}) does not group the label "
                f"values as the data set's regions do ({dict(own.regions)}); drop the label scheme to use the data "
                "set's own"
            )
        return
    declared = own.labels
    differ = [
        f"{v}: {declared.get(v, '(absent)')!r} in dataset.json, {scheme.labels.get(v, '(absent)')!r} in the scheme"
        for v in sorted(set(declared) | set(scheme.labels))
        if _normalise(declared.get(v, "")) != _normalise(scheme.labels.get(v, ""))
    ]
    if differ:
        raise DataSetError(
            f"{root / 'dataset.json'}: label scheme {scheme.name!r} ({scheme.edition}) does not match the labels the "
            f"data set declares ({'; '.join(differ[:4])}); drop the label scheme to use the data set's own, or fix "
            "its dataset.json if the scheme is right"
        )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataSetError(f"{path}: cannot read dataset.json ({exc})") from None


def _strip(name: str) -> str:
    for ext in NIFTI:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _channels(root: Path, meta: dict, key: str) -> tuple[str, ...]:
    """Channel names in order from a dataset.json map ``{"0": name, "1": name, ...}``."""
    names = meta[key]
    try:
        return tuple(names[k] for k in sorted(names, key=int))
    except (TypeError, ValueError):
        raise DataSetError(f"{root / 'dataset.json'}: {key!r} must map '0', '1', ... to names, got {names!r}") from None


def _msd(root: Path, meta: dict, label_scheme: str | LabelScheme | None) -> DataSet:
    channels = _channels(root, meta, "modality")
    training = meta.get("training")
    if not isinstance(training, list):
        raise DataSetError(
            f"{root / 'dataset.json'}: 'training' must be a list of image/label entries, got {training!r}"
        )
    cases = []
    for entry in training:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("image"), str)
            or not isinstance(entry.get("label", ""), str | type(None))
        ):
            raise DataSetError(
                f"{root / 'dataset.json'}: training entries need 'image' and 'label' paths (strings), got {entry!r}"
            )
        image = (root / entry["image"]).resolve()
        label = (root / entry["label"]).resolve() if entry.get("label") else None
        cases.append(Case(_strip(image.name), (image,), label))
    _refuse_repeats(root / "dataset.json", cases)
    scheme = _scheme(root, meta, label_scheme)
    test = _single_files(root / "imagesTs", root / "labelsTs")
    return DataSet(root, "msd", tuple(sorted(cases, key=lambda c: c.name)), channels, scheme, test)


def _refuse_repeats(source: Path, cases: list[Case]) -> None:
    """A case listed twice would land in training and validation at once."""
    names = Counter(c.name for c in cases)
    files = Counter(str(p) for c in cases for p in (*c.images, *([c.label] if c.label else [])))
    repeated = [n for n, k in names.items() if k > 1] + [f for f, k in files.items() if k > 1]
    if repeated:
        raise DataSetError(
            f"{source}: {', '.join(repeated[:4])} listed more than once; each case and each file must appear once, "
            "or the same case could be trained on and validated"
        )


def _channel_files(images_dir: Path, labels_dir: Path, ending: str, channels: int) -> tuple[Case, ...]:
    """nnU-Net cases: ``NAME_0000<ending>``, ``NAME_0001<ending>``, ... and ``labels_dir/NAME<ending>``."""
    if not images_dir.is_dir():
        return ()
    pattern = re.compile(rf"(.+)_(\d{{4}}){re.escape(ending)}$")
    groups: dict[str, dict[int, Path]] = {}
    for path in images_dir.iterdir():
        match = pattern.match(path.name)
        if match:
            groups.setdefault(match.group(1), {})[int(match.group(2))] = path
    cases = []
    for name, files in sorted(groups.items()):
        # A missing channel file is reported by the checks, which name the case; keep the case here.
        images = tuple(files.get(i, images_dir / f"{name}_{i:04d}{ending}") for i in range(channels))
        label = labels_dir / f"{name}{ending}"
        cases.append(Case(name, images, label if label.exists() else None))
    return tuple(cases)


def _single_files(images_dir: Path, labels_dir: Path) -> tuple[Case, ...]:
    """Cases of one (4-D) file each, with the label of the same name where there is one."""
    if not images_dir.is_dir():
        return ()
    images = {_strip(p.name): p for p in images_dir.iterdir() if p.name.endswith(NIFTI) and not p.name.startswith(".")}
    labels = {_strip(p.name): p for p in labels_dir.iterdir() if p.name.endswith(NIFTI)} if labels_dir.is_dir() else {}
    return tuple(Case(n, (images[n],), labels.get(n)) for n in sorted(images))


def _nnunet(root: Path, meta: dict, label_scheme: str | LabelScheme | None) -> DataSet:
    channels = _channels(root, meta, "channel_names")
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in NIFTI:
        raise DataSetError(
            f"{root / 'dataset.json'}: file_ending {ending!r}; medseg-zoo reads NIfTI ({', '.join(NIFTI)}): convert "
            "the images and labels (e.g. with SimpleITK) and set file_ending"
        )
    if not (root / "imagesTr").is_dir():
        raise DataSetError(f"{root}: nnU-Net layout without an imagesTr folder")
    cases = _channel_files(root / "imagesTr", root / "labelsTr", ending, len(channels))
    test = _channel_files(root / "imagesTs", root / "labelsTs", ending, len(channels))
    scheme = _scheme(root, meta, label_scheme)
    return DataSet(root, "nnunet", cases, channels, scheme, test)


def _pairs(root: Path, channels: tuple[str, ...] | None, label_scheme: str | LabelScheme | None) -> DataSet:
    images_dir = next((root / d for d in ("images", "imagesTr") if (root / d).is_dir()), None)
    labels_dir = next((root / d for d in ("labels", "labelsTr") if (root / d).is_dir()), None)
    if images_dir is None or labels_dir is None:
        raise DataSetError(
            f"{root}: not a data set folder: expected dataset.json (MSD or nnU-Net v2) or 'images/' and "
            f"'labels/' folders with matching file names"
        )
    if label_scheme is None:
        raise DataSetError(
            f"{root}: a folder of image/label pairs has no dataset.json saying what its labels mean; pass "
            f"label_scheme (one of {', '.join(list_schemes())}, or a LabelScheme; from the command line "
            "--label-scheme NAME, or --labels background,lesion,... naming the values 0, 1, ...)"
        )
    cases = _single_files(images_dir, labels_dir)
    if channels is None:
        first = nib.load(cases[0].images[0]) if cases else None
        count = first.shape[3] if first is not None and len(first.shape) == 4 else 1
        channels = tuple(f"channel_{i}" for i in range(count))
    test = _single_files(root / "imagesTs", root / "labelsTs")
    return DataSet(root, "pairs", cases, tuple(channels), _named(label_scheme), test)


def discover(
    root: str | os.PathLike,
    *,
    label_scheme: str | LabelScheme | None = None,
    channels: tuple[str, ...] | None = None,
) -> DataSet:
    """Discover the layout, cases, channel names and label scheme of a data set folder.

    Args:
        root: The data set folder.
        label_scheme: The label scheme (edition) of the label maps. By default a dataset.json's labels decide:
            a built-in edition whose label names match (MSD Task01 -> ``msd_task01``), else exclusive classes.
            Required for folders of pairs.
        channels: Channel names for folders of pairs (default ``channel_0``, ...).

    Raises:
        DataSetError: If the folder is none of the layouts, or its metadata is malformed.
    """
    root = Path(root)
    if root.is_file():
        raise DataSetError(f"{root} is a file; expected a data set folder (MSD, nnU-Net v2, or images/ and labels/)")
    if not root.is_dir():
        raise DataSetError(f"{root}: no such folder")
    meta_path = root / "dataset.json"
    if not meta_path.exists():
        dataset = _pairs(root, channels, label_scheme)
    else:
        meta = _read_json(meta_path)
        if "channel_names" in meta:
            dataset = _nnunet(root, meta, label_scheme)
        elif "modality" in meta:
            dataset = _msd(root, meta, label_scheme)
        else:
            raise DataSetError(
                f"{meta_path}: neither MSD ('modality', 'training') nor nnU-Net v2 ('channel_names', 'file_ending'); "
                f"keys found: {sorted(meta)}"
            )
    named = {part: tuple(dataclasses.replace(c, channels=dataset.channels) for c in getattr(dataset, part))
             for part in ("cases", "test")}  # fmt: skip
    return dataclasses.replace(dataset, **named, unused_labels=_unused_labels(dataset))


def _unused_labels(dataset: DataSet) -> tuple[Path, ...]:
    labels = [c.label for c in (*dataset.cases, *dataset.test) if c.label is not None]
    used = {label.resolve() for label in labels}
    return tuple(
        sorted(
            path
            for folder in {label.parent for label in labels}
            if folder.is_dir()  # a missing labels folder is reported per case by the checks
            for path in folder.iterdir()
            if path.name.endswith(NIFTI) and not path.name.startswith(".") and path.resolve() not in used
        )
    )
