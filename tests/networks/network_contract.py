"""The contract every registered network passes, for 1D, 2D and 3D.

Subclass :class:`NetworkContract` in ``tests/networks/test_<network>.py`` (the class name must start with
``Test``), set :attr:`~NetworkContract.name` and small :attr:`~NetworkContract.options`, and the tests below run
for that network:

* output shape ``(B, out_channels, *S)`` in eval mode (and the training-mode shape, see
  :meth:`~NetworkContract.train_output_shape`);
* odd input sizes give outputs of the input's size, in eval and training mode;
* backward: gradients reach every parameter (except the documented :attr:`~NetworkContract.params_without_grad`);
* TorchScript: ``torch.jit.script`` gives the eager outputs -- or, for a network whose
  :attr:`~NetworkContract.supports_torchscript` is False (with the reason in
  :attr:`~NetworkContract.torchscript_reason`), ``torch.export`` does;
* the parameter count is deterministic and equals :attr:`~NetworkContract.param_counts` when given;
* the network is registered under its name.

Inputs and widths are tiny so the whole family's contract runs in well under two minutes on two CPU cores.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
import torch.nn as nn

from scripts.networks import create_network, get_network_class, list_networks

DIMS = (1, 2, 3)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


class NetworkContract:
    """Base class of the per-network contract tests (not collected itself: its name has no ``Test`` prefix)."""

    #: registered name of the network under test
    name: ClassVar[str] = ""
    #: keyword arguments for the network (small widths)
    options: ClassVar[dict[str, Any]] = {}
    in_channels: ClassVar[int] = 2
    out_channels: ClassVar[int] = 3
    batch: ClassVar[int] = 2
    #: regular input sizes (kept so that the deepest level of a 4-pooling network has >= 2 samples in all)
    sizes: ClassVar[dict[int, tuple[int, ...]]] = {1: (32,), 2: (32, 32), 3: (32, 16, 16)}
    #: odd input sizes: no axis a multiple of 2
    odd_sizes: ClassVar[dict[int, tuple[int, ...]]] = {1: (37,), 2: (35, 37), 3: (35, 19, 17)}
    #: False if torch.jit.script cannot compile the network; say why in torchscript_reason
    supports_torchscript: ClassVar[bool] = True
    torchscript_reason: ClassVar[str] = ""
    #: parameter-name prefixes that get no gradient by design in training mode
    params_without_grad: ClassVar[tuple[str, ...]] = ()
    #: expected parameter counts per spatial_dims for `build` (None: only checked for determinism)
    param_counts: ClassVar[dict[int, int] | None] = None
    atol: ClassVar[float] = 1e-5

    # -- hooks ------------------------------------------------------------------------------------------------
    def build(self, spatial_dims: int) -> nn.Module:
        """The network under test, built through the registry."""
        torch.manual_seed(0)
        return create_network(self.name, spatial_dims, self.in_channels, self.out_channels, **self.options)

    def train_output_shape(self, spatial_dims: int, size: tuple[int, ...]) -> tuple[int, ...]:
        """Output shape in training mode for input size ``size`` (default: the eval shape)."""
        return (self.batch, self.out_channels, *size)

    def input(self, size: tuple[int, ...], seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn((self.batch, self.in_channels, *size), generator=generator)

    # -- the contract -----------------------------------------------------------------------------------------
    def test_registered(self):
        assert self.name in list_networks()
        assert type(self.build(2)) is get_network_class(self.name)

    @pytest.mark.parametrize("spatial_dims", DIMS)
    def test_output_shape(self, spatial_dims):
        net = self.build(spatial_dims)
        size = self.sizes[spatial_dims]
        x = self.input(size)
        with torch.no_grad():
            assert tuple(net.eval()(x).shape) == (self.batch, self.out_channels, *size)
            assert tuple(net.train()(x).shape) == self.train_output_shape(spatial_dims, size)

    @pytest.mark.parametrize("spatial_dims", DIMS)
    def test_odd_input_sizes(self, spatial_dims):
        net = self.build(spatial_dims).eval()
        size = self.odd_sizes[spatial_dims]
        with torch.no_grad():
            y = net(self.input(size))
        assert tuple(y.shape) == (self.batch, self.out_channels, *size)
        assert torch.isfinite(y).all()

    @pytest.mark.parametrize("spatial_dims", DIMS)
    def test_backward_reaches_all_parameters(self, spatial_dims):
        net = self.build(spatial_dims).train()
        size = self.odd_sizes[spatial_dims]
        y = net(self.input(size))
        assert tuple(y.shape) == self.train_output_shape(spatial_dims, size)
        target = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        (y * target).mean().backward()
        missing = [
            n for n, p in net.named_parameters() if p.grad is None and not n.startswith(self.params_without_grad)
        ]
        assert not missing, f"no gradient reaches {missing}"
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0

    @pytest.mark.parametrize("spatial_dims", DIMS)
    def test_torchscript_or_export(self, spatial_dims):
        net = self.build(spatial_dims).eval()
        x = self.input(self.odd_sizes[spatial_dims])
        with torch.no_grad():
            expected = net(x)
            if self.supports_torchscript:
                compiled = torch.jit.script(net)
            else:
                assert self.torchscript_reason, "say why the network cannot be scripted"
                compiled = torch.export.export(net, (x,)).module()
            actual = compiled(x)
        assert actual.shape == expected.shape
        assert torch.allclose(actual, expected, atol=self.atol), float((actual - expected).abs().max())

    @pytest.mark.parametrize("spatial_dims", DIMS)
    def test_parameter_count_is_deterministic(self, spatial_dims):
        counts = {count_parameters(self.build(spatial_dims)) for _ in range(2)}
        assert len(counts) == 1
        if self.param_counts is not None:
            assert counts.pop() == self.param_counts[spatial_dims]
