"""Model families, one per module; importing a module registers its named configurations."""

from medseg_zoo.models import primus, resenc_unet, segresnet, swin_unetr, unet, unet3d, unetr  # noqa: F401
from medseg_zoo.models.primus import Primus
from medseg_zoo.models.resenc_unet import ResEncUNet
from medseg_zoo.models.unet import UNet
from medseg_zoo.models.unet3d import UNet3D
from medseg_zoo.models.unetr import UNETR

__all__ = ["UNETR", "Primus", "ResEncUNet", "UNet", "UNet3D"]
