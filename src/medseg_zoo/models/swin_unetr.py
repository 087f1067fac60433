"""Swin UNETR (Hatamizadeh et al., 2022): MONAI's ``SwinUNETR`` registered with named configurations and the
published MONAI model-zoo weights."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

from medseg_zoo._contract import ModelConfig, TaskContract, WeightSource
from medseg_zoo._registry import register_model
from medseg_zoo.features import feature_info
from medseg_zoo.models.unet3d import SUPREM_CONTRACT, SUPREM_LICENSE, SUPREM_PAPER, suprem_source
from medseg_zoo.models.unetr import BTCV_CT_CONTRACT

__all__ = ["SwinUNETR"]


class SwinUNETR(MonaiSwinUNETR):
    """MONAI's ``SwinUNETR`` (the same arguments, parameters and state-dict keys) with its encoder's maps.

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, D, H, W)``, each spatial size divisible by 32.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        width = self.encoder1.layer.conv1.conv.out_channels  # feature_size
        self.feature_info = feature_info((width * 2**i, 2 ** (i + 1), "swinViT") for i in range(5))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The Swin encoder's five maps (after the patch embedding and each stage, normalised as the decoder
        reads them): ``(B, feature_size * 2^i, D / 2^(i+1), H / 2^(i+1), W / 2^(i+1))``."""
        return list(self.swinViT(x, self.normalize))

    def decoder_modules(self) -> list[str]:
        return [
            *(f"encoder{i}" for i in (1, 2, 3, 4, 10)),
            *(f"decoder{i}" for i in (5, 4, 3, 2, 1)),
            "out",
        ]


_PAPER = (
    "Hatamizadeh et al., Swin UNETR: Swin Transformers for Semantic Segmentation of Brain Tumors in MRI Images, "
    "BrainLes 2021 (arXiv:2201.01266); Tang et al., Self-Supervised Pre-Training of Swin Transformers for 3D "
    "Medical Image Analysis, CVPR 2022 (arXiv:2111.14791)"
)
# "merging" is MONAI's legacy PatchMerging (its v0.9 concatenation order), which the published weights expect.
_ARGS = {"feature_size": 48, "downsample": "merging", "use_v2": False}
_TINY = {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}
_STEM = ("swinViT.patch_embed.proj.weight", "encoder1.layer.conv1.conv.weight", "encoder1.layer.conv3.conv.weight")
_HEAD = ("out.",)
_ENCODER = {"encoder": ("swinViT.",), "encoder_blocks": r"swinViT\.layers(\d+)\."}

register_model(
    ModelConfig(
        name="swin_unetr_btcv",
        builder=SwinUNETR,
        model_args=_ARGS,
        contract=BTCV_CT_CONTRACT,
        weights=(
            WeightSource(
                repo_id="MONAI/swin_unetr_btcv_segmentation",
                filename="models/model.pt",
                revision="main",
                md5="50dd67a01b28a1d5487fd9ac27e682fb",  # large_files.yml of the MONAI model-zoo bundle
                format="monai-bundle",
                notes="MONAI model-zoo bundle swin_unetr_btcv_segmentation (network_def img_size=96 is dropped: "
                "MONAI >= 1.5 rejects it); no Hub commit could be pinned offline, so the first verified "
                "download's sha256 is recorded and enforced.",
            ),
            WeightSource(  # the same file on NVIDIA's downloads (large_files.yml), tried if the Hub fails
                repo_id="",
                url="https://developer.download.nvidia.com/assets/Clara/monai/tutorials/model_zoo/model_swin_unetr_btcv_segmentation_v1.pt",
                md5="50dd67a01b28a1d5487fd9ac27e682fb",
                format="monai-bundle",
            ),
        ),
        license="Apache-2.0 (MONAI model zoo); BTCV data terms (Synapse) apply",
        paper=_PAPER,
        metrics={"mean_dice": 0.8269, "data": "BTCV validation split of the MONAI bundle"},
        notes="MONAI model-zoo swin_unetr_btcv_segmentation: SwinUNETR(1 -> 14, feature_size 48, legacy "
        "PatchMerging). relative_position_index buffers are rebuilt by the network, not stored.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        **_ENCODER,
    )
)

register_model(
    ModelConfig(
        name="swin_unetr",
        builder=SwinUNETR,
        model_args={},  # MONAI's defaults: feature_size 24, depths 2,2,2,2, heads 3,6,12,24
        default_roi=(96, 96, 96),
        paper=_PAPER,
        notes="Generic MONAI SwinUNETR with MONAI's defaults (feature_size 24; inputs: multiples of 32 per axis); "
        "give in_channels and out_channels.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        **_ENCODER,
    )
)

_RELEASE = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1"

register_model(
    ModelConfig(
        name="swin_unetr_ssl",
        builder=SwinUNETR,
        model_args=_ARGS,
        contract=TaskContract(
            # research-contributions SwinUNETR/Pretrain: Orientationd RAS, Spacingd 1.5/1.5/2.0,
            # ScaleIntensityRanged(-1000, 1000 -> 0, 1, clip), roi 96^3, one CT channel.
            in_channels=("CT",),
            out_channels=("background", "foreground"),
            activation="softmax",
            roi_size=(96, 96, 96),
            spacing=(1.5, 1.5, 2.0),
            orientation="RAS",
            normalization="clip_scale:-1000:1000",
        ),
        weights=(
            WeightSource(
                repo_id="",
                url=f"{_RELEASE}/model_swinvit.pt",
                format="swin-ssl",
                covers=("swinViT.",),
                notes="model_swinvit.pt of MONAI-extra-test-data release 0.8.1: the Swin Transformer encoder "
                "pretrained self-supervised (inpainting, rotation, contrastive) on 5,050 CT volumes; the decoder and "
                "head start fresh. No hash is published, so the first verified download's sha256 is recorded and "
                "enforced.",
            ),
        ),
        license="Apache-2.0",
        paper=_PAPER,
        notes="Swin UNETR (feature size 48) whose Swin encoder is Tang et al.'s self-supervised one (CT, RAS, "
        "1.5 x 1.5 x 2.0 mm, HU -1000..1000 to 0..1). Give your task's in_channels and out_channels; inputs "
        "divisible by 32.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        headless=True,
        recipe="swin_unetr_ssl",
        **_ENCODER,
    )
)

# research-contributions SwinUNETR/BRATS21: channels as in its brats21_folds.json (flair, t1ce, t1, t2),
# ConvertToMultiChannelBasedOnBratsClassesd (TC, WT, ET of BraTS 2021 labels), NormalizeIntensityd(nonzero,
# channel_wise), no reorientation or resampling (BraTS is 1 mm isotropic), roi 128^3, sigmoid.
BRATS21_CONTRACT = TaskContract(
    in_channels=("FLAIR", "T1ce", "T1", "T2"),
    out_channels=("TC", "WT", "ET"),
    activation="sigmoid",
    roi_size=(128, 128, 128),
    spacing=None,
    orientation=None,
    normalization="zscore_nonzero_channelwise",
    label_scheme="brats2021",
)
_FOLDS = {0: "0_8854", 1: "0_9059", 2: "0_8981", 3: "0_8924", 4: "0_9035"}
for _fold, _dice in _FOLDS.items():
    _stem = f"fold{_fold}_f48_ep300_4gpu_dice{_dice}"
    register_model(
        ModelConfig(
            name=f"swin_unetr_brats21_fold{_fold}",
            builder=SwinUNETR,
            model_args=_ARGS,
            contract=BRATS21_CONTRACT,
            weights=(
                WeightSource(
                    repo_id="",
                    url=f"{_RELEASE}/{_stem}.zip",
                    member="model.pt",
                    format="monai",
                    notes=f"{_stem}.zip of MONAI-extra-test-data release 0.8.1: {{'state_dict': ...}} of MONAI's "
                    "SwinUNETR, loaded strictly as research-contributions' test.py does. No hash is published, so "
                    "the first verified download's sha256 is recorded and enforced.",
                ),
            ),
            license="Apache-2.0 (Project-MONAI/research-contributions); BraTS 2021 data terms apply",
            paper=_PAPER,
            metrics={
                "mean_dice": float("0." + _dice[2:]),
                "data": f"BraTS 2021 training set, fold {_fold} of 5 "
                "(brats21_folds.json), validation Dice of TC, WT, ET averaged, as published",
            },
            notes=f"Swin UNETR (feature size 48) trained on BraTS 2021, fold {_fold} (research-contributions "
            "SwinUNETR/BRATS21). Inputs: FLAIR, T1ce, T1, T2 co-registered, skull-stripped, 1 mm as BraTS "
            "distributes them; outputs TC, WT, ET (BraTS 2021 labels 1, 2, 4). The publisher infers with "
            "overlap 0.6.",
            tiny_args=_TINY,
            stem=_STEM,
            head=_HEAD,
            recipe="swin_unetr_brats21",
            **_ENCODER,
        )
    )

register_model(
    ModelConfig(
        name="swin_unetr_brats21",
        builder=SwinUNETR,
        model_args=_ARGS,
        contract=BRATS21_CONTRACT,
        license="Apache-2.0 (Project-MONAI/research-contributions); BraTS 2021 data terms apply",
        paper=_PAPER,
        metrics={"mean_dice": 0.8971, "data": "mean of the five folds' published validation Dice"},
        notes="The five BraTS 2021 folds of Swin UNETR as one ensemble (probabilities averaged): "
        "create_ensemble('swin_unetr_brats21', pretrained=True), or medseg-zoo predict -m swin_unetr_brats21.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        members=tuple(f"swin_unetr_brats21_fold{f}" for f in _FOLDS),
        **_ENCODER,
    )
)

register_model(
    ModelConfig(
        name="suprem_swinunetr",
        builder=SwinUNETR,
        model_args=_ARGS,
        contract=SUPREM_CONTRACT,
        weights=(
            suprem_source(
                "swinunetr",
                ("swinViT.", *(f"encoder{i}." for i in (1, 2, 3, 4, 10)), *(f"decoder{i}." for i in (5, 4, 3, 2, 1))),
            ),
        ),
        license=SUPREM_LICENSE,
        paper=SUPREM_PAPER + "; " + _PAPER,
        notes="SuPreM's Swin UNETR (feature size 48) supervised on 25 abdominal structures of AbdomenAtlas 1.1: "
        "encoder and decoder; give your task's out_channels (the head starts fresh). Non-commercial, no derivatives "
        "may be shared.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        headless=True,
        recipe="suprem",
        **_ENCODER,
    )
)
