"""The residual U-Net baseline: MONAI's ``UNet`` registered with named configurations.

MONAI already implements this conv network well, so the zoo builds on its class instead of re-writing it, and
only changes how its maps are laid out on the CPU.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from monai.networks.blocks import ADN
from monai.networks.layers import SkipConnection
from monai.networks.nets import UNet as MonaiUNet
from torch import nn

from medseg_zoo._contract import ModelConfig, TaskContract, WeightSource
from medseg_zoo._registry import register_model
from medseg_zoo.features import feature_info
from medseg_zoo.layers.linear import CPU_PATHS
from medseg_zoo.layers.norms import is_channels_last, norm_act
from medseg_zoo.models.unetr import BRATS_MSD_CONTRACT

__all__ = ["UNet"]


CHANNELS_LAST_MIN_VOXELS = 64**3
"""Smallest input (voxels per channel) run channels-last on the CPU. Measured for a training step of the seed's
UNet, batch 2: slower at 32^3 (0.18 s against MONAI's layout's 0.13 s), even at 48^3 and 64x64x48, faster from
64^3 (0.39 s against 0.49 s for ``unet_brats_small``) and at 128x128x64 (1.69 s against 2.23 s)."""


class _FusedADN(ADN):
    """MONAI's norm -> dropout -> activation block whose instance norm and activation run as one fused,
    in-place step on channels-last CPU maps (`medseg_zoo.layers.norm_act`); the same children and parameters.

    In MONAI's UNet the block's input is always a convolution's fresh output, which nothing else reads, so it
    may be overwritten.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (x.device.type == "cpu" and is_channels_last(x)):
            return super().forward(x)
        dropout, act = self._modules.get("D"), self._modules.get("A")
        if dropout is not None and dropout.p > 0 and self.training:  # dropout sits between norm and activation
            y = dropout(norm_act(x, self.N))
            return y if act is None else act(y)
        return norm_act(x, self.N, act)


def _plain_nda(adn: ADN) -> bool:
    """The norm first, a plain instance norm (the fused path's only kind), then dropout and/or activation."""
    names, norm = list(adn._modules), getattr(adn, "N", None)
    return (
        names[:1] == ["N"]
        and names == [n for n in "NDA" if n in names]
        and type(norm) is nn.InstanceNorm3d
        and not norm.affine
        and not norm.track_running_stats
    )


