"""The 3-D U-Net of Models Genesis (Zhou et al., 2019) as SuPreM pretrained it on AbdomenAtlas 1.1.

Four encoder levels of two conv-batch-norm-ReLU layers (1 -> 32 -> 64, 64 -> 128, 128 -> 256, 256 -> 512 channels),
max pooling between them, three decoder levels; the batch norms normalise with the batch's statistics at
inference too (Models Genesis' ``ContBatchNorm3d``), which the pretrained weights expect.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg_zoo._contract import ModelConfig, TaskContract, WeightSource
from medseg_zoo._registry import register_model
from medseg_zoo.features import feature_info
from medseg_zoo.layers import ConvNormAct

__all__ = ["SUPREM_CONTRACT", "UNet3D", "suprem_source"]

SUPREM_CONTRACT = TaskContract(
    # SuPreM's data loaders: Orientationd RAS, Spacingd 1.5 mm, ScaleIntensityRanged(-175, 250 -> 0, 1, clip),
    # roi 96^3; the pretrained backbones carry no task head.
    in_channels=("CT",),
    out_channels=("background", "foreground"),
    activation="softmax",
    roi_size=(96, 96, 96),
    spacing=(1.5, 1.5, 1.5),
    orientation="RAS",
    normalization="clip_scale:-175:250",
)
SUPREM_LICENSE = (
    "CC BY-NC-ND 4.0 (SuPreM's GitHub LICENSE; its Hugging Face card says Apache-2.0: the stricter applies)"
)
SUPREM_PAPER = (
    "Li et al., How Well Do Supervised 3D Models Transfer to Medical Imaging Tasks?, ICLR 2024 (arXiv:2501.11253); "
    "AbdomenAtlas 1.1: 9,262 CT volumes, 25 annotated structures"
)


def suprem_source(architecture: str, covers: tuple[str, ...]) -> WeightSource:
    """The SuPreM checkpoint of one backbone on the Hub."""
    return WeightSource(
        repo_id="MrGiovanni/SuPreM",
        filename=f"supervised_suprem_{architecture}_2100.pth",
        revision="main",
        format="suprem",
        covers=covers,
        notes="SuPreM, supervised on AbdomenAtlas 1.1 (2,100 CT volumes for this release); the task head is not "
        "part of the starting point. No Hub commit could be pinned offline, so the first verified download's "
        "sha256 is recorded and enforced.",
    )


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


class _Level(nn.Module):
    """Two conv-norm-ReLU layers."""

    def __init__(self, in_channels: int, middle: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, middle, 3, norm="batch_stats", act=_relu, bias=True)
        self.conv2 = ConvNormAct(middle, out_channels, 3, norm="batch_stats", act=_relu, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UNet3D(nn.Module):
    """Models Genesis' 3-D U-Net.

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, D, H, W)``, each spatial size divisible by 8.

    Stem and head: ``encoder.0.conv1`` reads the input channels; ``head`` (a 1x1x1 convolution) writes the
    outputs. The encoder is ``encoder``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (logits).
        width: Channels of the first layer (Models Genesis: 32); each level doubles them.
    """

    def __init__(self, in_channels: int, out_channels: int, *, width: int = 32) -> None:
        super().__init__()
        w = width
        widths = [(in_channels, w, 2 * w), (2 * w, 2 * w, 4 * w), (4 * w, 4 * w, 8 * w), (8 * w, 8 * w, 16 * w)]
        self.encoder = nn.ModuleList(_Level(*c) for c in widths)
        self.pool = nn.MaxPool3d(2)
        self.ups = nn.ModuleList(nn.ConvTranspose3d(c, c, 2, stride=2) for c in (16 * w, 8 * w, 4 * w))
        self.decoders = nn.ModuleList(
            [_Level(24 * w, 8 * w, 8 * w), _Level(12 * w, 4 * w, 4 * w), _Level(6 * w, 2 * w, 2 * w)]
        )
        self.head = nn.Conv3d(2 * w, out_channels, 1)
        self.feature_info = feature_info((c[2], 2**i, f"encoder.{i}") for i, c in enumerate(widths))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each encoder level's output: ``(B, 2 * width * 2^i, D / 2^i, H / 2^i, W / 2^i)``."""
        maps = []
        for i, level in enumerate(self.encoder):
            x = level(self.pool(x) if i else x)
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


register_model(
    ModelConfig(
        name="suprem_unet",
        builder=UNet3D,
        contract=SUPREM_CONTRACT,
        weights=(suprem_source("unet", ("encoder.", "ups.", "decoders.")),),
        license=SUPREM_LICENSE,
        paper=SUPREM_PAPER + "; Zhou et al., Models Genesis, MICCAI 2019 (arXiv:1908.06912)",
        notes="SuPreM's U-Net (Models Genesis' 3-D U-Net, 19 M parameters) supervised on 25 abdominal structures; "
        "give your task's out_channels (the head starts fresh). Non-commercial, no derivatives may be shared.",
        tiny_args={"width": 2},
        stem=("encoder.0.conv1.conv.weight",),
        head=("head.",),
        encoder=("encoder.",),
        headless=True,
        recipe="suprem",
    )
)
