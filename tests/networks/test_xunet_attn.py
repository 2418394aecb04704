"""XUNet with attention fusion: the contract, the exact fast path, loading XUNet weights."""

import pytest
import torch

from scripts.networks import XUNet, XUNetAttn
from scripts.networks.xunet_variants import nearest_resized_mean

from .network_contract import NetworkContract

TINY = (4, 4, 8, 8, 16, 4)


class TestXUNetAttn(NetworkContract):
    name = "xunet_attn"
    options = {"features": TINY}
    param_counts = {1: 8207, 2: 20095, 3: 55343}


@pytest.mark.parametrize("dims,shape", [(1, (37,)), (2, (35, 21)), (3, (19, 13, 17))])
def test_fast_path_equals_reference(dims, shape):
    torch.manual_seed(0)
    net = XUNetAttn(dims, 1, 2, features=TINY).double().eval()
    x = torch.randn((2, 1) + shape, dtype=torch.float64)
    with torch.no_grad():
        fast = net.set_fast(True)(x)
        reference = net.set_fast(False)(x)
    assert torch.allclose(fast, reference, atol=1e-10)


def test_nearest_resized_mean():
    x = torch.randn(2, 3, 6, 4)
    for size in ([12, 8], [3, 2], [6, 4], [5, 7]):
        resized = torch.nn.functional.interpolate(x, size=size, mode="nearest")
        assert torch.allclose(nearest_resized_mean(x, size), resized.mean((2, 3)), atol=1e-6)


def test_loads_xunet_weights_with_strict_false():
    xunet = XUNet(2, 1, 2, features=TINY)
    net = XUNetAttn(2, 1, 2, features=TINY)
    result = net.load_state_dict(xunet.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(".se." in k for k in result.missing_keys)