class UNet(MonaiUNet):
    """MONAI's residual ``UNet``: the same arguments, parameters and state-dict keys, faster on the CPU.

    Shapes: ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``, each spatial size divisible by the
    product of ``strides``.

    When every norm is a plain instance norm followed by the activation (MONAI's default), the network runs
    channels-last on the CPU: oneDNN's 3D convolutions are faster on such maps, and each ``ADN`` block
    normalises its convolution's output in place and applies the activation in the same step through the zoo's
    fused path (torch's own instance norm is inaccurate on channels-last CPU maps; see
    `medseg_zoo.layers.norm_act`). Values are MONAI's to float32 rounding. Other devices and other norms run
    MONAI's code unchanged, and so do inputs smaller than `CHANNELS_LAST_MIN_VOXELS` per channel. (torch's CPU
    convolutions return the default layout for a batch of one, so one-window-at-a-time inference stays in it
    after the first convolution: the gain is for training batches.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        strides = [*self.strides, 1]  # the bottom layer keeps its input's size
        modules = [f"{name}.0" for name, _ in self._levels()] + [f"{self._levels()[-1][0]}.1.submodule"]
        self.feature_info = feature_info(
            (c, math.prod(strides[: i + 1]), m) for i, (c, m) in enumerate(zip(self.channels, modules, strict=True))
        )
        adns = [m for m in self.modules() if isinstance(m, ADN)]
        self.channels_last_on_cpu = CPU_PATHS and bool(adns) and all(map(_plain_nda, adns)) and self.dimensions == 3
        if self.channels_last_on_cpu:
            for adn in adns:
                adn.__class__ = _FusedADN  # the same module, children and parameters; only forward differs

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last_on_cpu and x.device.type == "cpu" and x[0, 0].numel() >= CHANNELS_LAST_MIN_VOXELS:
            # Plain tensors: MONAI MetaTensors would make every map a view, which the fused norms must copy.
            x = x.as_subclass(torch.Tensor).contiguous(memory_format=torch.channels_last_3d)
        return x

    def _levels(self) -> list[tuple[str, nn.Sequential]]:
        """The nested levels ``(down, SkipConnection(next level), up)`` with their names, top first; the bottom
        layer is the last level's skip submodule."""
        levels, name, block = [], "model", self.model
        while isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], SkipConnection):
            levels.append((name, block))
            name, block = f"{name}.1.submodule", block[1].submodule
        return levels

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each down layer's output and the bottom layer's: ``(B, channels[i], D / r_i, H / r_i, W / r_i)``, with
        ``r_i`` the product of the first ``i + 1`` strides."""
        x, maps = self._layout(x), []
        levels = self._levels()
        for _, level in levels:
            x = level[0](x)
            maps.append(x)
        maps.append(levels[-1][1][1].submodule(x))
        return maps

    def decoder_modules(self) -> list[str]:
        return [f"{name}.2" for name, _ in self._levels()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self._layout(x))


_PAPER = "Kerfoot et al., Left-Ventricle Quantification Using Residual U-Net, STACOM 2018 (MONAI UNet)"
_ARGS = {"spatial_dims": 3, "channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2}
_TINY = {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1}
_STEM = ("model.0.conv.unit0.conv.weight", "model.0.residual.weight")
_HEAD = ("model.2.",)  # MONAI's UNet nests levels; the last up block is always model.2

register_model(
    ModelConfig(
        name="unet_brats",
        builder=UNet,
        model_args=_ARGS,
        contract=BRATS_MSD_CONTRACT,
        weights=(
            WeightSource(
                repo_id="medseg-zoo/unet_brats",
                recipe="medseg-zoo train --model unet_brats --recipe unet_brats --data Task01_BrainTumour "
                "--output runs/unet_brats "
                "(the seed tutorial's recipe on MSD Task01)",
            ),
        ),
        license="Apache-2.0",
        paper=_PAPER,
        notes="The seed tutorial's baseline: monai UNet(3, 4, 3, channels=(16, 32, 64, 128, 256), "
        "strides=(2, 2, 2, 2), num_res_units=2). The tutorial reported 76.6 % mean Dice for it, scored with MONAI's "
        "tutorial label mapping (wrong for MSD Task01).",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
    )
)

register_model(
    ModelConfig(
        name="unet_brats_small",
        builder=UNet,
        model_args={"spatial_dims": 3, "channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 1},
        contract=dataclasses.replace(BRATS_MSD_CONTRACT, roi_size=(64, 64, 64)),
        weights=(
            WeightSource(
                repo_id="medseg-zoo/unet_brats_small",
                recipe="medseg-zoo demo trains it on synthetic BraTS-like data in minutes; no published weights",
            ),
        ),
        license="Apache-2.0",
        paper=_PAPER,
        notes="The demo's network: the seed's residual UNet one level shallower (4 levels of 16-32-64-128 channels) "
        "with one residual unit per level instead of two, and a 64^3 roi, so that it learns the synthetic tumours in "
        "minutes on two CPU cores.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
    )
)

register_model(
    ModelConfig(
        name="unet_spleen",
        builder=UNet,
        model_args={**_ARGS, "norm": "batch"},
        contract=TaskContract(
            # configs/inference.json of the MONAI bundle: Orientationd RAS, Spacingd 1.5/1.5/2.0,
            # ScaleIntensityRanged(-57, 164 -> 0, 1, clip), SlidingWindowInferer roi 96^3, softmax + argmax.
            in_channels=("CT",),
            out_channels=("background", "spleen"),
            activation="softmax",
            roi_size=(96, 96, 96),
            spacing=(1.5, 1.5, 2.0),
            orientation="RAS",
            normalization="clip_scale:-57:164",
            label_scheme="msd_task09",
        ),
        weights=(
            WeightSource(
                repo_id="MONAI/spleen_ct_segmentation",
                filename="models/model.pt",
                revision="main",
                md5="be4fa95e236df91766147c112ee6fafd",  # large_files.yml of the MONAI model-zoo bundle
                format="monai-bundle",
                notes="MONAI model-zoo bundle spleen_ct_segmentation; no Hub commit could be pinned offline, so the "
                "first verified download's sha256 is recorded and enforced.",
            ),
            WeightSource(  # the same file on NVIDIA's downloads (large_files.yml), tried if the Hub fails
                repo_id="",
                url="https://developer.download.nvidia.com/assets/Clara/monai/tutorials/model_zoo/model_spleen_ct_segmentation_v1.pt",
                md5="be4fa95e236df91766147c112ee6fafd",
                format="monai-bundle",
            ),
        ),
        license="Apache-2.0 (MONAI model zoo); MSD Task09 data terms (CC-BY-SA 4.0) apply",
        paper=_PAPER,
        metrics={"mean_dice": 0.96, "data": "MSD Task09_Spleen validation split of the MONAI bundle"},
        notes="MONAI model-zoo spleen_ct_segmentation: UNet(3, 1, 2, channels=(16, 32, 64, 128, 256), "
        "strides=(2, 2, 2, 2), num_res_units=2, norm=batch).",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
    )
)

register_model(
    ModelConfig(
        name="unet",
        builder=UNet,
        # MONAI's defaults (num_res_units 0); channels and strides, which MONAI requires, as the seed's.
        model_args={"spatial_dims": 3, "channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2)},
        default_roi=(96, 96, 96),
        paper=_PAPER,
        notes="Generic MONAI UNet with MONAI's defaults (num_res_units=0) and channels 16-256, strides 2; give "
        "in_channels and out_channels.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
    )
)
