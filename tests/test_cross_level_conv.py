"""The exact low-resolution computation of a convolution over nearest-resized, concatenated maps."""

import pytest
import torch
import torch.nn.functional as F

import scripts.networks.cross_level_conv as clc
from scripts.networks.cross_level_conv import (
    COARSER,
    FINER,
    OTHER,
    SAME,
    _interleave_add_by_gather,
    add_coarse_part_conv,
    coarse_part_conv,
    coarse_part_deconv,
    cross_level_conv,
    deconv_to_class_kernels,
    folded_upsample_kernel,
    interleave_add_,
    prefers_deconv,
    size_ratio,
    upsample_cross_level_conv,
    upsample_folding_pays,
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
    got = add_coarse_part_conv(torch.zeros_like(expected), part, weight, [factor] * dims)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_coarse_part_with_mixed_factors():
    part = torch.randn(1, 2, 3, 5, 2, dtype=torch.float64)
    weight = torch.randn(4, 2, 3, 3, 3, dtype=torch.float64)
    factors = [2, 1, 3]
    up = F.interpolate(part, size=[6, 5, 6], mode="nearest")
    expected = F.conv3d(up, weight, padding=1)
    got = add_coarse_part_conv(torch.zeros_like(expected), part, weight, factors)
    assert torch.allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_coarse_part_deconv_equals_upsample_then_conv(dims, factor):
    torch.manual_seed(10 + factor)
    low = (3, 4, 2)[:dims]
    part = torch.randn((2, 3) + low, dtype=torch.float64)
    weight = torch.randn((5, 3) + (3,) * dims, dtype=torch.float64)
    expected = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims](
        F.interpolate(part, scale_factor=factor, mode="nearest"), weight, padding=1
    )
    got = coarse_part_deconv(part, weight, [factor] * dims)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_coarse_part_deconv_with_mixed_factors():
    part = torch.randn(1, 2, 3, 5, 2, dtype=torch.float64)
    weight = torch.randn(4, 2, 3, 3, 3, dtype=torch.float64)
    expected = F.conv3d(F.interpolate(part, size=[6, 5, 6], mode="nearest"), weight, padding=1)
    assert torch.allclose(coarse_part_deconv(part, weight, [2, 1, 3]), expected, atol=1e-12)


def test_prefers_deconv_up_to_factor_four():
    """Equal multiply-adds up to s = 4 (no interleaving pass: deconvolution); far fewer for the class
    convolution from s = 8 on."""
    assert prefers_deconv([2, 2, 2]) and prefers_deconv([4, 4]) and prefers_deconv([3]) and prefers_deconv([2, 1, 4])
    assert not prefers_deconv([8, 8, 8]) and not prefers_deconv([16, 16]) and not prefers_deconv([8])


@pytest.mark.parametrize("factors", [[2], [5], [3, 2], [2, 1, 4], [4, 3, 8]])
def test_strided_interleave_equals_gather_interleave(factors):
    """The strided-view interleave (eager) against the gather version (what compilers and exporters trace)."""
    torch.manual_seed(len(factors))
    dims = len(factors)
    part = torch.randn((2, 3) + (3, 2, 4)[:dims], dtype=torch.float64)
    weight = torch.randn((4, 3) + (3,) * dims, dtype=torch.float64)
    classes = coarse_part_conv(part, weight, factors)
    base = torch.randn((2, 4) + tuple(n * s for n, s in zip(part.shape[2:], factors)), dtype=torch.float64)
    strided = interleave_add_(base.clone(), classes, factors)
    gathered = _interleave_add_by_gather(base.clone(), classes, factors)
    assert torch.equal(strided, gathered)


