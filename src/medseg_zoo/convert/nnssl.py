"""nnssl (OpenMind) checkpoints -> `medseg_zoo.models.ResEncUNet` and `medseg_zoo.models.Primus`.

``checkpoint_final.pth`` holds ``{"network_weights": ..., "nnssl_adaptation_plan": ...}`` with the state dict of
``dynamic_network_architectures``' ``ResidualEncoderUNet`` (``encoder.stem``, ``encoder.stages``, the decoder's
``transpconvs``, ``stages`` and deep-supervision ``seg_layers``) or ``Primus`` (``down_projection``, ``eva``,
``up_projection``). That package registers each convolution twice (``.conv`` and ``.all_modules.0``) and the
encoder again inside the decoder (``decoder.encoder.*``): the copies must equal the originals, and are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from medseg_zoo._contract import ModelConfig
from medseg_zoo.convert._common import ConversionError, map_keys

__all__ = ["convert"]

_CONV_NORM = r"(?P<part>conv|norm)\.(?P<param>weight|bias)"


def _resenc_rules(decoder_stages: int) -> list:
    last = decoder_stages - 1
    return [
        (rf"encoder\.stem\.convs\.0\.{_CONV_NORM}", r"stem.\g<part>.\g<param>"),
        (rf"encoder\.stages\.(\d+)\.blocks\.(\d+)\.(conv[12])\.{_CONV_NORM}", r"stages.\1.\2.\3.\g<part>.\g<param>"),
        (
            rf"encoder\.stages\.(\d+)\.blocks\.(\d+)\.skip\.\d\.{_CONV_NORM}",
            r"stages.\1.\2.shortcut.\g<part>.\g<param>",
        ),
        (r"decoder\.transpconvs\.(\d+)\.(weight|bias)", r"ups.\1.\2"),
        (rf"decoder\.stages\.(\d+)\.convs\.(\d+)\.{_CONV_NORM}", r"decoders.\1.\2.\g<part>.\g<param>"),
        (rf"decoder\.seg_layers\.{last}\.(weight|bias)", r"head.\1"),
        (r"decoder\.seg_layers\.\d+\..+", lambda m: None),  # deep-supervision heads of coarser stages
    ]


_PRIMUS_RULES = [
    (r"down_projection\.proj\.(weight|bias)", r"patch_embed.\1"),
    (r"eva\.pos_embed", "pos_embed"),
    (r"eva\.blocks\.(.+)", r"blocks.\1"),
    (r"eva\.norm\.(weight|bias)", r"norm.\1"),
    (r"up_projection\.decode\.(\d+)\.0\.(weight|bias)", r"decoder.\1.up.\2"),
    (r"up_projection\.decode\.(\d+)\.1\.(weight|bias)", r"decoder.\1.norm.\2"),
    (r"up_projection\.decode\.(\d+)\.(weight|bias)", r"head.\2"),
    (r"mask_token", lambda m: None),  # the masked-image-modelling token of pretraining
]
_ALIAS = re.compile(r"(?P<owner>.+)\.all_modules\.(?P<index>\d+)\.(?P<param>weight|bias)")


def _drop_aliases(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Without ``decoder.encoder.*`` and ``*.all_modules.N.*``, each checked against the tensor it repeats."""
    out = {}
    for key, value in state.items():
        alias = _ALIAS.fullmatch(key)
        original = None
        if key.startswith("decoder.encoder."):
            original = "encoder." + key.removeprefix("decoder.encoder.")
        elif alias:  # all_modules lists conv, (dropout,) norm, nonlin: conv first, the norm the next with weights
            part = "conv" if alias["index"] == "0" else "norm"
            original = f"{alias['owner']}.{part}.{alias['param']}"
        if original is None:
            out[key] = value
        elif original not in state or not torch.equal(state[original], value):
            raise ConversionError(f"nnssl checkpoint: {key} should repeat {original}, but it differs or is missing")
    return out


def convert(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Map an nnssl ``network_weights`` state dict to the zoo layout of ``cfg``'s architecture (ResEnc U-Net or
    Primus).

    Raises:
        ConversionError: If a key is not part of the layout, or a repeated tensor differs from its original.
    """
    state = _drop_aliases(state_dict)
    if cfg.architecture.endswith("resenc_unet.ResEncUNet"):
        stages = len({m[1] for k in state if (m := re.match(r"decoder\.stages\.(\d+)\.", k))})
        return map_keys(state, _resenc_rules(stages), source="nnssl ResEnc U-Net")
    if cfg.architecture.endswith("primus.Primus"):
        return map_keys(state, _PRIMUS_RULES, source="nnssl Primus")
    raise ConversionError(f"nnssl checkpoints fill ResEnc U-Nets and Primus models; {cfg.name} is {cfg.architecture}")
