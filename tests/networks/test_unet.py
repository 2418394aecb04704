"""UNet: the contract, the seeds' parameter counts, the skip-alignment modes and gradient checkpointing."""

import pytest
import torch

from scripts.networks import UNet, create_network

from .network_contract import NetworkContract, count_parameters

FEATURES = (4, 8, 16, 32, 64)


class TestUNet(NetworkContract):
    name = "unet"
    options = {"features": FEATURES}
    param_counts = {1: 43411, 2: 122435, 3: 354067}


def meta_count(**kwargs) -> int:
    with torch.device("meta"):
        return count_parameters(UNet(**kwargs))


def test_parameter_count_seed_002():
    """3 -> 10 classes, same padding, transposed convolutions, features 64..1024, no batch norm."""
    assert meta_count(spatial_dims=2, in_channels=3, out_channels=10, norm=None, upsample="deconv") == 31_032_330
    # the seed's centre-crop variant (valid convolutions) has the same parameters
    assert meta_count(spatial_dims=2, in_channels=3, out_channels=10, norm=None, skip_mode="crop") == 31_032_330


def test_parameter_counts_pytorch_unet_seed_003():
    """Pytorch-UNet: convolutions without bias + batch norm; its bilinear mode halves channels (factor 2)."""
    common = dict(spatial_dims=2, in_channels=3, out_channels=2, norm="batch", bias=False)
    assert meta_count(**common, upsample="deconv") == 31_037_698
    assert meta_count(**common, upsample="interp", halve_channels=True) == 17_263_042


def test_interp_layouts_and_bad_options():
    net = UNet(2, 1, 2, features=(4, 8, 16), upsample="interp")
    assert net(torch.zeros(1, 1, 20, 12)).shape == (1, 2, 20, 12)
    net = UNet(2, 1, 2, features=(4, 8, 16), upsample="interp_conv", interp_mode="nearest")
    assert net(torch.zeros(1, 1, 20, 12)).shape == (1, 2, 20, 12)
    with pytest.raises(ValueError, match="halve_channels"):
        UNet(2, 1, 2, upsample="deconv", halve_channels=True)
    with pytest.raises(ValueError, match="skip_mode"):
        UNet(2, 1, 2, skip_mode="concat")
    with pytest.raises(ValueError, match="same-padded"):
        UNet(2, 1, 2, skip_mode="same", conv_padding="valid")
    with pytest.raises(ValueError, match="upsample"):
        UNet(2, 1, 2, upsample="bilinear")


def test_valid_convolutions_with_centre_crop():
    """Ronneberger et al.: 572 -> 388 with four poolings; other sizes are refused with the nearest valid ones."""
    assert UNet(2, 1, 2, skip_mode="crop").output_size(572) == 388
    net = UNet(2, 1, 2, features=(2, 4, 8), skip_mode="crop").eval()
    sizes = net.valid_input_sizes(1, 64)
    assert sizes[:3] == [44, 48, 52]
    x = torch.randn(1, 1, 52, 44)
    assert net(x).shape == (1, 2, net.output_size(52), net.output_size(44)) == (1, 2, 12, 4)
    with pytest.raises(ValueError, match=r"Nearest valid sizes: \[48, 52\]"):
        net(torch.randn(1, 1, 50, 44))
    with pytest.raises(ValueError, match=r"Nearest valid sizes: \[44\]"):
        net(torch.randn(1, 1, 44, 30))
    for dims in (1, 3):
        y = UNet(dims, 1, 2, features=(2, 4), skip_mode="crop")(torch.randn((2, 1) + (20,) * dims))
        assert y.shape == (2, 2) + (4,) * dims


def test_centre_crop_allows_overlap_tiling():
    """With valid convolutions and centre crops the output is translation-equivariant in steps of 2 ** depth:
    a tile of the input starting at a multiple of 4 (depth 2) gives exactly the matching part of the output of
    the whole input -- the overlap-tile strategy of the paper."""
    net = UNet(1, 1, 2, features=(2, 4, 8), skip_mode="crop", norm=None).eval()
    x = torch.randn(1, 1, 60)
    full = net(x)
    assert full.shape[-1] == net.output_size(60) == 20
    for start in (0, 4, 8, 16):
        tile = net(x[..., start : start + 44])
        assert tile.shape[-1] == net.output_size(44) == 4
        assert torch.allclose(tile, full[..., start : start + 4], atol=1e-6)


def test_pad_mode():
    net = UNet(2, 1, 2, features=(4, 8, 16, 32), skip_mode="pad").eval()
    assert net(torch.randn(1, 1, 37, 45)).shape == (1, 2, 37, 45)
    valid = UNet(2, 1, 2, features=(4, 8, 16, 32), skip_mode="pad", conv_padding="valid").eval()
    assert valid.output_size(101) == 101 - 8
    assert valid(torch.randn(1, 1, 101, 96)).shape == (1, 2, 93, 88)


def _saved_bytes(net, x):
    """Bytes of the tensors autograd keeps for backward (deduplicated by storage)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = net(x)
    return y, sum(storages.values())


def test_gradient_checkpointing_saves_memory_and_changes_nothing():
    torch.manual_seed(0)
    plain = UNet(2, 1, 2, features=(4, 8, 16, 32), dropout=0.1).train()
    ckpt = UNet(2, 1, 2, features=(4, 8, 16, 32), dropout=0.1, checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 64, 64)
    torch.manual_seed(1)
    y_plain, bytes_plain = _saved_bytes(plain, x)
    torch.manual_seed(1)
    y_ckpt, bytes_ckpt = _saved_bytes(ckpt, x)
    assert bytes_ckpt < 0.3 * bytes_plain, (bytes_ckpt, bytes_plain)
    assert torch.allclose(y_plain, y_ckpt)
    y_plain.square().mean().backward()
    y_ckpt.square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    # the recomputation in backward does not update the batch-norm statistics a second time
    for (name, b), c in zip(plain.named_buffers(), ckpt.buffers()):
        assert torch.equal(b, c), name


def test_checkpointing_is_off_outside_training():
    net = UNet(1, 1, 2, features=(4, 8)).use_checkpointing()
    assert net.checkpointing
    x = torch.randn(2, 1, 16)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), net.use_checkpointing(False)(x))
    scripted = torch.jit.script(net.use_checkpointing().train())  # scripted code simply skips checkpointing
    assert scripted(x).shape == (2, 2, 16)


def test_registry_name():
    net = create_network("UNet", 2, 1, 3, network_options={"unet": {"features": (2, 4)}})
    assert isinstance(net, UNet) and net.depth == 1
