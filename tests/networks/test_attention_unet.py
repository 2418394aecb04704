"""Attention U-Net: the contract and the attention gate."""

import torch

from scripts.networks import AttentionUNet
from scripts.networks.blocks import AttentionGate

from .network_contract import NetworkContract


class TestAttentionUNet(NetworkContract):
    name = "attentionunet"
    options = {"features": (4, 8, 16, 32, 64)}
    param_counts = {1: 47833, 2: 137737, 3: 407449}


def test_gate_weights_the_skip_in_0_1():
    gate = AttentionGate(3, gate_channels=4, skip_channels=6, inter_channels=2).eval()
    g, x = torch.randn(2, 4, 5, 6, 7), torch.randn(2, 6, 5, 6, 7)
    with torch.no_grad():
        y = gate(g, x)
        alpha = gate.psi(gate.act(gate.w_g(g) + gate.w_x(x)))
    assert y.shape == x.shape and alpha.shape == (2, 1, 5, 6, 7)
    assert ((alpha >= 0) & (alpha <= 1)).all()
    assert torch.allclose(y, x * alpha)


def test_every_skip_is_gated():
    net = AttentionUNet(2, 1, 2, features=(4, 8, 16))
    assert [type(stage.gate).__name__ for stage in net.decoder] == ["AttentionGate", "AttentionGate"]
    assert [stage.gate.w_g.conv.out_channels for stage in net.decoder] == [4, 2]  # F_int = F_l / 2


def test_parameter_count_of_the_seed_layout():
    """The seed's 2D AttU_Net (img_ch=3, output_ch=1, features 64..1024, batch norm) has 34,878,573 parameters
    (sum of its layers: conv blocks, up_conv, Attention_block with F_int = F_l / 2)."""
    with torch.device("meta"):
        net = AttentionUNet(spatial_dims=2, in_channels=3, out_channels=1)
    assert sum(p.numel() for p in net.parameters()) == 34_878_573
