"""UNETR: a ViT encoder on 16^3 patches with a convolutional decoder (Hatamizadeh et al., WACV 2022).

One implementation covers the seed's self-attention-cv 1.2.3 UNETR (``unetr_brats``) and MONAI's UNETR
(``unetr_monai``, the generic ``unetr``); the configurations differ only in constructor arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg_zoo._contract import ModelConfig, TaskContract, WeightSource
from medseg_zoo._registry import register_model
from medseg_zoo.features import feature_info
from medseg_zoo.layers import PatchEmbed3d, ResBlock, TransformerEncoder, UnetrSkipBlock, UnetrUpBlock, conv3d
from medseg_zoo.layers.linear import CPU_PATHS
from medseg_zoo.transforms.labels import get_scheme

__all__ = ["UNETR"]

PATCH_SIZE = 16  # the decoder's four 2x upsamplings undo exactly one 16^3 patch


class UNETR(nn.Module):
    """UNETR for ``(B, in_channels, D, H, W)`` volumes with D, H, W multiples of 16.

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, D, H, W)`` (logits).

    Stem and head: ``stem`` (a residual conv block on the full-resolution input) and ``patch_embed.proj`` read
    the input channels; ``head`` (a 1x1x1 convolution) writes the outputs.

    On the CPU the convolutional path runs channels-last (the output may come back in that memory layout; its
    values do not depend on it); see ``docs/benchmarks.md`` for why and how much.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (logits).
        img_size: Roi the position embedding is laid out for; other sizes interpolate it.
        feature_size: Base width of the convolutional decoder.
        hidden_size: Transformer width.
        mlp_dim: Transformer MLP width.
        num_heads: Attention heads.
        dim_head: Head width; defaults to ``hidden_size // num_heads``.
        num_layers: Transformer depth.
        skip_layers: 1-based numbers of the four blocks whose outputs feed the decoder, shallow to deep
            (MONAI: 4, 7, 10, 12; self-attention-cv: 3, 6, 9, 12).
        final_norm: LayerNorm on the deepest transformer output (MONAI: yes; self-attention-cv: no).
        proj_type: Patch embedding, ``"conv"`` or ``"perceptron"``.
        patch_bias: Bias on the patch embedding.
        qkv_bias: Bias on the attention's qkv projection.
        proj_bias: Bias on the attention's output projection.
        conv_bias: Bias on the decoder's 3x3x3 and shortcut convolutions.
        norm_name: Decoder normalisation, see `medseg_zoo.layers.get_norm`.
        conv_block: Residual blocks between the transposed convolutions of the skip paths.
        res_block: Residual (else plain double-conv) decoder blocks.
        dropout_rate: Transformer dropout.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_size: Sequence[int],
        *,
        feature_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        dim_head: int | None = None,
        num_layers: int = 12,
        skip_layers: Sequence[int] = (4, 7, 10, 12),
        final_norm: bool = True,
        proj_type: str = "conv",
        patch_bias: bool = True,
        qkv_bias: bool = False,
        proj_bias: bool = True,
        conv_bias: bool = False,
        norm_name: str = "instance",
        conv_block: bool = True,
        res_block: bool = True,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(skip_layers) != 4 or skip_layers[-1] != num_layers:
            raise ValueError(
                f"skip_layers must name four blocks ending with the last one ({num_layers}), got {tuple(skip_layers)}"
            )
        self.patch_embed = PatchEmbed3d(
            in_channels,
            hidden_size,
            img_size,
            PATCH_SIZE,
            proj_type=proj_type,
            bias=patch_bias,
            dropout=dropout_rate,
        )
        self.encoder = TransformerEncoder(
            num_layers,
            hidden_size,
            num_heads,
            mlp_dim,
            out_layers=skip_layers,
            final_norm=final_norm,
            dim_head=dim_head,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            dropout=dropout_rate,
        )
        conv = {"norm": norm_name, "bias": conv_bias, "residual": res_block}
        f = feature_size
        self.stem = ResBlock(in_channels, f, **conv)
        self.skips = nn.ModuleList(
            [
                UnetrSkipBlock(hidden_size, f * 2, 3, conv_block=conv_block, **conv),
                UnetrSkipBlock(hidden_size, f * 4, 2, conv_block=conv_block, **conv),
                UnetrSkipBlock(hidden_size, f * 8, 1, conv_block=conv_block, **conv),
            ]
        )
        self.decoders = nn.ModuleList(
            [
                UnetrUpBlock(hidden_size, f * 8, **conv),
                UnetrUpBlock(f * 8, f * 4, **conv),
                UnetrUpBlock(f * 4, f * 2, **conv),
                UnetrUpBlock(f * 2, f, **conv),
            ]
        )
        self.head = conv3d(f, out_channels, kernel_size=1)
        self.channels_last_on_cpu = CPU_PATHS  # MEDSEG_ZOO_CPU_PATHS=off: the default layout
        layers = tuple(skip_layers)
        self.feature_info = feature_info(
            (hidden_size, PATCH_SIZE, "encoder.norm" if k == num_layers and final_norm else f"encoder.blocks.{k - 1}")
            for k in layers
        )

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tokens of the four ``skip_layers`` blocks as maps ``(B, hidden_size, D / 16, H / 16, W / 16)``
        (the last one normalised with ``final_norm``)."""
        d, h, w = (s // PATCH_SIZE for s in x.shape[2:])
        hidden = self.encoder(self.patch_embed(x))
        return [t.transpose(1, 2).reshape(t.shape[0], t.shape[2], d, h, w) for t in hidden]

    def decoder_modules(self) -> list[str]:
        return ["stem", "skips", "decoders", "head"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # On the CPU the decoder runs channels-last: oneDNN's 3D convolutions are faster on it, and the norms have
        # an accurate fused path for it (see medseg_zoo.layers.norm_act). Values are the same in either layout.
        cpu_layout = self.channels_last_on_cpu and x.device.type == "cpu"
        layout = torch.channels_last_3d if cpu_layout else torch.contiguous_format
        if cpu_layout:  # MONAI MetaTensors would make every map a view, which the fused norms must copy
            x = x.as_subclass(torch.Tensor)
        if torch.is_autocast_enabled(x.device.type):  # cast once: the stem and the patch embedding share it
            x = x.to(torch.get_autocast_dtype(x.device.type))
        z3, z6, z9, z12 = self.forward_features(x)
        skips = [self.stem(x.contiguous(memory_format=layout)), self.skips[0](z3), self.skips[1](z6), self.skips[2](z9)]
        y = z12.contiguous(memory_format=layout)
        for decoder, skip in zip(self.decoders, reversed(skips), strict=True):
            y = decoder(y, skip.contiguous(memory_format=layout))
        return self.head(y)


# --- named configurations -------------------------------------------------------------------------------

_PAPER = "Hatamizadeh et al., UNETR: Transformers for 3D Medical Image Segmentation, WACV 2022 (arXiv:2103.10504)"

BRATS_MSD_CONTRACT = TaskContract(
    in_channels=("FLAIR", "T1w", "T1gd", "T2w"),
    out_channels=("TC", "WT", "ET"),
    activation="sigmoid",
    roi_size=(128, 128, 64),
    spacing=(1.5, 1.5, 2.0),
    orientation="RAS",
    normalization="zscore_nonzero_channelwise",
    label_scheme="msd_task01",
)

# BTCV abdominal CT as both BTCV models were trained: research-contributions' UNETR scripts and MONAI's
# swin_unetr_btcv_segmentation bundle (configs/inference.json) agree on RAS, 1.5/1.5/2.0 mm,
# ScaleIntensityRanged(-175, 250 -> 0, 1, clip), roi 96^3 and softmax over the 14 classes of the btcv scheme.
BTCV_CT_CONTRACT = TaskContract(
    in_channels=("CT",),
    out_channels=get_scheme("btcv").channels,
    activation="softmax",
    roi_size=(96, 96, 96),
    spacing=(1.5, 1.5, 2.0),
    orientation="RAS",
    normalization="clip_scale:-175:250",
    label_scheme="btcv",
)
_STEM = ("stem.conv1.conv.weight", "stem.shortcut.conv.weight", "patch_embed.proj.weight")
_HEAD = ("head.",)
_ENCODER = {"encoder": ("patch_embed.", "encoder."), "encoder_blocks": r"encoder\.blocks\.(\d+)\."}

# Tiny widths for tests: same code paths (conv_block, final_norm, biases) at a fraction of the cost.
_TINY = {"img_size": (32, 32, 16), "feature_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_heads": 4}

SEED_UNETR_ARGS = {
    "feature_size": 16,
    "hidden_size": 512,
    "mlp_dim": 2048,
    "num_heads": 10,
    "dim_head": 51,  # int(512 / 10) in self-attention-cv: inner width 510
    "skip_layers": (3, 6, 9, 12),
    "final_norm": False,
    "patch_bias": False,
    "proj_bias": False,
    "conv_bias": True,
    "conv_block": False,
}

register_model(
    ModelConfig(
        name="unetr_brats",
        builder=UNETR,
        model_args=SEED_UNETR_ARGS,
        contract=BRATS_MSD_CONTRACT,
        roi_arg="img_size",
        weights=(
            WeightSource(
                repo_id="medseg-zoo/unetr_brats",
                recipe="medseg-zoo train --model unetr_brats --recipe unetr_brats --data Task01_BrainTumour "
                "--output runs/unetr_brats "
                "(the seed tutorial's recipe on MSD Task01)",
            ),
        ),
        license="Apache-2.0",
        paper=_PAPER,
        notes="Architecture of self-attention-cv 1.2.3 UNETR(embed_dim=512, num_heads=10, "
        "dim_linear_block=2048): bias-free attention and patch projection, skips after blocks 3/6/9/12, "
        "bare transposed-conv skip paths, no final LayerNorm. The seed tutorial reported 76.9 % mean Dice for it, "
        "scored with MONAI's tutorial label mapping (monai_tutorial: wrong for MSD Task01), not with these weights.",
        tiny_args={**_TINY, "dim_head": 6},
        stem=_STEM,
        head=_HEAD,
        **_ENCODER,
    )
)

register_model(
    ModelConfig(
        name="unetr_monai",
        builder=UNETR,
        model_args={},
        contract=BRATS_MSD_CONTRACT,
        roi_arg="img_size",
        weights=(
            WeightSource(
                repo_id="medseg-zoo/unetr_monai",
                recipe="medseg-zoo train --model unetr_monai --recipe unetr_monai --data Task01_BrainTumour "
                "--output runs/unetr_monai "
                "(the seed tutorial's recipe on MSD Task01)",
            ),
        ),
        license="Apache-2.0",
        paper=_PAPER,
        notes="monai.networks.nets.UNETR defaults (hidden 768, 12 heads, MLP 3072, feature size 16, "
        "conv_block and res_block true, LayerNorm on the last hidden state). The seed tutorial reported 76.1 % mean "
        "Dice for it, scored with MONAI's tutorial label mapping (wrong for MSD Task01).",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        **_ENCODER,
    )
)

register_model(
    ModelConfig(
        name="unetr_btcv",
        builder=UNETR,
        # research-contributions UNETR/BTCV README: UNETR(1 -> 14, img_size 96, feature_size 16, hidden 768, MLP
        # 3072, 12 heads, perceptron embedding, instance norm, conv_block, res_block)
        model_args={"proj_type": "perceptron"},
        contract=BTCV_CT_CONTRACT,
        roi_arg="img_size",
        weights=(
            WeightSource(
                repo_id="",
                url="https://developer.download.nvidia.com/assets/Clara/monai/research/UNETR_model_best_acc.pth",
                format="monai",
                notes="research-contributions' checkpoint ({'state_dict': ...} of MONAI's UNETR of 2021), converted "
                "with medseg_zoo.convert.monai; no hash is published, so the first verified download's sha256 is "
                "recorded and enforced.",
            ),
        ),
        license="Apache-2.0 (Project-MONAI/research-contributions); BTCV data terms (Synapse) apply",
        paper=_PAPER,
        notes="UNETR trained on BTCV by the UNETR authors (Project-MONAI/research-contributions, UNETR/BTCV); no "
        "metric is published with the checkpoint.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        **_ENCODER,
    )
)

register_model(
    ModelConfig(
        name="unetr",
        builder=UNETR,
        model_args={},
        roi_arg="img_size",
        default_roi=(96, 96, 96),
        paper=_PAPER,
        notes="Generic UNETR with MONAI's defaults; give in_channels and out_channels.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        **_ENCODER,
    )
)
