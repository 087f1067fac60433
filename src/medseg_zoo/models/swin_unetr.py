"""Swin UNETR (Hatamizadeh et al., 2022): MONAI's ``SwinUNETR`` registered with named configurations and the
published MONAI model-zoo weights."""

from __future__ import annotations

from monai.networks.nets import SwinUNETR

from medseg_zoo._contract import ModelConfig, WeightSource
from medseg_zoo._registry import register_model
from medseg_zoo.models.unetr import BTCV_CT_CONTRACT

__all__: list[str] = []

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
