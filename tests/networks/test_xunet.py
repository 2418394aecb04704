"""XUNet through the family contract (its own tests are in tests/test_xunet.py)."""

from .network_contract import NetworkContract


class TestXUNet(NetworkContract):
    name = "xunet"
    options = {"features": (4, 4, 8, 8, 16, 4)}
    param_counts = {1: 6571, 2: 18459, 3: 53707}
