"""SegResNet (Myronenko, BraTS 2018): MONAI's ``SegResNet`` registered with named configurations and the
published MONAI model-zoo weights."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import SegResNet as MonaiSegResNet

from medseg_zoo._contract import ModelConfig, TaskContract, WeightSource
from medseg_zoo._registry import register_model
from medseg_zoo._schemes import TOTALSEGMENTATOR_V1
from medseg_zoo.features import feature_info
from medseg_zoo.models.unet3d import SUPREM_CONTRACT, SUPREM_LICENSE, SUPREM_PAPER, suprem_source

__all__ = ["SegResNet"]


class SegResNet(MonaiSegResNet):
    """MONAI's ``SegResNet`` (the same arguments, parameters and state-dict keys) with its encoder's maps.

    Shapes: ``(B, C_in, D, H, W) -> (B, C_out, D, H, W)``, each spatial size divisible by
    ``2 ** (len(blocks_down) - 1)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.feature_info = feature_info(
            (self.init_filters * 2**i, 2**i, f"down_layers.{i}") for i in range(len(self.blocks_down))
        )

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each down layer's output: ``(B, init_filters * 2^i, D / 2^i, H / 2^i, W / 2^i)``."""
        return self.encode(x)[1]

    def decoder_modules(self) -> list[str]:
        return ["up_samples", "up_layers", "conv_final"]


_PAPER = "Myronenko, 3D MRI brain tumor segmentation using autoencoder regularization, BrainLes 2018 (arXiv:1810.11654)"
_TINY = {"init_filters": 8, "blocks_down": (1, 1), "blocks_up": (1,)}
_STEM = ("convInit.conv.weight",)
_HEAD = ("conv_final.2.",)
_ENCODER = {"encoder": ("convInit.", "down_layers."), "encoder_blocks": r"down_layers\.(\d+)\."}

