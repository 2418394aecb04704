"""MONAI's BasicUNet, registered as the family's baseline."""

from monai.networks.nets import BasicUNet

from .registry import register_network

register_network("basicunet", "basic_unet")(BasicUNet)

__all__ = ["BasicUNet"]
