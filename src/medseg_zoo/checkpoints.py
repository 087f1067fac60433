"""Zoo models from third-party checkpoint files and MONAI bundles: build, convert, load exactly.

This sits above `medseg_zoo.create_model`; the key mappings it uses (`medseg_zoo.convert`) sit below the loading
of published weights, so both paths share them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg_zoo._factory import create_model
from medseg_zoo._pretrained import fill_computed, load_state, read_checkpoint
from medseg_zoo._registry import get_config, list_models
from medseg_zoo.convert import FORMATS, ConversionError, convert_state_dict

__all__ = ["convert_checkpoint", "load_monai_bundle"]


def convert_checkpoint(source: str | os.PathLike, fmt: str, model_name: str, **create_args: Any) -> nn.Module:
    """A zoo model with the weights of a third-party checkpoint, loaded exactly.

    Args:
        source: A MONAI bundle folder (``"monai-bundle"``), or a checkpoint file in one of `medseg_zoo.convert.FORMATS`
            (``.pt``/``.pth``, opened with ``torch.load(weights_only=True)``; zipped BraTS 2021 Swin UNETR folds
            are read from their archive).
        fmt: The source layout, a key of `medseg_zoo.convert.FORMATS`.
        model_name: The registered configuration whose architecture receives the weights.
        **create_args: Passed to `medseg_zoo.create_model` (e.g. ``in_channels``, ``out_channels``, ``img_size``)
            for the non-bundle formats; a configuration whose weights have no task head needs ``out_channels``.

    Returns:
        The model, with ``model.load_report``. Where the format fills only a part of the model (a pretrained
        encoder), the rest keeps its fresh initialisation and the report lists it.

    Raises:
        ConversionError: An unknown format, a key the converter does not know, or weights that do not fit.
    """
    if fmt == "monai-bundle":
        return load_monai_bundle(source, model_name)
    if fmt not in FORMATS:
        raise ConversionError(f"unknown source format {fmt!r}; formats: {', '.join(FORMATS)}")
    cfg = get_config(model_name)
    path = Path(source)
    published = next((w for w in cfg.weights if w.format == fmt), None)
    from medseg_zoo._download import WeightsError

    try:
        state = convert_state_dict(read_checkpoint(path, fmt, published.member if published else None), fmt, cfg)
        model = create_model(model_name, **create_args)
        covers = published.covers if published else ()
        model.load_report = load_state(model, cfg, model.pretrained_cfg.contract, state, str(path), covers)
    except WeightsError as exc:
        raise ConversionError(f"{exc}{_suggest(state, model_name) if 'state' in locals() else ''}") from None
    return model


def _suggest(state: dict[str, Any], model_name: str) -> str:
    """The registered configurations of the same architecture whose embedding width is the checkpoint's."""
    key = "patch_embed.proj.weight"
    if key not in state:
        return ""
    width = state[key].shape[0]
    fits = []
    for name in list_models():
        cfg = get_config(name)
        if name != model_name and cfg.builder is get_config(model_name).builder and not cfg.members:
            channels = {} if cfg.contract else {"in_channels": 1, "out_channels": 1}
            with torch.device("meta"):
                other = create_model(name, **({"out_channels": 2} if cfg.headless else channels))
            if other.state_dict()[key].shape[0] == width:
                fits.append(name)
    hint = f"use {' or '.join(fits)}" if fits else "pass the checkpoint's hidden_size to create_model"
    return f". The checkpoint's hidden size is {width}: {hint}"


def _resolve(value: object, config: dict, where: str, depth: int = 0) -> object:
    """A bundle config value with its ``@name`` references (``@a::b`` / ``@a#b`` for nested items) replaced by
    the items they name; expressions (``$...``) and macros (``%...``) are bundle code, which is never run."""
    if isinstance(value, list):
        return [_resolve(v, config, where, depth) for v in value]
    if not isinstance(value, str):
        return value
    if value.startswith(("$", "%")):
        raise ConversionError(
            f"{where} is {value!r}, a bundle expression or macro; medseg-zoo does not run bundle code: write its "
            "value into the bundle's configs/inference.json"
        )
    if not value.startswith("@"):
        return value
    if depth > 16:
        raise ConversionError(f"{where}: the references starting at {value!r} go round in a circle")
    node: object = config
    for part in value[1:].replace("::", "#").split("#"):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ConversionError(f"{where} refers to {value!r}, which the config does not define") from None
    return _resolve(node, config, where, depth + 1)


# Constructor arguments that old bundles pass but the current MONAI classes reject or ignore.
_STALE_ARGS = {"SwinUNETR": {"img_size"}}


def load_monai_bundle(folder: str | os.PathLike, model_name: str) -> nn.Module:
    """Build the zoo model ``model_name`` from a MONAI model-zoo bundle folder (``configs/inference.json`` with
    its ``network_def``, ``models/model.pt``) and load the bundle's weights strictly.

    The bundle's network class must be the class the zoo registers under ``model_name`` (UNet, SegResNet, ...);
    its ``network_def`` arguments override the registered ones, less those newer MONAI rejects.

    Raises:
        ConversionError: Missing files, another network class, or weights that do not fit.
    """
    root = Path(folder)
    config_path, weights_path = root / "configs" / "inference.json", root / "models" / "model.pt"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ConversionError(f"{path}: not found; a MONAI bundle holds configs/inference.json and models/model.pt")
    try:
        config = json.loads(config_path.read_text())
        network = dict(config["network_def"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConversionError(f"{config_path}: no network_def ({type(exc).__name__}: {exc})") from None
    network = {k: _resolve(v, config, f"{config_path}: network_def[{k!r}]") for k, v in network.items()}
    cfg = get_config(model_name)
    target = str(network.pop("_target_", "")).rsplit(".", 1)[-1]
    if target != cfg.builder.__name__:
        raise ConversionError(
            f"{config_path}: the bundle's network is {target!r}, {model_name} is {cfg.builder.__name__}"
        )
    for key in _STALE_ARGS.get(target, set()):
        network.pop(key, None)
    in_channels, out_channels = network.pop("in_channels", None), network.pop("out_channels", None)
    model = create_model(model_name, in_channels=in_channels, out_channels=out_channels, **network)
    state = convert_state_dict(read_checkpoint(weights_path, "monai-bundle"), "monai-bundle", cfg)
    try:
        model.load_state_dict(fill_computed(state, model), strict=True)
    except RuntimeError as exc:
        raise ConversionError(f"{weights_path}: the weights do not fit {model_name} ({exc})") from None
    return model
