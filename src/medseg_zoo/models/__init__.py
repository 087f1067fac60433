"""Model families, one per module; importing a module registers its named configurations."""

from medseg_zoo.models import segresnet, swin_unetr, unet, unetr  # noqa: F401  (registration)
from medseg_zoo.models.unet import UNet
from medseg_zoo.models.unetr import UNETR

__all__ = ["UNETR", "UNet"]