register_model(
    ModelConfig(
        name="segresnet_brats",
        builder=SegResNet,
        model_args={"blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1), "init_filters": 16, "dropout_prob": 0.2},
        contract=TaskContract(
            # configs/metadata.json channel_def and label_classes; configs/inference.json preprocessing:
            # LoadImaged + NormalizeIntensityd(nonzero, channel_wise), no reorientation or resampling (BraTS 2018
            # is 1 mm isotropic); roi from its SlidingWindowInferer.
            in_channels=("T1c", "T1", "T2", "FLAIR"),
            out_channels=("TC", "WT", "ET"),
            activation="sigmoid",
            roi_size=(240, 240, 160),
            spacing=None,
            orientation=None,
            normalization="zscore_nonzero_channelwise",
            label_scheme="brats2018",
        ),
        weights=(
            WeightSource(
                repo_id="MONAI/brats_mri_segmentation",
                filename="models/model.pt",
                revision="main",
                md5="870e677b782a5184cbc48db1456b78e8",  # large_files.yml of the MONAI model-zoo bundle
                format="monai-bundle",
                notes="MONAI model-zoo bundle brats_mri_segmentation (hosted on the Hugging Face Hub since bundle "
                "0.5.3); no Hub commit could be pinned offline, so the first verified download's sha256 is "
                "recorded and enforced.",
            ),
            WeightSource(  # the same file on NVIDIA's downloads (large_files.yml), tried if the Hub fails
                repo_id="",
                url="https://developer.download.nvidia.com/assets/Clara/monai/tutorials/model_zoo/model_brats_mri_segmentation.pt",
                md5="870e677b782a5184cbc48db1456b78e8",
                format="monai-bundle",
            ),
        ),
        license="Apache-2.0 (MONAI model zoo); BraTS 2018 data terms apply",
        paper=_PAPER,
        metrics={
            "mean_dice": 0.8518,
            "dice_tc": 0.8559,
            "dice_wt": 0.9026,
            "dice_et": 0.7905,
            "data": "BraTS 2018 validation split of the MONAI bundle",
        },
        notes="MONAI model-zoo brats_mri_segmentation: SegResNet(blocks_down 1,2,2,4, blocks_up 1,1,1, init_filters "
        "16, 4 -> 3, dropout 0.2). Outputs TC, WT, ET map to BraTS 2018 labels (ET -> 4, TC -> 1, WT -> 2).",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        **_ENCODER,
    )
)

register_model(
    ModelConfig(
        name="segresnet_wholebody",
        builder=SegResNet,
        model_args={"blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1), "init_filters": 32, "dropout_prob": 0.2},
        contract=TaskContract(
            # configs/inference.json of the MONAI bundle (high-resolution model): Orientationd RAS, Spacingd 1.5 mm,
            # NormalizeIntensityd(nonzero) then ScaleIntensityd(-1, 1), SlidingWindowInferer roi 96^3, softmax.
            in_channels=("CT",),
            out_channels=TOTALSEGMENTATOR_V1,
            activation="softmax",
            roi_size=(96, 96, 96),
            spacing=(1.5, 1.5, 1.5),
            orientation="RAS",
            normalization="zscore_nonzero_rescale:-1:1",
            label_scheme="totalsegmentator_v1",
        ),
        weights=(
            WeightSource(
                repo_id="MONAI/wholeBody_ct_segmentation",
                filename="models/model.pt",
                revision="main",
                md5="aded45dea52f9c00b37922bcd0a98502",  # large_files.yml of the MONAI model-zoo bundle
                format="monai-bundle",
                notes="MONAI model-zoo bundle wholeBody_ct_segmentation, high-resolution (1.5 mm) model; no Hub "
                "commit could be pinned offline, so the first verified download's sha256 is recorded and enforced.",
            ),
            WeightSource(  # the same file on NVIDIA's downloads (large_files.yml), tried if the Hub fails
                repo_id="",
                url="https://developer.download.nvidia.com/assets/Clara/monai/tutorials/model_zoo/model_wholebody_ct_segmentation.pt",
                md5="aded45dea52f9c00b37922bcd0a98502",
                format="monai-bundle",
            ),
        ),
        license="Apache-2.0 (MONAI model zoo); TotalSegmentator data terms (CC BY 4.0) apply",
        paper="Wasserthal et al., TotalSegmentator: robust segmentation of 104 anatomical structures in CT images, "
        "Radiology: AI 2023 (arXiv:2208.05868); " + _PAPER,
        metrics={"mean_dice": 0.8, "data": "TotalSegmentator validation split of the MONAI bundle"},
        notes="MONAI model-zoo wholeBody_ct_segmentation: SegResNet(1 -> 105, init_filters 32, blocks_down 1,2,2,4, "
        "blocks_up 1,1,1, dropout 0.2). The bundle pads windows by replication and uses overlap 0.25.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        **_ENCODER,
    )
)

register_model(
    ModelConfig(
        name="segresnet",
        builder=SegResNet,
        model_args={},  # MONAI's defaults: init_filters 8, blocks_down 1,2,2,4, blocks_up 1,1,1
        default_roi=(128, 128, 128),
        paper=_PAPER,
        notes="Generic MONAI SegResNet with MONAI's defaults (init_filters 8); give in_channels and out_channels.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        **_ENCODER,
    )
)

register_model(
    ModelConfig(
        name="suprem_segresnet",
        builder=SegResNet,
        # SuPreM's target_applications: SegResNet(blocks_down 1,2,2,4, blocks_up 1,1,1, init_filters 16, dropout 0)
        model_args={"blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1), "init_filters": 16},
        contract=SUPREM_CONTRACT,
        weights=(
            suprem_source("segresnet", ("convInit.", "down_layers.", "up_samples.", "up_layers.", "conv_final.0.")),
        ),
        license=SUPREM_LICENSE,
        paper=SUPREM_PAPER + "; " + _PAPER,
        notes="SuPreM's SegResNet supervised on 25 abdominal structures of AbdomenAtlas 1.1; the file's 25-class "
        "conv_final is the pretraining task's head, not loaded: give your task's out_channels. Non-commercial, no "
        "derivatives may be shared.",
        tiny_args=_TINY,
        stem=_STEM,
        head=_HEAD,
        headless=True,
        recipe="suprem",
        **_ENCODER,
    )
)
