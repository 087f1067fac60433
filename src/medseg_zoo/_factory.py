"""create_model: registry entry -> constructor arguments -> network, with its contract attached."""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from medseg_zoo._contract import Activation, ModelConfig, TaskContract
from medseg_zoo._registry import get_config, list_models
from medseg_zoo.errors import InvalidArgumentError, InvalidOverrideError, PretrainedUnavailableError

__all__ = ["count_parameters", "create_ensemble", "create_model"]

if TYPE_CHECKING:
    from medseg_zoo.transforms.labels import LabelScheme

Channels = int | Sequence[str] | None
_RESERVED = ("in_channels", "out_channels")


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    in_channels: Channels = None,
    out_channels: Channels = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    activation: Activation | None = None,
    label_scheme: str | LabelScheme | None = "auto",
    roi_size: int | Sequence[int] | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: Registry name, see `medseg_zoo.list_models`.
        pretrained: Load the published weights of the configuration.
        in_channels: Input channels: a count, or the channel names in order. Required for generic
            architecture names (``"unetr"``, ``"unet"``, ``"segresnet"``, ``"swin_unetr"``, ``"resenc_unet"``,
            ``"primus"``); for task names it replaces the contract's channels.
        out_channels: Output channels: a count, or the output names in order; same rules.
        cache_dir: Cache root for downloaded weights (default: the Hugging Face cache, ``$HF_HOME``).
        token: Hugging Face token for private repositories (default: the logged-in token, if any).
        local_files_only: Use only cached weights (as does ``HF_HUB_OFFLINE=1``).
        activation: ``"sigmoid"`` (overlapping regions) or ``"softmax"`` (exclusive classes). By default the
            configuration's while its outputs are kept, the label scheme's kind when one is given, and
            ``"softmax"`` for new outputs.
        label_scheme: The label scheme the outputs map to (a built-in name or a ``LabelScheme``); its channel
            names name the outputs when ``out_channels`` is a count. ``"auto"``: the configuration's while its
            outputs are kept, else ``None`` (labels are the class indices).
        roi_size: Patch size in voxels the model is trained and run on (the contract's ``roi_size``; for
            architectures built for one size, such as UNETR's ``img_size``, also the constructor's).
        features_only: Return the encoder alone as a `medseg_zoo.features.FeatureExtractor`: its multi-scale
            maps (with the pretrained weights when asked for), as timm's ``features_only``.
        out_indices: The maps ``features_only`` returns (indices into ``model.feature_info``; default all).
        **overrides: Constructor arguments replacing the configuration's (e.g. ``img_size``, ``dropout_rate``).

    Returns:
        The network, with its configuration (effective arguments and task contract) as ``model.pretrained_cfg`` and,
        with ``pretrained=True``, ``model.load_report`` (what was loaded, adapted and left fresh).

    With ``pretrained=True`` and other ``in_channels`` / ``out_channels`` / roi than the weights', the input stem is
    adapted, the head re-initialised and the position embedding interpolated; see ``model.load_report``.

    Raises:
        UnknownModelError: Unknown name (the message lists the closest ones).
        InvalidOverrideError: An argument the architecture does not take, or missing channels (a ``TypeError``).
        InvalidArgumentError: A value an argument cannot take (a ``ValueError``): ``spatial_dims`` other than 3,
            a roi that is not three positive integers, an unknown label scheme or activation.
        PretrainedUnavailableError: ``pretrained=True`` for a configuration without published weights.
        WeightsError: The weights cannot be fetched, fail their hash check, or do not fit.
    """
    cfg = get_config(name)
    if cfg.members:
        raise InvalidOverrideError(
            f"{name} is an ensemble of {len(cfg.members)} models: create_ensemble({name!r}, pretrained=...) builds "
            f"them all (predict averages them), create_model({cfg.members[0]!r}) one"
        )
    _check_overrides(cfg, overrides)
    if pretrained and not cfg.has_weights:
        raise PretrainedUnavailableError(_unavailable_message(cfg))
    if cfg.headless and out_channels is None and label_scheme in ("auto", None) and not features_only:
        raise InvalidOverrideError(
            f"{name}'s weights are a starting point without a task head: give your task's out_channels (a count or "
            f"names, or a label_scheme), e.g. create_model({name!r}, pretrained=True, out_channels=2)"
        )
    roi_name = "roi_size"
    if cfg.roi_arg is not None and cfg.roi_arg in overrides:
        if roi_size is not None:
            raise InvalidOverrideError(f"{cfg.name}: give roi_size or {cfg.roi_arg}, not both")
        roi_size, roi_name = overrides.pop(cfg.roi_arg), cfg.roi_arg
    contract = _resolve_contract(cfg, in_channels, out_channels, activation, label_scheme, roi_size, roi_name)
    args = {**cfg.model_args, **overrides}
    if cfg.roi_arg is not None:
        args[cfg.roi_arg] = contract.roi_size
    model = cfg.builder(in_channels=len(contract.in_channels), out_channels=len(contract.out_channels), **args)
    model.pretrained_cfg = cfg.replace(
        model_args={k: v for k, v in args.items() if k != cfg.roi_arg}, contract=contract
    )
    if features_only and not hasattr(model, "forward_features"):
        raise InvalidOverrideError(f"{name}: {cfg.architecture} has no encoder whose maps features_only could give")
    if pretrained:
        from medseg_zoo._pretrained import load_pretrained

        model.load_report = load_pretrained(
            model, cfg, contract, cache_dir=cache_dir, token=token, local_files_only=local_files_only
        )
    if features_only:
        from medseg_zoo.features import FeatureExtractor

        return FeatureExtractor(model, out_indices)
    if out_indices is not None:
        raise InvalidOverrideError(f"{name}: out_indices picks feature maps; give features_only=True with it")
    return model


def create_ensemble(name: str, pretrained: bool = False, **options: Any) -> list[nn.Module]:
    """The models of a registered ensemble (e.g. the five folds of ``swin_unetr_brats21``); `medseg_zoo.predict`
    and `medseg_zoo.Predictor` average their probabilities when given the list.

    Args:
        name: An ensemble's registry name, or any model name (a list of one).
        pretrained: Load each member's published weights.
        **options: Passed to `create_model` for every member.
    """
    cfg = get_config(name)
    return [create_model(member, pretrained, **options) for member in (cfg.members or (name,))]


def count_parameters(name: str) -> int:
    """Parameters of a registered configuration at full size, counted without allocating its weights (an
    ensemble: one member's)."""
    cfg = get_config(name)
    if cfg.members:
        return count_parameters(cfg.members[0])
    channels = {} if cfg.contract else {"in_channels": 1, "out_channels": 2}
    if cfg.headless:
        channels = {"out_channels": len(cfg.contract.out_channels)}
    return sum(p.numel() for p in meta_model(name, **channels).parameters())


def meta_model(name: str, **options: Any) -> nn.Module:
    """``create_model(name, **options)`` on the meta device: shapes without memory (to count or plan with).
    Networks that compute values while built (SwinUNETR) are built on the CPU and moved there."""
    import torch

    try:
        with torch.device("meta"):
            return create_model(name, **options)
    except RuntimeError:
        return create_model(name, **options).to("meta")


def _signature(builder: Any) -> inspect.Signature:
    """The constructor's signature; a subclass that hands ``*args, **kwargs`` on is read from the class it
    extends (the zoo's UNet extends MONAI's)."""
    if isinstance(builder, type):
        for klass in builder.__mro__:
            if "__init__" in vars(klass):
                signature = inspect.signature(klass.__init__)
                kinds = {p.kind for p in signature.parameters.values()}
                if not kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}:
                    return signature.replace(parameters=list(signature.parameters.values())[1:])  # without self
    return inspect.signature(builder)


