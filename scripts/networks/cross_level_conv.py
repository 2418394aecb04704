"""Exact 'same' convolution over a channel concatenation of nearest-resized feature maps, without the resize.

XUNet's decoder convolves ``cat([up, resize(x0), ..., resize(x4)])`` where ``resize`` is
``F.interpolate(mode="nearest")`` to the size of ``up``. This module computes the same numbers cheaply:

* A convolution over a channel concatenation is the sum of the convolutions over each part with the matching
  slice of the weight, so the concatenated tensor never has to exist.
* A map **finer** than ``up`` by an integer factor ``s`` is nearest-downsampled by picking every ``s``-th
  sample (``x[..., ::s]``): it joins ``up`` in one ordinary convolution.
* A map **coarser** than ``up`` by an integer factor ``s`` is nearest-upsampled, so along each axis the
  3 taps of the kernel at an output position ``s * j + r`` only read low-resolution samples ``j - 1``,
  ``j`` and ``j + 1``, depending only on whether ``r`` is the first (``r = 0``), a middle, or the last
  (``r = s - 1``) position of its block. Summing the taps that read the same sample gives per-axis kernels
  of 2 taps (first: ``(w[0], w[1] + w[2])`` at offsets ``(-1, 0)``; last: ``(w[0] + w[1], w[2])`` at
  ``(0, +1)``; middle: ``w[0] + w[1] + w[2]``). All classes are stacked as output channels of **one**
  low-resolution convolution (kernel 2 per axis, padding 1), and the results are interleaved back to the
  high resolution. Zero padding at the high resolution is zero padding at the low resolution, so borders
  are exact too.

Parts whose size ratio to ``up`` is not an integer on every axis (or is up on one axis and down on another)
fall back to ``F.interpolate`` + ordinary convolution; the result is the same, only slower.

All functions are TorchScript-compatible and work for 1, 2 and 3 spatial dimensions.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

# How a part relates to the target size (strings, so TorchScript can use them too):
SAME = "same"
FINER = "finer"  # the part is finer than the target: nearest-downsample = strided pick
COARSER = "coarser"  # the part is coarser than the target: nearest-upsample, low-resolution class convolutions
OTHER = "other"  # non-integer or mixed ratio: interpolate, then ordinary convolution

# einsum equations turning a (out, in, 3, ..., 3) kernel into the per-class low-resolution kernels
# (classes..., out, in, taps...), one (classes, taps, 3) matrix per axis.
_CLASS_KERNEL_EQ = {
    1: "oia,xda->xoid",
    2: "oiab,xda,yeb->xyoide",
    3: "oiabc,xda,yeb,zfc->xyzoidef",
}


def class_kernel_equation(spatial_dims: int) -> str:
    """The einsum equation used by :func:`coarse_part_conv` for ``spatial_dims`` dimensions."""
    if spatial_dims not in _CLASS_KERNEL_EQ:
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
    return _CLASS_KERNEL_EQ[spatial_dims]


def conv_nd(x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: int) -> Tensor:
    """``F.conv{1,2,3}d`` chosen by the input's number of spatial dimensions (stride 1)."""
    dims = x.dim() - 2
    if dims == 1:
        return F.conv1d(x, weight, bias, 1, padding)
    if dims == 2:
        return F.conv2d(x, weight, bias, 1, padding)
    return F.conv3d(x, weight, bias, 1, padding)


