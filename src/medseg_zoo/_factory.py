"""create_model: registry entry -> constructor arguments -> network, with its contract attached."""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from medseg_zoo._contract import ModelConfig, TaskContract
from medseg_zoo._registry import get_config, list_models
from medseg_zoo.errors import InvalidOverrideError, PretrainedUnavailableError

__all__ = ["create_model"]

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
    **overrides: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: Registry name, see :func:`medseg_zoo.list_models`.
        pretrained: Load the published weights of the configuration.
        in_channels: Input channels: a count, or the channel names in order. Required for generic
            architecture names (``"unetr"``, ``"unet"``); for task names it replaces the contract's channels.
        out_channels: Output channels: a count, or the output names in order; same rules.
        cache_dir: Cache root for downloaded weights (default: the Hugging Face cache, ``$HF_HOME``).
        token: Hugging Face token for private repositories (default: the logged-in token, if any).
        local_files_only: Use only cached weights (as does ``HF_HUB_OFFLINE=1``).
        **overrides: Constructor arguments replacing the configuration's (e.g. ``img_size``, ``dropout_rate``).

    Returns:
        The network, with its configuration (effective arguments and task contract) as
        ``model.pretrained_cfg``; with ``pretrained=True`` also ``model.load_report`` (what was adapted).

    With ``pretrained=True`` and other ``in_channels`` / ``out_channels`` / roi than the weights', the input stem is
    adapted, the head re-initialised and the position embedding interpolated; see ``model.load_report``.

    Raises:
        UnknownModelError: Unknown name (the message lists the closest ones).
        InvalidOverrideError: An argument the architecture does not take, or missing channels.
        PretrainedUnavailableError: ``pretrained=True`` for a configuration without published weights.
        WeightsError: The weights cannot be fetched, fail their hash check, or do not fit.
    """
    cfg = get_config(name)
    _check_overrides(cfg, overrides)
    if pretrained and not cfg.has_weights:
        raise PretrainedUnavailableError(_unavailable_message(cfg))
    contract = _resolve_contract(cfg, in_channels, out_channels, overrides)
    args = {**cfg.model_args, **overrides}
    if cfg.roi_arg is not None:
        args[cfg.roi_arg] = contract.roi_size
    model = cfg.builder(in_channels=len(contract.in_channels), out_channels=len(contract.out_channels), **args)
    model.pretrained_cfg = cfg.replace(
        model_args={k: v for k, v in args.items() if k != cfg.roi_arg}, contract=contract
    )
    if pretrained:
        from medseg_zoo._pretrained import load_pretrained

        model.load_report = load_pretrained(
            model, cfg, contract, cache_dir=cache_dir, token=token, local_files_only=local_files_only
        )
    return model


def _check_overrides(cfg: ModelConfig, overrides: dict[str, Any]) -> None:
    params = inspect.signature(cfg.builder).parameters
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
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise InvalidOverrideError(f"{name}: {what} must be at least 1, got {value}")
        if current is not None and len(current) == value:
            return current
        return tuple(f"{prefix}{i}" for i in range(value))
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise InvalidOverrideError(f"{name}: {what} must be a count or a sequence of names, got {value!r}")
    names = tuple(value)
    if not names or len(set(names)) != len(names):
        raise InvalidOverrideError(f"{name}: {what} names must be non-empty and unique, got {names!r}")
    return names


def _resolve_contract(
    cfg: ModelConfig, in_channels: Channels, out_channels: Channels, overrides: dict[str, Any]
) -> TaskContract:
    base = cfg.contract
    ins = _channel_names(in_channels, base and base.in_channels, "channel_", "in_channels", cfg.name)
    outs = _channel_names(out_channels, base and base.out_channels, "class_", "out_channels", cfg.name)
    if ins is None or outs is None:
        missing = " and ".join(n for n, v in (("in_channels", ins), ("out_channels", outs)) if v is None)
        raise InvalidOverrideError(
            f"{cfg.name} is a generic architecture: give {missing}, e.g. create_model({cfg.name!r}, "
            "in_channels=4, out_channels=3), or use a task configuration such as 'unetr_brats'"
        )
    if base is None:
        base = TaskContract(in_channels=ins, out_channels=outs, activation="softmax", roi_size=cfg.default_roi)
    roi = base.roi_size
    if cfg.roi_arg is not None and cfg.roi_arg in overrides:
        value = overrides.pop(cfg.roi_arg)
        roi = (value,) * 3 if isinstance(value, int) else tuple(value)
    return dataclasses.replace(base, in_channels=ins, out_channels=outs, roi_size=roi)


def _unavailable_message(cfg: ModelConfig) -> str:
    if not cfg.weights:
        return (
            f"{cfg.name} has no pretrained weights (it is an architecture without a trained configuration). "
            f"Models with weights: {', '.join(list_models(pretrained=True)) or 'none yet'}"
        )
    recipes = "; ".join(f"{w.repo_id}: {w.recipe}" for w in cfg.weights)
    return (
        f"the weights of {cfg.name} are not published yet ({recipes}). Use pretrained=False to train it, "
        f"or a model with weights: {', '.join(list_models(pretrained=True)) or 'none yet'}"
    )
