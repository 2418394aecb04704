"""The bundle's networks, each registered by name (see :mod:`scripts.networks.registry`)."""

from monai.networks.nets import BasicUNet

from .attention_unet import AttentionUNet
from .init import init_weights
from .nested_unet import NestedUNet, StackedDeepSupervisionLoss, last_head
from .r2unet import R2AttUNet, R2UNet
from .registry import create_network, get_network_class, list_networks, register_network
from .resunet import ResUNet
from .unet import UNet
from .xunet import CrossBasicUNet, UpCatAll, XUNet
from .xunet_variants import XUNetAttn, XUNetLight

# MONAI's BasicUNet, registered as the family's baseline
register_network("basicunet", "basic_unet")(BasicUNet)

__all__ = [
    "AttentionUNet",
    "BasicUNet",
    "CrossBasicUNet",
    "NestedUNet",
    "R2AttUNet",
    "R2UNet",
    "ResUNet",
    "StackedDeepSupervisionLoss",
    "UNet",
    "UpCatAll",
    "XUNet",
    "XUNetAttn",
    "XUNetLight",
    "create_network",
    "get_network_class",
    "init_weights",
    "last_head",
    "list_networks",
    "register_network",
]
