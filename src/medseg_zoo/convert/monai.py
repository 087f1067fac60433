"""MONAI ``UNETR`` checkpoints -> `medseg_zoo.models.UNETR`.

Covers ``proj_type`` conv and perceptron, ``conv_block`` true or false, ``res_block`` true or false, and
checkpoints of every MONAI release: before 1.4, 1.4-1.5 (unused ``cross_attn.*`` weights) and 1.6 (unused
``norm_cross_attn`` LayerNorm); the unused weights are dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from medseg_zoo._contract import WeightSource
from medseg_zoo.convert._common import ConversionError, Rule, map_keys

__all__ = ["convert_unetr", "load_monai_bundle"]

# Layers of MONAI's UnetResBlock / UnetBasicBlock -> the native ResBlock.
_RES_LAYERS = {
    "conv1.conv": "conv1.conv",
    "norm1": "conv1.norm",
    "conv2.conv": "conv2.conv",
    "norm2": "conv2.norm",
    "conv3.conv": "shortcut.conv",
    "norm3": "shortcut.norm",
}
_RES = r"\.(?P<layer>conv[123]\.conv|norm[123])\.(?P<param>\w+)"


def _res_block(src: str, dst: str) -> Rule:
    """Rule for a residual block under ``src`` (a regex, may have named groups) moved under ``dst`` (format)."""

    def target(m):
        return f"{dst.format(**m.groupdict())}.{_RES_LAYERS[m['layer']]}.{m['param']}"

    return src + _RES, target


def _next_up(dst: str) -> object:
    return lambda m: f"{dst}.ups.{int(m['j']) + 1}.weight"


def _rules() -> list[Rule]:
    rules: list[Rule] = [
        (r"vit\.patch_embedding\.patch_embeddings(?:\.1)?\.(weight|bias)", r"patch_embed.proj.\1"),
        (r"vit\.patch_embedding\.position_embeddings", "patch_embed.pos_embed"),
        (r"vit\.blocks\.(\d+)\.norm([12])\.(weight|bias)", r"encoder.blocks.\1.norm\2.\3"),
        (r"vit\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.blocks.\1.attn.qkv.\2"),
        (r"vit\.blocks\.(\d+)\.attn\.out_proj\.(weight|bias)", r"encoder.blocks.\1.attn.proj.\2"),
        (r"vit\.blocks\.(\d+)\.mlp\.linear([12])\.(weight|bias)", r"encoder.blocks.\1.mlp.fc\2.\3"),
        (r"vit\.blocks\.\d+\.(norm_cross_attn|cross_attn)\..+", lambda m: None),  # never used by UNETR
        (r"vit\.norm\.(weight|bias)", r"encoder.norm.\1"),
        _res_block(r"encoder1\.layer", "stem"),
        (r"out\.conv\.conv\.(weight|bias)", r"head.\1"),
    ]
    for i, src in enumerate(("encoder2", "encoder3", "encoder4")):
        dst = f"skips.{i}"
        rules += [
            (rf"{src}\.transp_conv_init\.conv\.weight", f"{dst}.ups.0.weight"),
            (rf"{src}\.blocks\.(?P<j>\d+)\.0\.conv\.weight", _next_up(dst)),  # conv_block: (up, res block)
            _res_block(rf"{src}\.blocks\.(?P<j>\d+)\.1", dst + ".refines.{j}"),
            (rf"{src}\.blocks\.(?P<j>\d+)\.conv\.weight", _next_up(dst)),  # no conv_block: bare up
        ]
    for i, src in enumerate(("decoder5", "decoder4", "decoder3", "decoder2")):
        rules += [
            (rf"{src}\.transp_conv\.conv\.weight", f"decoders.{i}.up.weight"),
            _res_block(rf"{src}\.conv_block", f"decoders.{i}.conv"),
        ]
    return rules


_RULES = _rules()


def convert_unetr(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a ``monai.networks.nets.UNETR`` state dict to the native UNETR layout.

    The attention layouts agree (fused qkv rows ordered ``(qkv, head, dim_head)``), so this only renames keys,
    and drops the cross-attention weights that MONAI created but UNETR never uses.

    Raises:
        ConversionError: If a key is not part of MONAI's UNETR layout.
    """
    return map_keys(state_dict, _RULES, source="MONAI UNETR")


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
    from medseg_zoo._factory import create_model
    from medseg_zoo._pretrained import _convert, fill_computed, read_checkpoint
    from medseg_zoo._registry import get_config

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
    state = _convert(
        read_checkpoint(weights_path, "monai-bundle"), WeightSource(repo_id="", format="monai-bundle"), cfg
    )
    try:
        model.load_state_dict(fill_computed(state, model), strict=True)
    except RuntimeError as exc:
        raise ConversionError(f"{weights_path}: the weights do not fit {model_name} ({exc})") from None
    return model