@pytest.mark.parametrize("factors", [[2], [3, 2], [2, 1, 4]])
def test_interleaved_add_gradients(factors):
    """The one-pass backward of the interleaving add against finite differences."""
    dims = len(factors)
    low = (2, 3, 2)[:dims]
    part = torch.randn((1, 2) + low, dtype=torch.float64, requires_grad=True)
    weight = torch.randn((3, 2) + (3,) * dims, dtype=torch.float64, requires_grad=True)
    base = torch.randn((1, 3) + tuple(n * s for n, s in zip(low, factors)), dtype=torch.float64, requires_grad=True)

    def fn(base, part, weight):
        return add_coarse_part_conv(base * 1.0, part, weight, factors)

    assert torch.autograd.gradcheck(fn, (base, part, weight))


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("deconv", [True, False], ids=["deconv-for-small-factors", "class-conv-only"])
def test_cross_level_conv_mixes_finer_same_coarser_and_odd_parts(dims, deconv, monkeypatch):
    if not deconv:  # large outputs take the class convolution for every coarser part
        monkeypatch.setattr(clc, "deconv_max_output", lambda: 0)
    torch.manual_seed(dims)
    size = (16, 8, 8)[:dims]
    target = torch.randn((2, 3) + size, dtype=torch.float64)
    parts = [
        torch.randn((2, 2) + tuple(s * 2 for s in size), dtype=torch.float64),  # finer
        torch.randn((2, 4) + size, dtype=torch.float64),  # same
        torch.randn((2, 3) + tuple(s // 2 for s in size), dtype=torch.float64),  # coarser: deconvolution
        torch.randn((2, 1) + tuple(s // 4 for s in size), dtype=torch.float64),  # coarser still: deconvolution
        torch.randn((2, 2) + tuple(s // 8 for s in size), dtype=torch.float64),  # 8x: class convolution
        torch.randn((2, 2) + tuple(s + 3 for s in size), dtype=torch.float64),  # no integer ratio: fallback
    ]
    channels = 3 + sum(p.shape[1] for p in parts)
    weight = torch.randn((5, channels) + (3,) * dims, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    inputs = [target.requires_grad_()] + [p.requires_grad_() for p in parts]
    expected = reference(target, parts, weight, bias)
    got = cross_level_conv(target, parts, weight, bias)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10)
    # gradients with respect to the weight, the bias and every input map are the same as well
    g = torch.randn_like(expected)
    grads_ref = torch.autograd.grad((expected * g).sum(), [weight, bias] + inputs)
    grads = torch.autograd.grad((got * g).sum(), [weight, bias] + inputs)
    for got_grad, ref_grad in zip(grads, grads_ref):
        assert torch.allclose(got_grad, ref_grad, rtol=1e-10, atol=1e-9)


def upsampled_reference(x, up_weight, up_bias, parts, weight, bias):
    """The straightforward computation: transposed convolution (kernel 2, stride 2), then ``reference``."""
    transposed = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[x.dim() - 2]
    up = transposed(x, up_weight, up_bias, 2)
    return reference(up, parts, weight, bias)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("deconv", [True, False], ids=["transposed-conv", "class-conv"])
@pytest.mark.parametrize("up_bias", [True, False], ids=["bias", "no-bias"])
def test_upsample_folded_into_cross_level_conv(dims, deconv, up_bias, monkeypatch):
    """The upsampling kernel folded into the fused convolution: same outputs and gradients as computing ``up``."""
    if not deconv:
        monkeypatch.setattr(clc, "deconv_max_output", lambda: 0)
    torch.manual_seed(10 * dims + deconv)
    low = (6, 4, 4)[:dims]
    size = tuple(2 * n for n in low)
    x = torch.randn((2, 4) + low, dtype=torch.float64, requires_grad=True)
    up_w = torch.randn((4, 3) + (2,) * dims, dtype=torch.float64, requires_grad=True)
    up_b = torch.randn(3, dtype=torch.float64, requires_grad=True) if up_bias else None
    parts = [
        torch.randn((2, 2) + size, dtype=torch.float64),  # same size as the output
        torch.randn((2, 3) + tuple(2 * s for s in size), dtype=torch.float64),  # finer
        torch.randn((2, 2) + low, dtype=torch.float64),  # x's size: joins the folded low-resolution convolution
        torch.randn((2, 3) + low, dtype=torch.float64),  # a second one: their kernels are composed together
        torch.randn((2, 1) + tuple(n // 2 for n in low), dtype=torch.float64),  # 4x coarser
        torch.randn((2, 2) + tuple(s + 1 for s in size), dtype=torch.float64),  # no integer ratio: fallback
    ]
    inputs = [p.requires_grad_() for p in parts]
    channels = 3 + sum(p.shape[1] for p in parts)
    weight = torch.randn((5, channels) + (3,) * dims, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    expected = upsampled_reference(x, up_w, up_b, parts, weight, bias)
    got = upsample_cross_level_conv(x, up_w, up_b, parts, weight, bias)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10)
    leaves = [x, up_w, weight, bias] + inputs + ([up_b] if up_bias else [])
    g = torch.randn_like(expected)
    for got_grad, ref_grad in zip(
        torch.autograd.grad((got * g).sum(), leaves), torch.autograd.grad((expected * g).sum(), leaves)
    ):
        assert torch.allclose(got_grad, ref_grad, rtol=1e-10, atol=1e-9)


# the compositions written as einsums: the definitions compose_taps and class_kernels are checked against
DECONV_EINSUM = {1: "oia,xa->iox", 2: "oiab,xa,yb->ioxy", 3: "oiabc,xa,yb,zc->ioxyz"}
CLASS_EINSUM = {1: "oia,xda->xoid", 2: "oiab,xda,yeb->xyoide", 3: "oiabc,xda,yeb,zfc->xyzoidef"}


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_kernel_compositions_equal_their_einsum_definitions(dims):
    torch.manual_seed(dims)
    weight = torch.randn((4, 3) + (3,) * dims, dtype=torch.float64)
    factors = [2, 4, 16][:dims]
    deconv_mats = [clc._deconv_axis_matrix(s, weight.dtype, weight.device) for s in factors]
    expected = torch.einsum(DECONV_EINSUM[dims], [weight] + deconv_mats)
    assert torch.allclose(clc.compose_taps(weight, deconv_mats, in_channels_first=True), expected, atol=1e-12)
    class_mats = [clc._axis_classes(s, weight.dtype, weight.device) for s in factors]
    expected = torch.einsum(CLASS_EINSUM[dims], [weight] + class_mats)
    assert torch.allclose(clc.class_kernels(weight, factors), expected, atol=1e-12)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_folded_kernel_and_its_class_regrouping(dims):
    """The folded kernel of a nearest upsampling (identity kernel) is the nearest part's transposed-convolution
    kernel, and regrouping it gives the nearest part's class kernels: the two derivations agree."""
    torch.manual_seed(dims)
    weight = torch.randn((4, 3) + (3,) * dims, dtype=torch.float64)
    identity = torch.eye(3, dtype=torch.float64).reshape((3, 3) + (1,) * dims).expand((3, 3) + (2,) * dims)
    deconv_mats = [clc._deconv_axis_matrix(2, weight.dtype, weight.device)] * dims
    nearest_deconv = torch.einsum(DECONV_EINSUM[dims], [weight] + deconv_mats)
    assert torch.allclose(folded_upsample_kernel(weight, identity), nearest_deconv, atol=1e-12)
    class_mats = [clc._axis_classes(2, weight.dtype, weight.device)] * dims
    nearest_classes = torch.einsum(CLASS_EINSUM[dims], [weight] + class_mats)
    assert torch.allclose(deconv_to_class_kernels(nearest_deconv), nearest_classes, atol=1e-12)


def test_upsample_folding_pays_on_large_maps_only():
    # the bundle's bottom stage (128 -> 64 channels, 2 x 2x3x2 voxels): composing the kernels costs more than it saves
    bottom = (torch.zeros(2, 128, 2, 3, 2), torch.zeros(128, 64, 2, 2, 2), torch.zeros(64, 320, 3, 3, 3))
    assert not upsample_folding_pays(*bottom)
    # its top stage (16 channels, 2 x 16x24x16 voxels) folds
    top = (torch.zeros(2, 16, 16, 24, 16), torch.zeros(16, 16, 2, 2, 2), torch.zeros(16, 256, 3, 3, 3))
    assert upsample_folding_pays(*top)


def test_upsample_folded_without_a_same_size_part():
    """Only coarser parts: the output starts from the bias alone."""
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    up_w, up_b = torch.randn(2, 3, 2, 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    parts = [torch.randn(1, 2, 4, 4, dtype=torch.float64), torch.randn(1, 1, 2, 2, dtype=torch.float64)]
    weight, bias = torch.randn(4, 6, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    expected = upsampled_reference(x, up_w, up_b, parts, weight, bias)
    got = upsample_cross_level_conv(x, up_w, up_b, parts, weight, bias)
    assert torch.allclose(got, expected, atol=1e-10)
    with pytest.raises(ValueError, match="channels"):
        upsample_cross_level_conv(x, up_w, up_b, parts, weight[:, :5], bias)


def test_channel_mismatch_is_reported():
    target = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match="channels"):
        cross_level_conv(target, [torch.randn(1, 3, 4, 4)], torch.randn(4, 4, 3, 3), None)
