"""The bundle's networks, each registered by name (see :mod:`scripts.networks.registry`)."""

from .attention_unet import AttentionUNet
from .basic_unet import BasicUNet
from .deep_supervision import StackedDeepSupervisionLoss, last_head
from .init import init_weights
from .nested_unet import NestedUNet
from .r2attunet import R2AttUNet
from .r2unet import R2UNet
from .registry import create_network, get_network_class, list_networks, register_network
from .resunet import ResUNet
from .unet import UNet
from .xunet import CrossBasicUNet, UpCatAll, XUNet
from .xunet_attn import XUNetAttn
from .xunet_light import XUNetLight

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
