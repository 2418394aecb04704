"""UNet++ (NestedUNet): the contract with and without deep supervision, single-tensor outputs for inference,
pruning, weights shared between the modes, and the stacked deep-supervision loss."""

import pytest
import torch
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss

from scripts.networks import NestedUNet, StackedDeepSupervisionLoss, create_network, last_head

from .network_contract import NetworkContract

FEATURES = (4, 8, 16, 32, 64)


class TestNestedUNetDeepSupervision(NetworkContract):
    name = "unetpp"
    options = {"features": FEATURES, "deep_supervision": True}
    param_counts = {1: 49116, 2: 144492, 3: 430620}

    def train_output_shape(self, spatial_dims, size):
        return (self.batch, len(FEATURES) - 1, self.out_channels, *size)


class TestNestedUNet(NetworkContract):
    name = "unetpp"
    options = {"features": FEATURES}
    param_counts = {1: 49116, 2: 144492, 3: 430620}  # the heads are built with or without deep supervision
    # without deep supervision only the full network's head (the last) is trained
    params_without_grad = ("heads.0.", "heads.1.", "heads.2.")


def test_modes_share_weights():
    ds = NestedUNet(2, 1, 3, features=FEATURES, deep_supervision=True)
    plain = NestedUNet(2, 1, 3, features=FEATURES)
    plain.load_state_dict(ds.state_dict(), strict=True)
    x = torch.randn(1, 1, 24, 40)
    with torch.no_grad():
        assert torch.equal(ds.eval()(x), plain.eval()(x))
        assert torch.equal(plain.train()(x), ds.train()(x)[:, -1])


@pytest.mark.parametrize("head", [1, 2, 3, 4])
def test_pruned_heads_match_the_deep_supervision_outputs(head):
    net = NestedUNet(2, 1, 2, features=FEATURES, norm=None, deep_supervision=True)
    x = torch.randn(2, 1, 20, 36)
    with torch.no_grad():
        stacked = net.train()(x)
        pruned = net.eval().set_eval_head(head)(x)
    assert torch.allclose(pruned, stacked[:, head - 1], atol=1e-6)


def test_pruning_runs_fewer_nodes():
    net = NestedUNet(1, 1, 2, features=FEATURES, eval_head=1).eval()
    calls = []
    for node in net.nodes:
        node.register_forward_hook(lambda *_: calls.append(1))
    net(torch.randn(1, 1, 32))
    assert len(calls) == 3  # x00, x10, x01
    with pytest.raises(ValueError, match="eval_head"):
        net.set_eval_head(5)


def test_sliding_window_inference_with_deep_supervision():
    """In eval mode the output is one tensor, so MONAI's SlidingWindowInferer stitches it."""
    net = NestedUNet(3, 1, 3, features=(2, 4, 8, 16, 32), deep_supervision=True).eval()
    inferer = SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=2, overlap=0.25)
    with torch.no_grad():
        y = inferer(torch.randn(1, 1, 20, 24, 18), net)
    assert y.shape == (1, 3, 20, 24, 18)


def test_stacked_deep_supervision_loss():
    torch.manual_seed(0)
    base = DiceCELoss(to_onehot_y=True, softmax=True)
    heads = torch.randn(2, 4, 3, 8, 8)
    target = torch.randint(0, 3, (2, 1, 8, 8)).float()
    expected = sum(base(heads[:, k], target) for k in range(4))
    assert torch.allclose(StackedDeepSupervisionLoss(base)(heads, target), expected)
    exp = StackedDeepSupervisionLoss(base, weight_mode="exp")(heads, target)
    assert torch.allclose(exp, sum(w * base(heads[:, 3 - i], target) for i, w in enumerate([1, 0.5, 0.25, 0.125])))
    # a plain prediction passes through
    assert torch.allclose(StackedDeepSupervisionLoss(base)(heads[:, 0], target), base(heads[:, 0], target))
    assert torch.equal(last_head(heads[0]), heads[0, -1])


def test_upsample_modes_and_aliases():
    for mode in ("deconv", "interp_conv"):
        net = create_network("nestedunet", 2, 1, 2, features=(4, 8, 16), upsample=mode)
        assert net(torch.zeros(1, 1, 12, 20)).shape == (1, 2, 12, 20)
    assert type(create_network("UNet++", 1, 1, 1, features=(2, 4))) is NestedUNet


def test_parameter_count_of_the_seed_layout():
    """The seed's 2D NestedUNet (input_channels=3, num_classes=1, nb_filter 32..512, bilinear, one head without
    deep supervision) has 9,163,329 parameters; this network always builds all 4 heads (3 more 1x1 convs)."""
    with torch.device("meta"):
        net = NestedUNet(spatial_dims=2, in_channels=3, out_channels=1)
    assert sum(p.numel() for p in net.parameters()) == 9_163_329 + 3 * (32 + 1)
