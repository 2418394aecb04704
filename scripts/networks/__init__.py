"""The bundle's networks, each registered by name (see :mod:`scripts.networks.registry`)."""

from .basic_unet import BasicUNet
from .registry import create_network, get_network_class, list_networks, register_network
from .xunet import CrossBasicUNet, UpCatAll, XUNet

__all__ = [
    "BasicUNet",
    "CrossBasicUNet",
    "UpCatAll",
    "XUNet",
    "create_network",
    "get_network_class",
    "list_networks",
    "register_network",
]