def _check_overrides(cfg: ModelConfig, overrides: dict[str, Any]) -> None:
    """Refuse unknown arguments (a ``TypeError``) and a ``spatial_dims`` other than 3 (a ``ValueError``); drop
    ``spatial_dims=3`` for architectures that are 3-D without saying so."""
    params = _signature(cfg.builder).parameters
    if "spatial_dims" in overrides:
        value = overrides["spatial_dims"]
        if isinstance(value, bool) or value != 3:
            raise InvalidArgumentError(
                f"{cfg.name}: medseg-zoo models work on 3-D volumes; spatial_dims must be 3, got {value!r}"
            )
        if "spatial_dims" not in params:
            del overrides["spatial_dims"]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p not in _RESERVED]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise InvalidOverrideError(
            f"{cfg.name}: {cfg.architecture} takes no argument {', '.join(map(repr, unknown))}. "
            f"Valid arguments: in_channels, out_channels, {', '.join(valid)}"
        )


def _channel_names(
    value: Channels, current: tuple[str, ...] | None, prefix: str, what: str, name: str
) -> tuple[str, ...] | None:
    """Names for a channel argument: given names, the current ones for an unchanged count, else generic ones."""
    if value is None:
        return current
    if _is_count(value):
        value = int(value)
        if value < 1:
            raise InvalidArgumentError(f"{name}: {what} must be at least 1, got {value}")
        if current is not None and len(current) == value:
            return current
        return tuple(f"{prefix}{i}" for i in range(value))
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise InvalidOverrideError(f"{name}: {what} must be a count or a sequence of names, got {value!r}")
    names = tuple(value)
    if not names or len(set(names)) != len(names):
        raise InvalidArgumentError(f"{name}: {what} names must be non-empty and unique, got {names!r}")
    return names


