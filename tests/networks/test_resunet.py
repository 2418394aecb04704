"""ResUNet: the contract and the pre-activation residual units."""

import torch

from scripts.networks import ResUNet
from scripts.networks.blocks import PreActResidualUnit

from .network_contract import NetworkContract


class TestResUNet(NetworkContract):
    name = "resunet"
    options = {"features": (4, 8, 16, 32)}
    param_counts = {1: 12695, 2: 32999, 3: 93911}


def test_residual_units():
    net = ResUNet(2, 1, 2, features=(4, 8, 16))
    first, *rest = net.encoder
    assert isinstance(first.pre, torch.nn.Identity)  # the first unit sees the raw input
    assert all(unit.conv_0.stride == (2, 2) and unit.shortcut.conv.stride == (2, 2) for unit in rest)
    unit = PreActResidualUnit(3, 4, 6, stride=2).eval()
    x = torch.randn(1, 4, 8, 6, 5)
    with torch.no_grad():
        y = unit(x)
        assert y.shape == (1, 6, 4, 3, 3)
        assert torch.allclose(y, unit.conv_1(unit.adn_0(unit.conv_0(unit.pre(x)))) + unit.shortcut(x))
