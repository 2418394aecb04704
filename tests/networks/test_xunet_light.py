"""Light XUNet: the contract, the exact fast path, and the parameter saving."""

import pytest
import torch

from scripts.networks import XUNet, XUNetLight

from .network_contract import NetworkContract, count_parameters

TINY = (4, 4, 8, 8, 16, 4)


class TestXUNetLight(NetworkContract):
    name = "xunet_light"
    options = {"features": TINY}
    param_counts = {1: 4243, 2: 8931, 3: 22579}


@pytest.mark.parametrize("dims,shape", [(1, (37,)), (2, (35, 21)), (3, (19, 13, 17))])
def test_fast_path_equals_reference(dims, shape):
    torch.manual_seed(0)
    net = XUNetLight(dims, 1, 2, features=TINY).double().eval()
    x = torch.randn((2, 1) + shape, dtype=torch.float64)
    with torch.no_grad():
        fast = net.set_fast(True)(x)
        reference = net.set_fast(False)(x)
    assert torch.allclose(fast, reference, atol=1e-10)


def _decoder(net):
    return sum(count_parameters(getattr(net, f"upcat_{k}")) for k in (1, 2, 3, 4))


@pytest.mark.parametrize("dims,ratio", [(2, 0.25), (3, 0.15)])
def test_far_fewer_parameters(dims, ratio):
    """The separable fusion cuts the decoder's parameters by 80-90% (what is left is mostly the transposed
    convolutions); the encoder is XUNet's."""
    with torch.device("meta"):
        light, full = XUNetLight(dims, 1, 3), XUNet(dims, 1, 3)
    assert _decoder(light) < ratio * _decoder(full)
    assert count_parameters(light) < 0.6 * count_parameters(full)
    for name in ("conv_0", "down_1", "down_2", "down_3", "down_4", "final_conv"):
        assert count_parameters(getattr(light, name)) == count_parameters(getattr(full, name))
