"""MONAI's BasicUNet through the family contract."""

from .network_contract import NetworkContract


class TestBasicUNet(NetworkContract):
    name = "basicunet"
    options = {"features": (4, 4, 8, 8, 16, 4)}
    param_counts = {1: 4171, 2: 11259, 3: 32107}
