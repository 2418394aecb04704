"""The exact low-resolution computation of a convolution over nearest-resized, concatenated maps."""

import pytest
import torch
import torch.nn.functional as F

from scripts.networks.cross_level_conv import (
    COARSER,
    FINER,
    OTHER,
    SAME,
    class_kernel_equation,
    add_coarse_part_conv,
    cross_level_conv,
    size_ratio,
)


def reference(target, parts, weight, bias):
    size = target.shape[2:]
    cat = torch.cat([target] + [F.interpolate(p, size=size, mode="nearest") for p in parts], 1)
    return {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[target.dim() - 2](cat, weight, bias, padding=1)


def test_size_ratio_kinds():
    assert size_ratio([8, 8], [8, 8]) == (SAME, [1, 1])
    assert size_ratio([16, 8], [8, 8]) == (FINER, [2, 1])
    assert size_ratio([2, 4], [8, 8]) == (COARSER, [4, 2])
    assert size_ratio([3, 8], [8, 8])[0] == OTHER
    assert size_ratio([16, 4], [8, 8])[0] == OTHER  # finer on one axis, coarser on the other


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_coarse_part_equals_upsample_then_conv(dims, factor):
    torch.manual_seed(factor)
    low = (3, 4, 2)[:dims]
    part = torch.randn((2, 3) + low, dtype=torch.float64)
    weight = torch.randn((5, 3) + (3,) * dims, dtype=torch.float64)
    up = F.interpolate(part, scale_factor=factor, mode="nearest")
    expected = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims](up, weight, padding=1)
    got = add_coarse_part_conv(torch.zeros_like(expected), part, weight, [factor] * dims, class_kernel_equation(dims))
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_coarse_part_with_mixed_factors():
    part = torch.randn(1, 2, 3, 5, 2, dtype=torch.float64)
    weight = torch.randn(4, 2, 3, 3, 3, dtype=torch.float64)
    factors = [2, 1, 3]
    up = F.interpolate(part, size=[6, 5, 6], mode="nearest")
    expected = F.conv3d(up, weight, padding=1)
    got = add_coarse_part_conv(torch.zeros_like(expected), part, weight, factors, class_kernel_equation(3))
    assert torch.allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("factors", [[2], [3, 2], [2, 1, 4]])
def test_interleaved_add_gradients(factors):
    """The one-pass backward of the interleaving add against finite differences."""
    dims = len(factors)
    low = (2, 3, 2)[:dims]
    part = torch.randn((1, 2) + low, dtype=torch.float64, requires_grad=True)
    weight = torch.randn((3, 2) + (3,) * dims, dtype=torch.float64, requires_grad=True)
    base = torch.randn((1, 3) + tuple(n * s for n, s in zip(low, factors)), dtype=torch.float64,
                       requires_grad=True)
    equation = class_kernel_equation(dims)

    def fn(base, part, weight):
        return add_coarse_part_conv(base * 1.0, part, weight, factors, equation)

    assert torch.autograd.gradcheck(fn, (base, part, weight))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_cross_level_conv_mixes_finer_same_coarser_and_odd_parts(dims):
    torch.manual_seed(dims)
    size = (12, 8, 4)[:dims]
    target = torch.randn((2, 3) + size, dtype=torch.float64)
    parts = [
        torch.randn((2, 2) + tuple(s * 2 for s in size), dtype=torch.float64),  # finer
        torch.randn((2, 4) + size, dtype=torch.float64),  # same
        torch.randn((2, 3) + tuple(s // 2 for s in size), dtype=torch.float64),  # coarser
        torch.randn((2, 1) + tuple(s // 4 for s in size), dtype=torch.float64),  # coarser still
        torch.randn((2, 2) + tuple(s + 3 for s in size), dtype=torch.float64),  # no integer ratio: fallback
    ]
    channels = 3 + sum(p.shape[1] for p in parts)
    weight = torch.randn((5, channels) + (3,) * dims, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    expected = reference(target, parts, weight, bias)
    got = cross_level_conv(target, parts, weight, bias, class_kernel_equation(dims))
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10)
    # gradients with respect to the weight and bias are the same as well
    g = torch.randn_like(expected)
    dw_ref, db_ref = torch.autograd.grad((expected * g).sum(), [weight, bias])
    dw, db = torch.autograd.grad((got * g).sum(), [weight, bias])
    assert torch.allclose(dw, dw_ref, atol=1e-9) and torch.allclose(db, db_ref, atol=1e-9)


def test_channel_mismatch_is_reported():
    target = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match="channels"):
        cross_level_conv(target, [torch.randn(1, 3, 4, 4)], torch.randn(4, 4, 3, 3), None, class_kernel_equation(2))
