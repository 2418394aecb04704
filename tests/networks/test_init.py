"""init_weights: normal / xavier / kaiming / orthogonal initialisation of any network."""

import math

import pytest
import torch
import torch.nn as nn

from scripts.networks import create_network, init_weights, list_networks

SMALL = {
    "unet": {"features": (4, 8)},
    "unetpp": {"features": (4, 8)},
    "attentionunet": {"features": (4, 8)},
    "r2unet": {"features": (4, 8)},
    "r2attunet": {"features": (4, 8)},
    "resunet": {"features": (4, 8)},
}


@pytest.mark.parametrize("init_type", ["normal", "xavier", "kaiming", "orthogonal"])
@pytest.mark.parametrize("name", list_networks())
def test_every_network_can_be_initialised(name, init_type):
    torch.manual_seed(0)
    net = create_network(name, 3, 1, 2, **SMALL.get(name, {"features": (4, 4, 8, 8, 16, 4)}))
    assert init_weights(net, init_type, gain=0.02) is net
    for m in net.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.weight is not None:
            assert torch.count_nonzero(m.bias) == 0
            assert (m.weight - 1).abs().max() < 0.2
    x = torch.randn(2, 1, 32, 16, 16)
    assert torch.isfinite(net.eval()(x)).all()


def test_statistics():
    conv = nn.Conv3d(64, 128, 3)
    init_weights(conv, "normal", gain=0.02)
    assert abs(float(conv.weight.detach().std()) - 0.02) < 0.001
    init_weights(conv, "kaiming")
    fan_in = 64 * 27
    assert abs(float(conv.weight.detach().std()) - math.sqrt(2 / fan_in)) < 0.002
    init_weights(conv, "xavier", gain=1.0)
    assert abs(float(conv.weight.detach().std()) - math.sqrt(2 / (fan_in + 128 * 27))) < 0.002
    lin = nn.Linear(8, 8)
    init_weights(lin, "orthogonal", gain=1.0)
    assert torch.allclose(lin.weight @ lin.weight.T, torch.eye(8), atol=1e-5)
    transposed = nn.ConvTranspose2d(4, 4, 2)
    init_weights(transposed, "normal", gain=0.5)
    assert torch.count_nonzero(transposed.bias) == 0


def test_deterministic_and_validated():
    def build():
        torch.manual_seed(3)
        return init_weights(create_network("unet", 2, 1, 2, features=(4, 8)), "xavier")

    a, b = build(), build()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="init_type"):
        init_weights(a, "uniform")
