"""R2AttU-Net: the contract, and its structure (R2U-Net blocks with attention gates)."""

from scripts.networks import R2AttUNet, R2UNet
from scripts.networks.blocks import AttentionGate, RRCNNBlock

from .network_contract import NetworkContract, count_parameters


class TestR2AttUNet(NetworkContract):
    name = "r2attunet"
    options = {"features": (4, 8, 16, 32, 64)}
    param_counts = {1: 57569, 2: 155681, 3: 450017}


def test_recurrent_blocks_and_gates():
    net = R2AttUNet(3, 1, 2, features=(4, 8, 16), steps=2)
    assert all(isinstance(stage.gate, AttentionGate) for stage in net.decoder)
    assert all(isinstance(stage.block, RRCNNBlock) for stage in net.decoder)
    plain = R2UNet(3, 1, 2, features=(4, 8, 16), steps=2)
    gates = sum(count_parameters(stage.gate) for stage in net.decoder)
    assert count_parameters(net) == count_parameters(plain) + gates


def test_parameter_count_of_the_seed_layout():
    """The seed's 2D R2AttU_Net (img_ch=3, output_ch=1, t=2, features 64..1024) has 39,442,925 parameters."""
    import torch

    with torch.device("meta"):
        net = R2AttUNet(spatial_dims=2, in_channels=3, out_channels=1, steps=2)
    assert count_parameters(net) == 39_442_925
