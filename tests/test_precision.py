"""Mixed precision for the engines: the autocast wrapper and the config's default."""

import pytest
import torch

from scripts.networks import create_network, list_networks
from scripts.precision import AutocastForward, cpu_bfloat16_gradients_are_correct, fast_precision, with_autocast


def small_xunet():
    torch.manual_seed(0)
    return create_network("xunet", 3, 1, 3, network_options={"xunet": {"features": [4, 4, 8, 8, 16, 4]}})


def test_float32_returns_the_network_itself():
    net = small_xunet()
    assert with_autocast(net, "float32") is net
    assert with_autocast(net, "fp32") is net


@pytest.mark.parametrize("precision", ["bfloat16", "bf16"])
def test_bfloat16_forward_is_float32_and_close(precision):
    net = small_xunet().eval()
    wrapped = with_autocast(net, precision)
    assert isinstance(wrapped, AutocastForward) and wrapped.network is net
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        full = net(x)
        mixed = wrapped(x)
    assert mixed.dtype == torch.float32 and mixed.shape == full.shape
    # bfloat16 keeps 8 bits of mantissa: close, not equal
    assert (mixed - full).abs().max() <= 0.05 * full.abs().max()
    assert not torch.equal(mixed, full)


def test_bfloat16_training_updates_the_float32_parameters():
    net = small_xunet()
    wrapped = with_autocast(net, "bfloat16")
    assert set(wrapped.state_dict()) == {"network." + k for k in net.state_dict()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = wrapped(torch.randn(2, 1, 32, 32, 32)).square().mean()
    loss.backward()
    optimizer.step()
    assert all(
        p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters()
    )
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert "final_conv.weight" in changed and "conv_0.conv_0.conv.weight" in changed


def test_unknown_precision_names_the_setting():
    with pytest.raises(ValueError, match="'precision'.*float32, bfloat16"):
        with_autocast(small_xunet(), "half-ish")


def test_fast_precision_is_a_valid_setting():
    assert fast_precision("cpu") in ("float32", "bfloat16")
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported() and cpu_bfloat16_gradients_are_correct()
    assert fast_precision(torch.device("cpu")) == ("bfloat16" if native else "float32")
    with_autocast(small_xunet(), fast_precision("cpu"))  # accepted by the wrapper


def test_a_cpu_with_wrong_bfloat16_gradients_trains_in_float32(monkeypatch, caplog):
    import scripts.precision as precision

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(precision, "cpu_bfloat16_gradients_are_correct", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("WARNING", logger="scripts.precision"):
        assert fast_precision("cpu") == "float32"
        assert "training in float32 instead" in caplog.text
        with_autocast(small_xunet(), "bfloat16")  # asked for explicitly: allowed, with a warning
        assert "do not train with it here" in caplog.text
    monkeypatch.setattr(precision, "cpu_bfloat16_gradients_are_correct", lambda: True)
    assert fast_precision("cpu") == "bfloat16"


def test_the_gradient_check_tells_whether_xunet_trains_correctly_in_bfloat16_here():
    """The check's verdict on its small convolution holds for the recipe's XUNet at the training patch 32 x 48 x 32,
    whose deepest level (down_4, 2 x 3 x 2 voxels) is where a CPU with the oneDNN fault goes wrong."""
    torch.manual_seed(0)
    net = create_network("xunet", 3, 1, 3, network_options={"xunet": {"features": [16, 16, 32, 64, 128, 16]}})
    x = torch.randn(2, 1, 32, 48, 32)

    def gradients(precision):
        net.zero_grad()
        with_autocast(net, precision)(x).square().mean().backward()
        return {n: p.grad.clone() for n, p in net.named_parameters() if "down_4" in n and n.endswith("conv.weight")}

    reference, mixed = gradients("float32"), gradients("bfloat16")
    assert len(reference) == 2
    agree = all(
        torch.isfinite(mixed[n]).all() and (mixed[n] - ref).abs().max() <= 0.05 * ref.abs().max()
        for n, ref in reference.items()
    )
    assert agree == cpu_bfloat16_gradients_are_correct()


@pytest.mark.parametrize("name", list_networks())
def test_every_network_trains_with_finite_values_at_the_cpu_default_precision(name):
    """Three AdamW steps at the precision the bundle trains in on this CPU (bfloat16 where it is native and
    correct), at the family test's small widths and patch (the deepest level keeps 2 x 1 x 1 voxels): outputs,
    losses, gradients and the float32 parameters stay finite."""
    from test_family_training import TRAIN_OPTIONS

    torch.manual_seed(0)
    net = create_network(name, 3, 1, 3, network_options={name: TRAIN_OPTIONS.get(name, {})})
    wrapped = with_autocast(net, fast_precision("cpu")).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-2)
    x = torch.randn(2, 1, 32, 16, 16)
    target = torch.randint(0, 3, (2, 32, 16, 16))
    for _ in range(3):
        optimizer.zero_grad()
        out = wrapped(x)
        out = out[:, -1] if out.dim() == x.dim() + 1 else out  # UNet++ stacks its deep-supervision heads
        loss = torch.nn.functional.cross_entropy(out, target)
        loss.backward()
        assert torch.isfinite(loss), loss
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())
