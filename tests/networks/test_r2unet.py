"""R2U-Net: the contract, and the recurrent residual block checked against Alom et al. 2018."""

import pytest
import torch
import torch.nn.functional as F

from scripts.networks import R2UNet
from scripts.networks.blocks import RecurrentConv, RRCNNBlock

from .network_contract import NetworkContract, count_parameters


class TestR2UNet(NetworkContract):
    name = "r2unet"
    options = {"features": (4, 8, 16, 32, 64)}
    param_counts = {1: 55987, 2: 154099, 3: 448435}


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
def test_recurrent_conv_follows_the_paper(steps):
    """O(t) = w_f * x + w_r * h(t-1) + b with tied kernels (w_f = w_r = w): h(0) = f(w * x + b),
    h(k) = f(w * x + w * h(k-1) + b) -- one convolution applied steps + 1 times."""
    torch.manual_seed(0)
    layer = RecurrentConv(2, 3, steps=steps, norm=None, act="relu")
    x = torch.randn(2, 3, 9, 11)
    w, b = layer.conv.conv.weight, layer.conv.conv.bias
    h = F.relu(F.conv2d(x, w, b, padding=1))
    for _ in range(steps):
        h = F.relu(F.conv2d(x, w, None, padding=1) + F.conv2d(h, w, None, padding=1) + b.view(1, -1, 1, 1))
    assert torch.allclose(layer(x), h, atol=1e-6)


def test_recurrent_weights_are_shared_across_steps():
    counts = {count_parameters(RecurrentConv(3, 4, steps=t)) for t in (0, 1, 2, 5)}
    assert counts == {4 * 4 * 27 + 4 + 2 * 4}  # one conv (+ bias) and its batch norm, whatever the steps
    calls = []
    layer = RecurrentConv(1, 2, steps=2)
    layer.conv.conv.register_forward_hook(lambda *_: calls.append(1))
    layer(torch.randn(2, 2, 8))
    assert len(calls) == 3  # the paper's t = 2: one convolution and two recurrent ones


def test_rrcnn_block_is_residual_on_the_1x1_projection():
    torch.manual_seed(0)
    block = RRCNNBlock(1, 2, 5, steps=2).eval()
    x = torch.randn(2, 2, 16)
    with torch.no_grad():
        projected = block.conv_1x1(x)
        assert projected.shape == (2, 5, 16)
        assert torch.allclose(block(x), projected + block.rcnn(projected))
    assert len(block.rcnn) == 2 and all(isinstance(m, RecurrentConv) for m in block.rcnn)


def test_steps_do_not_change_parameters():
    a = R2UNet(2, 1, 2, features=(4, 8, 16), steps=1)
    b = R2UNet(2, 1, 2, features=(4, 8, 16), steps=3)
    assert count_parameters(a) == count_parameters(b)
    b.load_state_dict(a.state_dict())
    assert b.steps == 3 and not any(stage.gate.__class__.__name__ == "AttentionGate" for stage in a.decoder)


def test_parameter_count_of_the_seed_layout():
    """The seed's 2D R2U_Net (img_ch=3, output_ch=1, t=2, features 64..1024) has 39,091,393 parameters."""
    with torch.device("meta"):
        net = R2UNet(spatial_dims=2, in_channels=3, out_channels=1, steps=2)
    assert count_parameters(net) == 39_091_393
