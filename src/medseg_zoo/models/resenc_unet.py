"""The residual-encoder U-Net of nnU-Net (Isensee et al., 2024) and its OpenMind self-supervised encoder.

Same arithmetic as ``dynamic_network_architectures``' ``ResidualEncoderUNet`` (nnU-Net's ResEnc presets; the
parity reference in the tests), built from the zoo's blocks with one name per parameter: that package registers
each convolution twice (``conv`` and ``all_modules.0``) and the whole encoder again inside its decoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from medseg_zoo._contract import ModelConfig, TaskContract, WeightSource
from medseg_zoo._registry import register_model
from medseg_zoo.features import feature_info
from medseg_zoo.layers import ConvNormAct, ResBlock, UpConv3d

__all__ = ["ResEncUNet"]


def _leaky_relu() -> nn.Module:
    return nn.LeakyReLU(0.01, inplace=True)


class ResEncUNet(nn.Module):
    """U-Net with a residual encoder (ResNet-D blocks) and a plain convolutional decoder.

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, D, H, W)``, each spatial size divisible by the product of
    ``strides``.

    Stem and head: ``stem`` reads the input channels; ``head`` (a 1x1x1 convolution) writes the outputs. The
    encoder is ``stem`` and ``stages``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (logits).
        features: Channels of each stage.
        strides: Downsampling of each stage's first block (the first is usually 1).
        blocks: Residual blocks per stage.
        decoder_convs: Conv-norm-act layers per decoder stage.
        conv_bias: Bias on the 3x3x3 convolutions (nnU-Net's ResEnc: yes; the shortcuts never).
        norm_affine: Learned scale and shift in the instance norms.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        features: Sequence[int] = (32, 64, 128, 256, 320, 320),
        strides: Sequence[int] = (1, 2, 2, 2, 2, 2),
        blocks: Sequence[int] = (1, 3, 4, 6, 6, 6),
        decoder_convs: int = 1,
        conv_bias: bool = True,
        norm_affine: bool = True,
    ) -> None:
        super().__init__()
        if not len(features) == len(strides) == len(blocks) or len(features) < 2:
            raise ValueError(
                f"features, strides and blocks must name the same number (>= 2) of stages, got {tuple(features)}, "
                f"{tuple(strides)}, {tuple(blocks)}"
            )
        conv = {"bias": conv_bias, "act": _leaky_relu, "norm_kwargs": {"affine": norm_affine, "eps": 1e-5}}
        self.strides = tuple(strides)
        self.stem = ConvNormAct(in_channels, features[0], 3, **conv)
        self.stages = nn.ModuleList()
        previous = features[0]
        for width, stride, count in zip(features, strides, blocks, strict=True):
            self.stages.append(
                nn.ModuleList(
                    ResBlock(
                        previous if b == 0 else width,
                        width,
                        stride=stride if b == 0 else 1,
                        shortcut_bias=False,
                        **conv,
                    )
                    for b in range(count)
                )
            )
            previous = width
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for s in range(len(features) - 1, 0, -1):
            below, skip = features[s], features[s - 1]
            self.ups.append(UpConv3d(below, skip, strides[s], bias=conv_bias))
            self.decoders.append(
                nn.Sequential(
                    *(ConvNormAct(2 * skip if c == 0 else skip, skip, 3, **conv) for c in range(decoder_convs))
                )
            )
        self.head = nn.Conv3d(features[0], out_channels, 1)
        self.feature_info = feature_info(
            (width, math.prod(strides[: i + 1]), f"stages.{i}.{count - 1}")
            for i, (width, count) in enumerate(zip(features, blocks, strict=True))
        )

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's maps, one per stage: ``(B, features[i], D / r_i, H / r_i, W / r_i)`` with ``r_i`` the
        product of the first ``i + 1`` strides (see ``feature_info``)."""
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            for block in stage:
                x = block(x)
            maps.append(x)
        return maps

    def decoder_modules(self) -> list[str]:
        return ["ups", "decoders", "head"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.forward_features(x)
        x = skips.pop()
        for up, decoder in zip(self.ups, self.decoders, strict=True):
            x = decoder(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


# --- named configurations -------------------------------------------------------------------------------

_PAPER = (
    "Isensee et al., nnU-Net Revisited: A Call for Rigorous Validation in 3D Medical Image Segmentation, MICCAI "
    "2024 (arXiv:2404.09556); Wald et al., An OpenMind for 3D medical vision self-supervised learning, "
    "arXiv:2412.17041; Wald et al., Revisiting MAE pre-training for 3D medical image segmentation, CVPR 2025 "
    "(arXiv:2410.23132)"
)
_TINY = {"features": (4, 8, 16), "strides": (1, 2, 2), "blocks": (1, 2, 1)}
_STEM = ("stem.conv.weight",)
_HEAD = ("head.",)
_ENCODER = {"encoder": ("stem.", "stages."), "encoder_blocks": r"stages\.(\d+)\."}

# OpenMind's pretraining data as nnssl read it: SimpleITK arrays (axes reversed against the NIfTI voxel axes),
# no reorientation, 1 mm isotropic, z-scored, one MRI channel of any sequence.
OPENMIND_CONTRACT = TaskContract(
    in_channels=("MRI",),
    out_channels=("background", "foreground"),
    activation="softmax",
    roi_size=(160, 160, 160),
    spacing=(1.0, 1.0, 1.0),
    orientation=None,
    normalization="zscore_channelwise",
    axis_order="zyx",
)

register_model(
    ModelConfig(
        name="resenc_l_openmind",
        builder=ResEncUNet,
        model_args={},
        contract=OPENMIND_CONTRACT,
        weights=(
            WeightSource(
                repo_id="AnonRes/ResEncL-OpenMind-MAE",
                filename="checkpoint_final.pth",
                revision="main",
                format="nnssl",
                covers=("stem.", "stages."),
                notes="nnssl checkpoint ({'network_weights', 'nnssl_adaptation_plan'}) of ResEnc-L pretrained with "
                "MAE on the OpenMind data set (114k 3D brain MRI); its adaptation plan transfers the encoder "
                "(key_to_encoder encoder.stages, key_to_stem encoder.stem), so the decoder starts fresh. No Hub "
                "commit could be pinned offline, so the first verified download's sha256 is recorded and enforced.",
            ),
        ),
        license="CC-BY-4.0",
        paper=_PAPER,
        notes="nnU-Net's ResEnc-L (6 stages of 32-320 channels, 1-3-4-6-6-6 residual blocks) with the encoder "
        "pretrained by MAE on OpenMind brain MRI. Preprocessing as nnssl's: no reorientation, 1 mm, z-score, axes "
        "in SimpleITK's (z, y, x) order. Give your task's in_channels and out_channels.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        headless=True,
        recipe="openmind",
        **_ENCODER,
    )
)

register_model(
    ModelConfig(
        name="resenc_unet",
        builder=ResEncUNet,
        model_args={},
        default_roi=(128, 128, 128),
        paper=_PAPER,
        notes="Generic ResEnc U-Net (nnU-Net's ResEnc-L preset by default); give in_channels and out_channels.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        **_ENCODER,
    )
)