def size_ratio(src: List[int], dst: List[int]) -> Tuple[str, List[int]]:
    """How a map of spatial size ``src`` relates to the target size ``dst`` under nearest resizing.

    Returns:
        ``(kind, factors)``: kind is "same", "finer" (``src = dst * s``), "coarser" (``dst = src * s``) or "other";
        factors are the per-axis integer factors ``s`` (1 where the axis already matches).
    """
    factors: List[int] = []
    finer = False
    coarser = False
    for a, b in zip(src, dst):
        if a == b:
            factors.append(1)
        elif a > b and a % b == 0:
            finer = True
            factors.append(a // b)
        elif b > a and b % a == 0:
            coarser = True
            factors.append(b // a)
        else:
            return "other", factors
    if finer and coarser:
        return "other", factors
    if finer:
        return "finer", factors
    if coarser:
        return "coarser", factors
    return "same", factors


def strided_pick(x: Tensor, factors: List[int]) -> Tensor:
    """Nearest downsampling by integer ``factors``: ``x[..., ::s0, ::s1, ...]`` (exactly what
    ``F.interpolate(mode="nearest")`` selects for an integer ratio)."""
    dims = x.dim() - 2
    if dims == 1:
        return x[:, :, :: factors[0]]
    if dims == 2:
        return x[:, :, :: factors[0], :: factors[1]]
    return x[:, :, :: factors[0], :: factors[1], :: factors[2]]


def _axis_classes(factor: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Per-axis (classes, taps, 3) matrix summing the 3 original taps into each position class's taps.

    The classes are ordered (last, first[, middle]), as in :func:`_class_layout`.
    """
    if factor == 1:
        return torch.eye(3, dtype=dtype, device=device).unsqueeze(0)  # one class, the 3 taps unchanged
    last = [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]  # position s-1 of a block reads samples j, j+1
    first = [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]  # position 0 reads samples j-1, j
    middle = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]  # positions 1..s-2 read sample j only (zero tap: one conv for all)
    rows = [last, first] if factor == 2 else [last, first, middle]
    return torch.tensor(rows, dtype=dtype, device=device)


def _class_layout(factor: int) -> List[List[int]]:
    """Per-axis ``[class, first position in the block, number of positions, low-resolution offset]`` rows,
    classes numbered as in :func:`_axis_classes`: the last class of block ``j`` is conv output ``j + 1``."""
    if factor == 1:
        return [[0, 0, 1, 0]]
    if factor == 2:
        return [[0, 1, 1, 1], [1, 0, 1, 0]]
    return [[0, factor - 1, 1, 1], [1, 0, 1, 0], [2, 1, factor - 2, 0]]


def _class_combinations(factors: List[int]) -> List[List[List[int]]]:
    """Every combination of per-axis class rows (row-major over the axes, as the flattened class index)."""
    empty: List[List[int]] = []
    combos: List[List[List[int]]] = [empty]
    for s in factors:
        extended: List[List[List[int]]] = []
        for combo in combos:
            for row in _class_layout(s):
                extended.append(combo + [row])
        combos = extended
    return combos


def _flat_class(combo: List[List[int]], n_classes: List[int]) -> int:
    index = 0
    for row, c in zip(combo, n_classes):
        index = index * c + row[0]
    return index


def interleave_add_(out: Tensor, classes: Tensor, factors: List[int]) -> Tensor:
    """Add the position classes of a coarse part into ``out`` in place, in one pass over ``out``.

    Args:
        out: ``(B, C_out, n_0 * s_0, ...)`` contiguous accumulator (modified in place and returned).
        classes: ``(B, K, C_out, L_0, ...)`` class outputs of :func:`coarse_part_conv`'s convolution, ``K`` the
            number of class combinations, ``L = n + 1`` on axes with ``s > 1``.
        factors: per-axis factors ``s``.
    """
    dims = len(factors)
    n_classes = [len(_class_layout(s)) for s in factors]
    low = [int(out.shape[2 + d]) // factors[d] for d in range(dims)]
    blocks = [int(out.shape[0]), int(out.shape[1])]
    for d in range(dims):
        blocks += [low[d], factors[d]]
    out_blocks = out.view(blocks)  # (B, C, n_0, s_0, n_1, s_1, ...)
    for combo in _class_combinations(factors):
        source = classes.select(1, _flat_class(combo, n_classes))
        target = out_blocks
        for d in range(dims):
            row = combo[d]
            source = source.narrow(2 + 2 * d, row[3], low[d]).unsqueeze(3 + 2 * d)
            target = target.narrow(3 + 2 * d, row[1], row[2])
        target.add_(source)  # broadcasts the middle class over its s - 2 positions
    return out


class _InterleaveAdd(torch.autograd.Function):
    """:func:`interleave_add_` with a one-pass backward (autograd's own would copy ``out`` once per class)."""

    @staticmethod
    def forward(ctx, out: Tensor, classes: Tensor, factors: List[int]) -> Tensor:
        ctx.mark_dirty(out)
        ctx.factors = factors
        ctx.classes_shape = classes.shape
        return interleave_add_(out, classes, factors)

    @staticmethod
    def backward(ctx, grad: Tensor):
        factors = ctx.factors
        dims = len(factors)
        n_classes = [len(_class_layout(s)) for s in factors]
        low = [int(grad.shape[2 + d]) // factors[d] for d in range(dims)]
        blocks = [int(grad.shape[0]), int(grad.shape[1])]
        for d in range(dims):
            blocks += [low[d], factors[d]]
        grad_blocks = grad.contiguous().view(blocks)
        grad_classes = grad.new_empty(ctx.classes_shape)
        for combo in _class_combinations(factors):
            target = grad_classes.select(1, _flat_class(combo, n_classes))
            source = grad_blocks
            for d in range(dims):
                row = combo[d]
                if factors[d] > 1:  # the one low-resolution plane this class does not reach gets no gradient
                    target.narrow(2 + d, low[d] if row[3] == 0 else 0, 1).zero_()
                target = target.narrow(2 + d, row[3], low[d])
                source = source.narrow(3 + 2 * d, row[1], row[2])
            # sum over the positions a class covers (the middle class covers s - 2 of each block)
            target.copy_(source.sum(dim=[3 + 2 * d for d in range(dims)]))
        return grad, grad_classes, None


@torch.jit.unused
def _interleave_add_autograd(out: Tensor, classes: Tensor, factors: List[int]) -> Tensor:
    return _InterleaveAdd.apply(out, classes, factors)


def coarse_part_conv(part: Tensor, weight: Tensor, factors: List[int], equation: str) -> Tensor:
    """The class outputs of ``conv(F.interpolate(part, scale_factor=factors, mode="nearest"), weight, padding=1)``
    at the low resolution; :func:`add_coarse_part_conv` places them at the high resolution.

    One convolution with kernel 2 and padding 1 evaluates every position class at every low-resolution offset
    ``o = 0 .. n`` (``n + 1`` outputs per axis): the first and middle classes of block ``j`` are its output
    ``o = j``, the last class is ``o = j + 1``.

    Args:
        part: ``(B, C_in, n_0, ..., n_{d-1})`` low-resolution map.
        weight: ``(C_out, C_in, 3, ..., 3)`` kernel.
        factors: per-axis integer upsampling factors (>= 1).
        equation: :func:`class_kernel_equation` for ``d`` dimensions.

    Returns:
        ``(B, K, C_out, L_0, ..., L_{d-1})``: ``K`` class combinations, ``L = n + 1`` on axes with ``s > 1``.
    """
    dims = part.dim() - 2
    axis_mats = [_axis_classes(s, weight.dtype, weight.device) for s in factors]
    class_kernels = torch.einsum(equation, [weight] + axis_mats)  # (classes..., C_out, C_in, taps...)
    total_classes = 1
    for m in axis_mats:
        total_classes *= int(m.shape[0])
    c_out = int(weight.shape[0])
    flat_shape = [total_classes * c_out, int(weight.shape[1])] + [int(k) for k in class_kernels.shape[dims + 2 :]]
    out = conv_nd(part, class_kernels.reshape(flat_shape), None, 1)
    return out.reshape([int(part.shape[0]), total_classes, c_out] + [int(v) for v in out.shape[2:]])


def add_coarse_part_conv(out: Tensor, part: Tensor, weight: Tensor, factors: List[int], equation: str) -> Tensor:
    """``out + conv(F.interpolate(part, scale_factor=factors, mode="nearest"), weight, padding=1)``, computed at
    the low resolution (:func:`coarse_part_conv`) and added into ``out`` in place in one pass.

    ``out`` must be a tensor this module owns (the output of the fused convolution), ``(B, C_out, *N)`` with
    ``N = n * s``.
    """
    classes = coarse_part_conv(part, weight, factors, equation)
    if torch.jit.is_scripting() or not (out.requires_grad or classes.requires_grad):
        return interleave_add_(out, classes, factors)
    return _interleave_add_autograd(out, classes, factors)


def cross_level_conv(
    target: Tensor, parts: List[Tensor], weight: Tensor, bias: Optional[Tensor], equation: str
) -> Tensor:
    """``conv(cat([target] + [F.interpolate(p, size=target.shape[2:], mode="nearest") for p in parts]),
    weight, bias, padding=1)`` computed without building the resized maps or the concatenation.

    Args:
        target: ``(B, C_t, N_0, ...)`` map that sets the output size; its channels come first in ``weight``.
        parts: maps of any spatial size, channels following ``target``'s in ``weight`` in list order.
        weight: ``(C_out, C_t + sum(C_p), 3, ..., 3)`` kernel of the fused convolution.
        bias: ``(C_out,)`` or None.
        equation: :func:`class_kernel_equation` for the number of spatial dimensions.

    Returns:
        ``(B, C_out, N_0, ...)``.
    """
    channels_in = int(target.shape[1])
    for part in parts:
        channels_in += int(part.shape[1])
    if channels_in != weight.shape[1]:
        raise ValueError(f"the inputs have {channels_in} channels in all but the weight expects {weight.shape[1]}.")
    size = [int(v) for v in target.shape[2:]]
    same_inputs = [target]
    same_weights = [weight.narrow(1, 0, target.shape[1])]
    coarse_inputs: List[Tensor] = []
    coarse_weights: List[Tensor] = []
    coarse_factors: List[List[int]] = []
    offset = int(target.shape[1])
    for part in parts:
        channels = int(part.shape[1])
        part_weight = weight.narrow(1, offset, channels)
        offset += channels
        kind, factors = size_ratio([int(v) for v in part.shape[2:]], size)
        if kind == "same":
            same_inputs.append(part)
            same_weights.append(part_weight)
        elif kind == "finer":
            same_inputs.append(strided_pick(part, factors))
            same_weights.append(part_weight)
        elif kind == "coarser":
            coarse_inputs.append(part)
            coarse_weights.append(part_weight)
            coarse_factors.append(factors)
        else:
            same_inputs.append(F.interpolate(part, size=size, mode="nearest"))
            same_weights.append(part_weight)
    if len(same_inputs) == 1:
        out = conv_nd(target, same_weights[0], bias, 1)
    else:
        out = conv_nd(torch.cat(same_inputs, 1), torch.cat(same_weights, 1), bias, 1)
    for part, part_weight, factors in zip(coarse_inputs, coarse_weights, coarse_factors):
        out = add_coarse_part_conv(out, part, part_weight, factors, equation)
    return out
