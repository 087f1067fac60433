"""The records a registry entry is made of: the task contract, weight sources and the model configuration.

A configuration is written once, in the registry entry of a model file, and travels on the built model as
`model.pretrained_cfg`; transforms, inference and training read it from there.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from medseg_zoo._schemes import LabelScheme, get_scheme

__all__ = ["NORMALIZATIONS", "ModelConfig", "TaskContract", "WeightSource", "channel_order", "config_of", "is_generic"]

Activation = Literal["sigmoid", "softmax"]
AxisOrder = Literal["xyz", "zyx"]
NORMALIZATIONS = (
    "zscore_nonzero_channelwise",
    "zscore_channelwise",
    "clip_scale:<low>:<high>",
    "zscore_nonzero_rescale:<low>:<high>",
    "clip_zscore:<low>:<high>:<mean>:<std>",
    "none",
)
_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_BOUNDED = re.compile(
    rf"(clip_scale|zscore_nonzero_rescale|clip_zscore):(?P<low>{_NUMBER}):(?P<high>{_NUMBER})"
    rf"(:(?P<mean>{_NUMBER}):(?P<std>{_NUMBER}))?"
)


# Names data sets give the same MRI sequence (BraTS, MSD, MONAI bundles, nnU-Net data sets).
_CHANNEL_ALIASES = {"t1": "t1w", "t1c": "t1gd", "t1ce": "t1gd", "t1gad": "t1gd", "t1post": "t1gd", "t2": "t2w"}
_CHANNEL_ALIASES |= {"t2flair": "flair", "t2f": "flair", "t1n": "t1w", "t2w": "t2w", "ct": "ct"}


def _channel_key(name: str) -> str:
    key = re.sub(r"[\s_\-+]", "", name.lower())
    return _CHANNEL_ALIASES.get(key, key)


def is_generic(names: tuple[str, ...]) -> bool:
    """Whether channel names are placeholders (``channel_0``, ...) rather than what the channels hold."""
    return all(re.fullmatch(r"channel_\d+", n) for n in names)


def channel_order(source: tuple[str, ...], target: tuple[str, ...]) -> list[int] | None:
    """Indices into ``source`` that give ``target``'s channels, when both name the same channels (``T1c`` and
    ``T1gd``, ``T1`` and ``T1w``, ``T2`` and ``T2w`` count as one); ``None`` when they do not."""
    keys, wanted = [_channel_key(n) for n in source], [_channel_key(n) for n in target]
    if sorted(keys) != sorted(wanted) or len(set(keys)) != len(keys):
        return None
    return [keys.index(k) for k in wanted]


def _positive(values: object, name: str, kind: type, expected: str) -> tuple:
    """Three positive numbers as a tuple of ``kind``; bools, strings and non-integral values are refused."""
    try:
        items = tuple(values)  # type: ignore[arg-type]
        ok = len(items) == 3 and not any(isinstance(v, bool | str | bytes) for v in items)
        converted = tuple(operator.index(v) if kind is int else float(v) for v in items) if ok else ()
    except (TypeError, ValueError):
        converted = ()
    if len(converted) != 3 or not all(v > 0 and math.isfinite(v) for v in converted):
        raise ValueError(f"{name} must be {expected}, got {values!r}")
    return converted


def _check_normalization(value: object) -> None:
    if value in NORMALIZATIONS[:2] or value == "none":
        return
    match = _BOUNDED.fullmatch(value) if isinstance(value, str) else None
    statistics = match is not None and match["std"] is not None
    if (
        match is None
        or float(match["low"]) >= float(match["high"])
        or statistics != value.startswith("clip_zscore:")
        or (statistics and float(match["std"]) <= 0)
    ):
        match = None
    if match is None:
        raise ValueError(
            f"normalization {value!r} is not supported; expected one of {', '.join(NORMALIZATIONS)} "
            "(with numbers low < high, e.g. 'clip_scale:-175:250', and std > 0: 'clip_zscore:-1000:400:40:120')"
        )


@dataclass(frozen=True)
class TaskContract:
    """What a model expects as input and what its outputs mean.

    Attributes:
        in_channels: Input channel names, in the order the network reads them (e.g. ``("FLAIR", "T1w", ...)``).
        out_channels: Output names: regions for ``sigmoid`` (may overlap), classes for ``softmax`` (exclusive,
            background included).
        activation: ``"sigmoid"`` for overlapping regions, ``"softmax"`` for exclusive classes.
        roi_size: Spatial size of the patches the network is trained and run on, in voxels.
        spacing: Target voxel spacing in mm the inputs are resampled to, or ``None`` to keep the input's.
        orientation: Axis codes the inputs are reoriented to (nibabel/MONAI convention, e.g. ``"RAS"``), or
            ``None`` to keep the input's axes (models trained on data in its stored orientation).
        normalization: Intensity normalisation: ``"zscore_nonzero_channelwise"``, ``"zscore_channelwise"``,
            ``"clip_scale:<low>:<high>"`` (a CT window scaled to [0, 1]), ``"zscore_nonzero_rescale:<low>:<high>"``
            (z-score over non-zero voxels, then min-max to [low, high]), ``"clip_zscore:<low>:<high>:<mean>:<std>"``
            (nnU-Net's CT scheme: clip to the data set's foreground percentiles, subtract its foreground mean,
            divide by its standard deviation; see `medseg_zoo.plan`) or ``"none"``.
        label_scheme: The label scheme (data set edition) the outputs map to: a built-in name, a
            `LabelScheme` (a data set's own, e.g. from its dataset.json), or
            ``None`` (outputs are class indices or bare regions).
        axis_order: The order in which the network reads the spatial axes of the (reoriented) volume: ``"xyz"``
            as the voxel axes are stored (NIfTI's i, j, k: MONAI's convention), or ``"zyx"`` reversed (the arrays
            of SimpleITK, which nnU-Net and nnssl train on). Preprocessing puts every volume in this order and
            predictions are mapped back, so weights trained either way see data as they were trained on.

    Raises:
        ValueError: When a field is malformed or the fields contradict each other (a sigmoid contract needs a
            region scheme whose regions are its outputs; a softmax contract a class scheme with one label per
            output). Checked when the contract is made, so a bad one never reaches training or prediction.
    """

    in_channels: tuple[str, ...]
    out_channels: tuple[str, ...]
    activation: Activation
    roi_size: tuple[int, int, int]
    spacing: tuple[float, float, float] | None = None
    orientation: str | None = "RAS"
    normalization: str = "zscore_nonzero_channelwise"
    label_scheme: str | LabelScheme | None = None
    axis_order: AxisOrder = "xyz"

    def __post_init__(self) -> None:
        # Normalised to tuples of plain numbers, so contracts read from JSON or built from numpy values compare
        # equal to the registry's.
        for name in ("in_channels", "out_channels"):
            names = getattr(self, name)
            if isinstance(names, str) or not names or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"{name} must be a non-empty sequence of channel names, got {names!r}")
            if len(set(names)) != len(names):
                raise ValueError(f"{name} names must be unique, got {tuple(names)!r}")
            object.__setattr__(self, name, tuple(names))
        if self.activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {self.activation!r}")
        object.__setattr__(self, "roi_size", _positive(self.roi_size, "roi_size", int, "three positive integers"))
        if self.spacing is not None:
            spacing = _positive(self.spacing, "spacing", float, "three positive voxel sizes in mm, or None")
            object.__setattr__(self, "spacing", spacing)
        if self.orientation is not None and (
            not isinstance(self.orientation, str)
            or len(self.orientation) != 3
            or sorted({"R": "L", "A": "P", "S": "I"}.get(c, c) for c in self.orientation) != ["I", "L", "P"]
        ):
            raise ValueError(
                f"orientation must be three axis codes such as 'RAS' or 'LPS', or None; got {self.orientation!r}"
            )
        _check_normalization(self.normalization)
        if self.axis_order not in ("xyz", "zyx"):
            raise ValueError(f"axis_order must be 'xyz' or 'zyx', got {self.axis_order!r}")
        if self.label_scheme is not None:
            self._check_scheme()

    def _check_scheme(self) -> None:
        try:
            scheme = get_scheme(self.label_scheme)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        if scheme.exclusive:
            fits = self.activation == "softmax" and len(scheme.channels) == len(self.out_channels)
            wanted = f"softmax over {len(scheme.channels)} classes ({', '.join(scheme.channels)})"
        else:
            fits = self.activation == "sigmoid" and tuple(self.out_channels) == scheme.channels
            wanted = f"sigmoid regions {', '.join(scheme.channels)}"
        if not fits:
            raise ValueError(
                f"label scheme {scheme.name!r} needs {wanted}; the contract has {self.activation} outputs "
                f"{', '.join(self.out_channels)}. Give outputs that fit the scheme, another label_scheme, or "
                "label_scheme=None"
            )

    @property
    def scheme(self) -> LabelScheme | None:
        """The label scheme as an object (``None`` when the contract names none)."""
        return get_scheme(self.label_scheme) if self.label_scheme is not None else None


WeightFormat = Literal["safetensors", "monai-bundle", "self-attention-cv", "monai", "swin-ssl", "suprem", "nnssl"]


@dataclass(frozen=True)
class WeightSource:
    """One place a configuration's weights are published.

    Attributes:
        repo_id: Hugging Face Hub repository (``"org/name"``); every byte is fetched with ``hf_hub_download``.
            Empty for files hosted elsewhere (``url``).
        filename: File inside the repository, e.g. ``"model.safetensors"`` or ``"models/model.pt"``.
        revision: The revision to fetch (a commit where it could be pinned); ``None`` while not published.
        sha256: Expected digest; where unknown, the first verified download records it and later loads
            refuse a changed file.
        md5: Digest as published by the source (MONAI bundles' ``large_files.yml``), checked too.
        format: ``"safetensors"`` in the zoo's layout, or a third-party layout converted on first load
            (``"monai-bundle"``: a MONAI model-zoo ``models/model.pt`` state dict).
        recipe: How the weights are (or will be) trained, shown when they are not published.
        notes: Where the source and its contract come from.
        url: A file hosted outside the Hub (GitHub releases, NVIDIA's downloads): fetched once into the zoo's
            cache with the same hash checks.
        member: For a zip archive, the name (or the last part of the path) of the checkpoint inside it.
        covers: Prefixes of the model's parameters the file fills (a pretrained encoder: ``("swinViT.",)``);
            empty when it fills the whole model. The rest keeps its fresh initialisation, and every parameter
            under these prefixes must come from the file.
    """

    repo_id: str
    filename: str = "model.safetensors"
    revision: str | None = None
    sha256: str | None = None
    md5: str | None = None
    format: WeightFormat = "safetensors"
    recipe: str = ""
    notes: str = ""
    url: str | None = None
    member: str | None = None
    covers: tuple[str, ...] = ()

    @property
    def published(self) -> bool:
        """Whether the weights can be downloaded (a Hub revision or a URL is given)."""
        return self.revision is not None or self.url is not None

    @property
    def location(self) -> str:
        """Where the file comes from, for messages and hash records."""
        return self.url or f"{self.repo_id}@{self.revision}/{self.filename}"


@dataclass(frozen=True)
class ModelConfig:
    """A complete, named model configuration: architecture, constructor arguments and task contract.

    Attributes:
        name: Registry name, e.g. ``"unetr_brats"``.
        builder: Class (or function) that builds the network; it takes ``in_channels`` and ``out_channels``.
        model_args: Constructor arguments other than the channel counts (and the roi, see ``roi_arg``).
        contract: The task contract. ``None`` for generic architecture names, whose channels the caller gives.
        roi_arg: Name of the constructor argument that receives ``contract.roi_size`` (``None`` when the
            architecture works on any size).
        default_roi: Roi of a generic name, used when the caller gives no contract.
        weights: Published (or planned) weight sources.
        license: License of the weights.
        paper: Reference for the architecture or the weights.
        metrics: Reported results, e.g. ``{"mean_dice": 0.769}``, with the data they were measured on.
        notes: Where the contract comes from, caveats.
        tiny_args: Constructor arguments that shrink the network for fast tests (roi included, via ``roi_arg``).
        stem: Parameters that read the input channels (dimension 1), adapted when ``in_channels`` changes.
        head: Prefixes of the parameters that write the outputs, re-initialised when ``out_channels`` changes.
        encoder: Prefixes of the encoder's parameters (held by ``freeze_encoder_epochs`` when fine-tuning).
        encoder_blocks: Regular expression whose first group numbers the encoder's blocks in its parameter
            names, in depth order (for layer-wise learning-rate decay).
        headless: The published weights are a starting point without a task head (a self-supervised encoder, a
            pretrained backbone): ``create_model`` needs the task's ``out_channels``.
        members: For an ensemble: the registered configurations whose predictions are averaged
            (`medseg_zoo.create_ensemble`); empty for a single model.
        recipe: The training recipe of the weights' publisher for fine-tuning (`medseg_zoo.training.recipe`).
    """

    name: str
    builder: Callable[..., nn.Module]
    model_args: Mapping[str, Any] = field(default_factory=dict)
    contract: TaskContract | None = None
    roi_arg: str | None = None
    default_roi: tuple[int, int, int] = (96, 96, 96)
    weights: tuple[WeightSource, ...] = ()
    license: str = ""
    paper: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""
    tiny_args: Mapping[str, Any] = field(default_factory=dict)
    stem: tuple[str, ...] = ()
    head: tuple[str, ...] = ()
    encoder: tuple[str, ...] = ()
    encoder_blocks: str | None = None
    headless: bool = False
    members: tuple[str, ...] = ()
    recipe: str | None = None

    @property
    def architecture(self) -> str:
        """Qualified name of the builder, e.g. ``"medseg_zoo.models.unetr.UNETR"``."""
        return f"{self.builder.__module__}.{self.builder.__qualname__}"

    @property
    def has_weights(self) -> bool:
        """Whether at least one weight source is published."""
        return any(w.published for w in self.weights)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view (the builder by its qualified name)."""
        skip = {"builder", "tiny_args", "stem", "head", "encoder", "encoder_blocks"}
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        out["architecture"] = self.architecture
        out["contract"] = dataclasses.asdict(self.contract) if self.contract else None
        out["weights"] = [dataclasses.asdict(w) for w in self.weights]
        out["model_args"] = dict(self.model_args)
        out["metrics"] = dict(self.metrics)
        return out


def tuples(value: Any) -> Any:
    """JSON lists back to the tuples a configuration holds (nested ones too)."""
    return tuple(tuples(v) for v in value) if isinstance(value, list) else value


def contract_from_dict(fields: Mapping[str, Any]) -> TaskContract:
    """A contract from its ``dataclasses.asdict`` form read back from JSON (a data set's own scheme included).

    Raises:
        TypeError, ValueError, AttributeError: For fields that do not make a contract.
    """
    values = {k: tuples(v) for k, v in fields.items()}
    if isinstance(values.get("label_scheme"), dict):  # a data set's own scheme, saved whole
        values["label_scheme"] = LabelScheme.from_dict(values["label_scheme"])
    return TaskContract(**values)


def config_of(model: object, expected: str = "a model") -> ModelConfig:
    """The configuration a zoo model carries as ``pretrained_cfg``.

    Raises:
        TypeError: If ``model`` was not built by `medseg_zoo.create_model` or ``from_pretrained``.
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, ModelConfig) or cfg.contract is None:
        raise TypeError(f"expected {expected} from medseg_zoo.create_model, got {type(model).__name__}")
    return cfg