def _resolve_contract(
    cfg: ModelConfig,
    in_channels: Channels,
    out_channels: Channels,
    activation: Activation | None,
    label_scheme: str | LabelScheme | None,
    roi_size: int | Sequence[int] | None,
    roi_name: str,
) -> TaskContract:
    from medseg_zoo.transforms.labels import get_scheme

    base = cfg.contract
    scheme = None
    if label_scheme != "auto" and label_scheme is not None:
        try:
            scheme = get_scheme(label_scheme)
        except KeyError as exc:
            raise InvalidArgumentError(f"{cfg.name}: {exc.args[0]}") from None
    if activation is not None and activation not in ("sigmoid", "softmax"):
        raise InvalidArgumentError(f"{cfg.name}: activation must be 'sigmoid' or 'softmax', got {activation!r}")
    if scheme is not None and (out_channels is None or _is_count(out_channels)):
        # A count (or nothing) with a scheme: the scheme names the outputs.
        if out_channels is not None and out_channels != len(scheme.channels):
            raise InvalidArgumentError(
                f"{cfg.name}: out_channels={out_channels} but label scheme {scheme.name!r} has "
                f"{len(scheme.channels)} outputs ({', '.join(scheme.channels)})"
            )
        out_channels = scheme.channels
    ins = _channel_names(in_channels, base and base.in_channels, "channel_", "in_channels", cfg.name)
    outs = _channel_names(out_channels, base and base.out_channels, "class_", "out_channels", cfg.name)
    if ins is None or outs is None:
        missing = " and ".join(n for n, v in (("in_channels", ins), ("out_channels", outs)) if v is None)
        raise InvalidOverrideError(
            f"{cfg.name} is a generic architecture: give {missing}, e.g. create_model({cfg.name!r}, "
            "in_channels=4, out_channels=3), or use a task configuration such as 'unetr_brats'"
        )
    kept = base is not None and outs == base.out_channels
    if isinstance(label_scheme, str) and label_scheme == "auto":
        label_scheme = base.label_scheme if kept else None
    if activation is None:
        if scheme is not None:
            activation = "softmax" if scheme.exclusive else "sigmoid"
        else:
            activation = base.activation if kept else "softmax"
    if base is None:
        base = TaskContract(in_channels=ins, out_channels=outs, activation=activation, roi_size=cfg.default_roi)
    roi = base.roi_size if roi_size is None else (roi_size,) * 3 if _is_count(roi_size) else roi_size
    try:
        return dataclasses.replace(
            base,
            in_channels=ins,
            out_channels=outs,
            roi_size=roi,
            activation=activation,
            label_scheme=label_scheme,
        )
    except ValueError as exc:  # named as the caller named it (UNETR's img_size)
        raise InvalidArgumentError(f"{cfg.name}: {str(exc).replace('roi_size must', f'{roi_name} must')}") from None


def _is_count(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _unavailable_message(cfg: ModelConfig) -> str:
    if not cfg.weights:
        return (
            f"{cfg.name} has no pretrained weights (it is an architecture without a trained configuration). "
            f"Models with weights: {', '.join(list_models(pretrained=True)) or 'none yet'}"
        )
    recipes = "; ".join(f"{w.repo_id}: {w.recipe}" for w in cfg.weights)
    return (
        f"the weights of {cfg.name} are not published yet ({recipes}). Train it without pretrained weights, "
        f"or use a model with weights: {', '.join(list_models(pretrained=True)) or 'none yet'}"
    )
