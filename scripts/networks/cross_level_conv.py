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
  high resolution with one strided add per group of positions (1 for ``s = 2``, at most ``2 ** dims``
  otherwise). Zero padding at the high resolution is zero padding at the low resolution, so borders
  are exact too.
* The same summed taps, laid out per output position, form the kernel (``s + 2`` taps per axis) of **one**
  transposed convolution with stride ``s`` that writes the full-resolution result directly. For ``s <= 4``
  it does exactly as many multiply-adds as the class convolution and needs no interleaving pass, so it is
  used there for outputs up to :func:`deconv_max_output` elements (above that the class convolution is faster on
  the CPU); from ``s = 8`` on the class convolution does far fewer (:func:`prefers_deconv`).

* The decoder's ``up`` is itself a transposed convolution (kernel 2, stride 2) of the stage input ``x``, which
  has the resolution of the 2x-coarser encoder map. :func:`upsample_cross_level_conv` folds the upsampling kernel
  into the convolution's (:func:`folded_upsample_kernel`), so ``x`` and that encoder map go through **one**
  low-resolution transposed convolution (or 2-class convolution) and ``up`` is never computed; it is used where
  the saved multiply-adds outweigh composing the kernels (:func:`upsample_folding_pays`).

Parts whose size ratio to ``up`` is not an integer on every axis (or is up on one axis and down on another)
fall back to ``F.interpolate`` + ordinary convolution; the result is the same, only slower.

All functions are TorchScript-compatible and work for 1, 2 and 3 spatial dimensions.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

# How a part relates to the target size (strings, so TorchScript can use them too):
SAME = "same"
FINER = "finer"  # the part is finer than the target: nearest-downsample = strided pick
COARSER = "coarser"  # the part is coarser than the target: nearest-upsample, low-resolution class convolutions
OTHER = "other"  # non-integer or mixed ratio: interpolate, then ordinary convolution


def compose_taps(weight: Tensor, mats: List[Tensor], in_channels_first: bool = False) -> Tensor:
    """Apply one tap matrix per axis to a ``(C_out, C_in, 3, ..., 3)`` kernel: entry ``[k_0, k_1, ...]`` of the
    result is the sum over ``t`` of ``weight[..., t_0, t_1, ...] * prod_d mats[d][k_d, t_d]``.

    Computed as **one** matrix product with the matrices' Kronecker product: the same contraction as an einsum,
    which runs as several small batched products and copies, a cost paid at every training step.

    Args:
        weight: ``(C_out, C_in, 3, ..., 3)``.
        mats: per-axis ``(K_d, 3)`` matrices.
        in_channels_first: return ``(C_in, C_out, K_0, ...)`` (a transposed convolution's layout) instead of
            ``(C_out, C_in, K_0, ...)``.
    """
    kron = mats[0]
    for d in range(1, len(mats)):
        kron = torch.kron(kron, mats[d])
    c_out = int(weight.shape[0])
    c_in = int(weight.shape[1])
    taps = weight.transpose(0, 1) if in_channels_first else weight
    flat = torch.matmul(taps.reshape(c_out * c_in, int(kron.shape[1])), kron.t())
    shape = [c_in, c_out] if in_channels_first else [c_out, c_in]
    return flat.reshape(shape + [int(m.shape[0]) for m in mats])


def class_kernels(weight: Tensor, factors: List[int]) -> Tensor:
    """The ``(classes..., C_out, C_in, taps...)`` low-resolution class kernels (see :func:`_axis_classes`) of a
    ``(C_out, C_in, 3, ...)`` kernel, for a part nearest-upsampled by ``factors``.

    One batched matrix product over the class combinations writes them in this layout directly, so the class
    convolution's weight is a view of the result: no permuted copy (which, at the wide coarse levels, cost as much
    as the product itself).
    """
    dims = len(factors)
    per_axis = [_axis_classes(s, weight.dtype, weight.device) for s in factors]  # (classes_d, taps_d, 3)
    kron = per_axis[0].reshape(-1, 3)
    for d in range(1, dims):
        kron = torch.kron(kron, per_axis[d].reshape(-1, 3))
    # rows of kron run over (class_0, tap_0, class_1, tap_1, ...): regroup them as (classes, taps) (a small matrix)
    grouped: List[int] = []
    n_classes = 1
    n_taps = 1
    for m in per_axis:
        grouped += [int(m.shape[0]), int(m.shape[1])]
        n_classes *= int(m.shape[0])
        n_taps *= int(m.shape[1])
    order = [2 * d for d in range(dims)] + [2 * d + 1 for d in range(dims)] + [2 * dims]
    taps_of_class = kron.reshape(grouped + [int(kron.shape[1])]).permute(order).reshape(n_classes, n_taps, -1)
    c_out = int(weight.shape[0])
    c_in = int(weight.shape[1])
    flat = torch.matmul(weight.reshape(1, c_out * c_in, -1), taps_of_class.transpose(1, 2))  # (K, C_out*C_in, T)
    shape = [int(m.shape[0]) for m in per_axis] + [c_out, c_in] + [int(m.shape[1]) for m in per_axis]
    return flat.reshape(shape)


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

    The classes are ordered (first, last[, middle]): class ``k < 2`` of block ``j`` is the convolution's
    low-resolution output ``j + k``, which lets :func:`interleave_add_` place both with one strided view.
    """
    if factor == 1:
        return torch.eye(3, dtype=dtype, device=device).unsqueeze(0)  # one class, the 3 taps unchanged
    first = [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]  # position 0 of a block reads samples j-1, j
    last = [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]  # position s-1 reads samples j, j+1
    middle = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]  # positions 1..s-2 read sample j only (zero tap: one conv for all)
    rows = [first, last] if factor == 2 else [first, last, middle]
    return torch.tensor(rows, dtype=dtype, device=device)


def _num_classes(factor: int) -> int:
    return 1 if factor == 1 else (2 if factor == 2 else 3)


def _axis_groups(factor: int) -> List[List[int]]:
    """Per-axis groups of block positions that one strided view places at once.

    Each row is ``[first position, position step, number of positions, class, class step, offset step]``:
    position ``first + i * step`` of block ``j`` takes class ``class + i * class_step`` at low-resolution output
    ``j + i * offset_step``. The first and last positions (classes 0 and 1, outputs ``j`` and ``j + 1``) form
    one group; the middle positions all take class 2 at output ``j`` (a broadcast).
    """
    if factor == 1:
        return [[0, 1, 1, 0, 0, 0]]
    if factor == 2:
        return [[0, 1, 2, 0, 1, 1]]
    return [[0, factor - 1, 2, 0, 1, 1], [1, 1, factor - 2, 2, 0, 0]]


def _combinations(rows_per_axis: List[List[List[int]]]) -> List[List[List[int]]]:
    """Every combination of one row per axis (row-major over the axes)."""
    empty: List[List[int]] = []
    combos: List[List[List[int]]] = [empty]
    for rows in rows_per_axis:
        extended: List[List[List[int]]] = []
        for combo in combos:
            for row in rows:
                extended.append(combo + [row])
        combos = extended
    return combos


def _group_combinations(factors: List[int]) -> List[List[List[int]]]:
    """Every combination of per-axis groups (at most 2 ** dims)."""
    return _combinations([_axis_groups(s) for s in factors])


def _group_views(out: Tensor, classes: Tensor, factors: List[int], combo: List[List[int]]) -> Tuple[Tensor, Tensor]:
    """Strided views ``(target in out, source in classes)``, both ``(B, C, n_0, p_0, n_1, p_1, ...)`` with ``p_d``
    the group's number of positions on axis ``d``; ``out`` and ``classes`` must be contiguous."""
    dims = len(factors)
    n_classes = [_num_classes(s) for s in factors]
    low = [int(out.shape[2 + d]) // factors[d] for d in range(dims)]
    lengths = [int(classes.shape[3 + d]) for d in range(dims)]
    # contiguous strides of out (B, C, N_0, ...) and of classes (B, K_0 * K_1 * ..., C, L_0, ...)
    out_strides = [1] * (dims + 2)
    for d in range(dims + 1, 0, -1):
        out_strides[d - 1] = out_strides[d] * int(out.shape[d])
    low_strides = [1] * dims
    for d in range(dims - 1, 0, -1):
        low_strides[d - 1] = low_strides[d] * lengths[d]
    channel_stride = low_strides[0] * lengths[0]
    class_strides = [1] * dims
    class_strides[dims - 1] = channel_stride * int(classes.shape[2])
    for d in range(dims - 1, 0, -1):
        class_strides[d - 1] = class_strides[d] * n_classes[d]
    size = [int(out.shape[0]), int(out.shape[1])]
    target_strides = [out_strides[0], out_strides[1]]
    source_strides = [class_strides[0] * n_classes[0], channel_stride]
    target_offset = 0
    source_offset = 0
    for d in range(dims):
        row = combo[d]
        step = out_strides[2 + d]
        size += [low[d], row[2]]
        target_strides += [factors[d] * step, row[1] * step]
        target_offset += row[0] * step
        source_strides += [low_strides[d], row[4] * class_strides[d] + row[5] * low_strides[d]]
        source_offset += row[3] * class_strides[d]
    target = out.as_strided(size, target_strides, out.storage_offset() + target_offset)
    source = classes.as_strided(size, source_strides, classes.storage_offset() + source_offset)
    return target, source


def interleave_add_(out: Tensor, classes: Tensor, factors: List[int]) -> Tensor:
    """Add the position classes of a coarse part into ``out`` in place, in one pass over ``out``.

    One strided add per combination of per-axis position groups (:func:`_axis_groups`): one in all for
    factors of 2, at most ``2 ** dims`` otherwise. While a compiler or an exporter traces, one gather per axis
    instead (:func:`_interleave_add_by_gather`), which they translate into one graph.

    Args:
        out: ``(B, C_out, n_0 * s_0, ...)`` contiguous accumulator (modified in place and returned).
        classes: ``(B, K, C_out, L_0, ...)`` contiguous class outputs of :func:`coarse_part_conv`, ``K`` the
            number of class combinations, ``L = n + 1`` on axes with ``s > 1``.
        factors: per-axis factors ``s``.
    """
    if _exporting():
        return _interleave_add_by_gather(out, classes, factors)
    for combo in _group_combinations(factors):
        target, source = _group_views(out, classes, factors, combo)
        target.add_(source)
    return out


def _exporting() -> bool:
    """Whether a compiler or an exporter is tracing (torch.compile, torch.export, ONNX): none of them translates
    the in-place strided views of the eager interleave (they break a compiled graph in two)."""
    if torch.jit.is_scripting():
        return False
    return _tracing_for_export()


@torch.jit.unused
def _tracing_for_export() -> bool:
    return torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def _class_positions(factor: int, low: int, length: int, device: torch.device) -> Tensor:
    """Per-axis index, for each of the ``low * factor`` high-resolution positions, into the class convolution's
    flattened ``(class, low-resolution output)`` axis of length ``classes * length``: position ``s * j + r`` reads
    class 0 (first, ``r = 0``) at output ``j``, class 1 (last, ``r = s - 1``) at ``j + 1``, class 2 (middle) at
    ``j``; with ``s = 1`` position ``p`` reads output ``p``."""
    position = torch.arange(low * factor, device=device)
    if factor == 1:
        return position
    within = position % factor
    last = (within == factor - 1).long()
    cls = (within != 0).long() * (2 - last)  # 0 first, 1 last, 2 middle
    return cls * length + torch.div(position, factor, rounding_mode="floor") + last


def _interleave_add_by_gather(out: Tensor, classes: Tensor, factors: List[int]) -> Tensor:
    """:func:`interleave_add_` as one gather (``index_select``) per axis and one add: no in-place strided views,
    so compilers and exporters translate it, and its backward is a plain scatter-add."""
    dims = len(factors)
    n_classes = [_num_classes(s) for s in factors]
    lengths = [int(classes.shape[3 + d]) for d in range(dims)]
    batch = int(classes.shape[0])
    channels = int(classes.shape[2])
    grouped = classes.reshape([batch] + n_classes + [channels] + lengths)  # (B, K_0, ..., C, L_0, ...)
    order = [0, 1 + dims]  # to (B, C, K_0, L_0, K_1, L_1, ...): each axis's classes beside its outputs
    for d in range(dims):
        order += [1 + d, 2 + dims + d]
    gathered = grouped.permute(order).reshape([batch, channels] + [n_classes[d] * lengths[d] for d in range(dims)])
    for d in range(dims):
        low = int(out.shape[2 + d]) // factors[d]
        gathered = gathered.index_select(2 + d, _class_positions(factors[d], low, lengths[d], out.device))
    return out.add_(gathered)


class _InterleaveAdd(torch.autograd.Function):
    """:func:`interleave_add_` with a one-pass backward (autograd's own would copy ``out`` once per view)."""

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
        grad = grad.contiguous()
        # low-resolution outputs a class never reaches (output n of the first and middle classes, output 0
        # of the last) get no gradient
        grad_classes = grad.new_zeros(ctx.classes_shape)
        for combo in _group_combinations(factors):
            grad_view, class_view = _group_views(grad, grad_classes, factors, combo)
            # the middle group's positions all read one class value: their gradients sum
            summed = [3 + 2 * d for d in range(dims) if combo[d][4] == 0 and combo[d][2] > 1]
            if summed:
                for d in summed:
                    class_view = class_view.narrow(d, 0, 1)
                class_view.copy_(grad_view.sum(dim=summed, keepdim=True))
            else:
                class_view.copy_(grad_view)
        return grad, grad_classes, None


@torch.jit.unused
def _interleave_add_autograd(out: Tensor, classes: Tensor, factors: List[int]) -> Tensor:
    return _InterleaveAdd.apply(out, classes, factors)


def coarse_part_conv(part: Tensor, weight: Tensor, factors: List[int]) -> Tensor:
    """The class outputs of ``conv(F.interpolate(part, scale_factor=factors, mode="nearest"), weight, padding=1)``
    at the low resolution; :func:`add_coarse_part_conv` places them at the high resolution.

    One convolution with kernel 2 and padding 1 evaluates every position class at every low-resolution offset
    ``o = 0 .. n`` (``n + 1`` outputs per axis): the first and middle classes of block ``j`` are its output
    ``o = j``, the last class is ``o = j + 1``.

    Args:
        part: ``(B, C_in, n_0, ..., n_{d-1})`` low-resolution map.
        weight: ``(C_out, C_in, 3, ..., 3)`` kernel.
        factors: per-axis integer upsampling factors (>= 1).

    Returns:
        ``(B, K, C_out, L_0, ..., L_{d-1})``: ``K`` class combinations, ``L = n + 1`` on axes with ``s > 1``.
    """
    return _class_conv(part, class_kernels(weight, factors), len(factors))


def _class_conv(part: Tensor, class_kernels: Tensor, dims: int) -> Tensor:
    """One convolution (padding 1) of ``part`` with ``(classes..., C_out, C_in, taps...)`` kernels, returned as
    ``(B, K, C_out, L...)`` with ``K`` the product of the per-axis class counts."""
    total_classes = 1
    for d in range(dims):
        total_classes *= int(class_kernels.shape[d])
    c_out = int(class_kernels.shape[dims])
    flat_shape = [total_classes * c_out, int(class_kernels.shape[dims + 1])]
    flat_shape += [int(k) for k in class_kernels.shape[dims + 2 :]]
    out = conv_nd(part, class_kernels.reshape(flat_shape), None, 1).contiguous()
    return out.reshape([int(part.shape[0]), total_classes, c_out] + [int(v) for v in out.shape[2:]])


def _add_class_conv(out: Tensor, part: Tensor, class_kernels: Tensor, factors: List[int]) -> Tensor:
    """Add the class convolution of ``part`` (:func:`_class_conv`) into ``out`` in place, interleaved."""
    classes = _class_conv(part, class_kernels, len(factors))
    if not out.is_contiguous():
        out = out.contiguous()
    if torch.jit.is_scripting() or _exporting() or not (out.requires_grad or classes.requires_grad):
        return interleave_add_(out, classes, factors)  # traced (compile, export): the gather, differentiated as usual
    return _interleave_add_autograd(out, classes, factors)


def add_coarse_part_conv(out: Tensor, part: Tensor, weight: Tensor, factors: List[int]) -> Tensor:
    """``out + conv(F.interpolate(part, scale_factor=factors, mode="nearest"), weight, padding=1)``, computed at
    the low resolution (:func:`coarse_part_conv`) and added into ``out`` in place in one pass.

    ``out`` must be a tensor this module owns (the output of the fused convolution), ``(B, C_out, *N)`` with
    ``N = n * s``.
    """
    return _add_class_conv(out, part, class_kernels(weight, factors), factors)


def _deconv_axis_matrix(factor: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Per-axis ``(s + 2, 3)`` matrix summing the 3 original taps into the taps of the transposed convolution
    (stride ``s``, padding 1) that equals "nearest-upsample by ``s``, then convolve": deconvolution tap ``k``
    carries every original tap ``t`` with ``0 <= k + t - 2 <= s - 1``."""
    rows: List[List[float]] = []
    for k in range(factor + 2):
        row: List[float] = []
        for t in range(3):
            row.append(1.0 if 0 <= k + t - 2 and k + t - 2 <= factor - 1 else 0.0)
        rows.append(row)
    return torch.tensor(rows, dtype=dtype, device=device)


def coarse_part_deconv(part: Tensor, weight: Tensor, factors: List[int]) -> Tensor:
    """``conv(F.interpolate(part, scale_factor=factors, mode="nearest"), weight, padding=1)`` as **one**
    transposed convolution of the low-resolution ``part`` (stride ``factors``, kernel ``s + 2``, padding 1).

    It does the same multiply-adds as :func:`coarse_part_conv` for factors up to 4, but writes the full
    resolution directly, with no interleaving pass; for larger factors the class convolution is cheaper
    (see :func:`prefers_deconv`).

    Args:
        part: ``(B, C_in, n_0, ...)`` low-resolution map.
        weight: ``(C_out, C_in, 3, ..., 3)`` kernel.
        factors: per-axis integer upsampling factors (>= 1).

    Returns:
        ``(B, C_out, n_0 * s_0, ...)``.
    """
    return conv_transpose_nd(part, deconv_kernel(weight, factors), factors, 1)


def deconv_kernel(weight: Tensor, factors: List[int]) -> Tensor:
    """The ``(C_in, C_out, s_0 + 2, ...)`` kernel of :func:`coarse_part_deconv` for a ``(C_out, C_in, 3, ...)``
    kernel."""
    mats = [_deconv_axis_matrix(s, weight.dtype, weight.device) for s in factors]
    return compose_taps(weight, mats, in_channels_first=True)


def deconv_max_output() -> int:
    """Above this many output elements (2 ** 22), the class convolution plus strided interleave beats oneDNN's
    transposed convolution on the CPU even at equal multiply-adds (measured at 2D 256^2 x 4 and 3D 96^3); below
    it, the interleave's per-operation cost dominates and the single transposed convolution wins (the bundle's
    patches). A function, not a module constant, because TorchScript cannot read module globals."""
    return 4194304


def prefers_deconv(factors: List[int]) -> bool:
    """Whether :func:`coarse_part_deconv` does no more multiply-adds per output sample than
    :func:`coarse_part_conv`: ``prod((s + 2) / s)`` against ``prod(classes * taps / s)``. True for factors up to 4
    (equal counts, and no interleaving pass), false from 8 on, where the transposed convolution repeats the
    middle class's work at every middle position."""
    deconv = 1.0
    classes = 1.0
    for s in factors:
        deconv *= (s + 2) / s
        classes *= _num_classes(s) * (3 if s == 1 else 2) / s
    return deconv <= classes


def conv_transpose_nd(x: Tensor, kernel: Tensor, stride: List[int], padding: int) -> Tensor:
    """``F.conv_transpose{1,2,3}d`` chosen by the input's number of spatial dimensions (no bias)."""
    dims = x.dim() - 2
    if dims == 1:
        return F.conv_transpose1d(x, kernel, None, stride, padding)
    if dims == 2:
        return F.conv_transpose2d(x, kernel, None, stride, padding)
    return F.conv_transpose3d(x, kernel, None, stride, padding)


def _stored(kernels: Optional[Dict[str, Tensor]], key: str) -> Optional[Tensor]:
    """The kernel stored under ``key`` in ``kernels`` (None when there is no store or no such kernel)."""
    if kernels is None:
        return None
    if key in kernels:
        return kernels[key]
    return None


def _store(kernels: Optional[Dict[str, Tensor]], key: str, kernel: Tensor) -> Tensor:
    if kernels is not None:
        kernels[key] = kernel
    return kernel


def _cat_channels(tensors: List[Tensor]) -> Tensor:
    """``torch.cat(tensors, 1)`` without copying a single tensor."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, 1)


def _check_channels(leading: int, parts: List[Tensor], weight: Tensor) -> None:
    channels_in = leading
    for part in parts:
        channels_in += int(part.shape[1])
    if channels_in != weight.shape[1]:
        raise ValueError(f"the inputs have {channels_in} channels in all but the weight expects {weight.shape[1]}.")


def _sort_parts(
    parts: List[Tensor], weight: Tensor, offset: int, size: List[int], low_size: List[int]
) -> Tuple[List[Tensor], List[Tensor], List[Tensor], List[Tensor], List[Tensor], List[Tensor], List[List[int]]]:
    """Sort ``parts`` (their channels start at ``offset`` in ``weight``) by how they reach the output ``size``.

    Returns ``(same inputs, same weights, low inputs, low weights, coarse inputs, coarse weights, coarse
    factors)``: maps convolved at the output size (same-size maps, strided picks of finer ones, interpolations of
    non-integer ratios); maps of exactly ``low_size`` (pass ``[]`` for none), which
    :func:`upsample_cross_level_conv` convolves together with the stage input; and the other coarser maps.
    """
    same_inputs: List[Tensor] = []
    same_weights: List[Tensor] = []
    low_inputs: List[Tensor] = []
    low_weights: List[Tensor] = []
    coarse_inputs: List[Tensor] = []
    coarse_weights: List[Tensor] = []
    coarse_factors: List[List[int]] = []
    for part in parts:
        channels = int(part.shape[1])
        part_weight = weight.narrow(1, offset, channels)
        offset += channels
        part_size = [int(v) for v in part.shape[2:]]
        kind, factors = size_ratio(part_size, size)
        if part_size == low_size:
            low_inputs.append(part)
            low_weights.append(part_weight)
        elif kind == "same":
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
    return same_inputs, same_weights, low_inputs, low_weights, coarse_inputs, coarse_weights, coarse_factors


def _add_coarse_parts(
    out: Tensor,
    inputs: List[Tensor],
    weights: List[Tensor],
    factors_list: List[List[int]],
    kernels: Optional[Dict[str, Tensor]] = None,
) -> Tensor:
    """Add each coarser part's convolution into ``out``: one transposed convolution where :func:`prefers_deconv`
    and the output is small, the class convolution and interleave otherwise. Composed kernels are taken from
    and kept in ``kernels`` when given."""
    for i in range(len(inputs)):
        part = inputs[i]
        factors = factors_list[i]
        as_deconv = prefers_deconv(factors) and out.numel() <= deconv_max_output()
        key = "coarse" + str(i) + ("_deconv" if as_deconv else "_classes")
        kernel = _stored(kernels, key)
        if as_deconv:
            if kernel is None:
                kernel = _store(kernels, key, deconv_kernel(weights[i], factors))
            out = out.add_(conv_transpose_nd(part, kernel, factors, 1))  # in place: no new full-size tensor
        else:
            if kernel is None:
                kernel = _store(kernels, key, class_kernels(weights[i], factors))
            out = _add_class_conv(out, part, kernel, factors)
    return out


def cross_level_conv(
    target: Tensor,
    parts: List[Tensor],
    weight: Tensor,
    bias: Optional[Tensor],
    kernels: Optional[Dict[str, Tensor]] = None,
) -> Tensor:
    """``conv(cat([target] + [F.interpolate(p, size=target.shape[2:], mode="nearest") for p in parts]),
    weight, bias, padding=1)`` computed without building the resized maps or the concatenation.

    Args:
        target: ``(B, C_t, N_0, ...)`` map that sets the output size; its channels come first in ``weight``.
        parts: maps of any spatial size, channels following ``target``'s in ``weight`` in list order.
        weight: ``(C_out, C_t + sum(C_p), 3, ..., 3)`` kernel of the fused convolution.
        bias: ``(C_out,)`` or None.
        kernels: a store for the kernels composed from ``weight``, to reuse them while the weights and the input
            sizes stay the same (inference); None composes them at every call. The caller empties it whenever
            the weights or the spatial sizes of the inputs change (:class:`~scripts.networks.xunet.UpCatAll`
            does).

    Returns:
        ``(B, C_out, N_0, ...)``.
    """
    _check_channels(int(target.shape[1]), parts, weight)
    size = [int(v) for v in target.shape[2:]]
    empty: List[int] = []
    same_inputs, same_weights, _, _, coarse_inputs, coarse_weights, coarse_factors = _sort_parts(
        parts, weight, int(target.shape[1]), size, empty
    )
    same_inputs = [target] + same_inputs
    same_kernel = _stored(kernels, "same")
    if same_kernel is None:
        same_kernel = _store(kernels, "same", _cat_channels([weight.narrow(1, 0, target.shape[1])] + same_weights))
    out = conv_nd(_cat_channels(same_inputs), same_kernel, bias, 1)
    return _add_coarse_parts(out, coarse_inputs, coarse_weights, coarse_factors, kernels)


# --- folding the decoder's upsampling transposed convolution into the cross-level convolution ------------------
#
# A decoder stage convolves ``up = conv_transpose(x, W_up, b_up, stride=2)`` (kernel 2) together with the skips.
# Along each axis, output position ``p`` of the 3-tap convolution reads ``up`` at ``p + t - 1`` (taps
# ``t = 0, 1, 2``), and ``up`` at ``2 i + s`` is ``W_up[s] x[i]``; so the two together are **one** transposed
# convolution of ``x`` with stride 2, padding 1 and kernel 4, whose tap ``k`` sums ``W[t] W_up[s]`` over
# ``k = s - t + 2`` (and over the ``up`` channels): the full convolution of the two kernels
# (:func:`folded_upsample_kernel`). A nearest-upsampled part is the special case ``W_up = identity`` at both
# sub-positions. The same kernel, with its taps regrouped per output position (:func:`deconv_to_class_kernels`),
# is the 2-class low-resolution convolution of the interleaved form. ``up`` itself, and the full-resolution
# convolution over its channels, are never computed. ``b_up`` enters as a constant-one input channel, so the zero
# padding at the borders stays exact.


def folded_upsample_kernel(weight: Tensor, up_kernel: Tensor) -> Tensor:
    """``(C_x, C_out, 4, ...)`` kernel of the transposed convolution (stride 2, padding 1) equal to "transposed
    convolution with ``up_kernel`` (kernel 2, stride 2), then 'same' convolution with ``weight``".

    Computed as one small convolution with padding 2 (``up_kernel`` as a batch of ``C_x`` maps with ``C_up``
    channels, ``weight`` as ``C_out`` filters): output tap ``k`` sums ``up_kernel[s] * weight[t]`` over
    ``s - t + 2 = k``, contracted over the ``C_up`` channels, written in the transposed convolution's layout.

    Args:
        weight: ``(C_out, C_up, 3, ...)`` convolution kernel (the ``up`` channels' slice).
        up_kernel: ``(C_x, C_up, 2, ...)`` upsampling kernel.
    """
    dims = weight.dim() - 2
    if dims == 1:
        return F.conv1d(up_kernel, weight, None, 1, 2)
    if dims == 2:
        return F.conv2d(up_kernel, weight, None, 1, 2)
    return F.conv3d(up_kernel, weight, None, 1, 2)


def deconv_to_class_kernels(kernel: Tensor) -> Tensor:
    """Regroup a stride-2, kernel-4 transposed-convolution kernel ``(C_in, C_out, 4, ...)`` into the
    ``(2, ..., C_out, C_in, 2, ...)`` class kernels of :func:`_class_conv` (2 classes, 2 taps per axis).

    Per axis, the first position of a 2-block (class 0) reads blocks ``j - 1, j`` through taps 3 and 1; the last
    (class 1) reads blocks ``j, j + 1`` through taps 2 and 0.
    """
    dims = kernel.dim() - 2
    order = torch.tensor([3, 1, 2, 0], dtype=torch.long, device=kernel.device)
    shape = [int(kernel.shape[0]), int(kernel.shape[1])]
    for d in range(dims):
        kernel = kernel.index_select(2 + d, order)
        shape += [2, 2]
    grouped = kernel.reshape(shape)  # (C_in, C_out, class_0, tap_0, class_1, tap_1, ...)
    permutation = [2 + 2 * d for d in range(dims)] + [1, 0] + [3 + 2 * d for d in range(dims)]
    return grouped.permute(permutation)


def _with_bias_channel(up_weight: Tensor, up_bias: Optional[Tensor]) -> Tensor:
    """``(C_x [+ 1], C_up, 2, ...)``: the upsampling kernel, plus the bias as the kernel of a constant-one input."""
    if up_bias is None:
        return up_weight
    dims = up_weight.dim() - 2
    shape = [1, int(up_bias.shape[0])] + [1] * dims
    return torch.cat([up_weight, up_bias.reshape(shape).expand([1, int(up_bias.shape[0])] + [2] * dims)], 0)


def upsample_folding_pays(x: Tensor, up_weight: Tensor, weight: Tensor) -> bool:
    """Whether :func:`upsample_cross_level_conv` does fewer multiply-adds than upsampling first.

    Folding saves, per output position, the upsampling (``C_up * C_x``) and the full-resolution convolution over
    ``up`` (``C_out * C_up * 3^d``) and adds the low-resolution convolution over ``x`` and the bias channel
    (``C_out * (C_x + 1) * 2^d``); composing the kernels (:func:`folded_upsample_kernel`) costs
    ``C_out * C_up * (C_x + 1) * 8^d`` once per call.
    The composition only pays off once there are enough output positions, which the small, wide bottom stages of
    small inputs (such as the bundle's training patches) do not have.
    """
    dims = x.dim() - 2
    c_x = int(up_weight.shape[0])
    c_up = int(up_weight.shape[1])
    c_out = int(weight.shape[0])
    positions = int(x.shape[0])
    for v in x.shape[2:]:
        positions *= 2 * int(v)
    saved = positions * (c_out * c_up * 3**dims + c_up * c_x)
    added = positions * c_out * (c_x + 1) * 2**dims + c_out * c_up * (c_x + 1) * 8**dims
    return saved > added


def upsample_cross_level_conv(
    x: Tensor,
    up_weight: Tensor,
    up_bias: Optional[Tensor],
    parts: List[Tensor],
    weight: Tensor,
    bias: Optional[Tensor],
    kernels: Optional[Dict[str, Tensor]] = None,
) -> Tensor:
    """``cross_level_conv(conv_transpose(x, up_weight, up_bias, stride=2), parts, weight, bias)`` without computing
    the upsampled map: the upsampling kernel is folded into the convolution's kernel (see the note above), and
    the parts exactly half the output's size on every axis (nearest-upsampled by 2) join ``x`` in the same
    low-resolution convolution.

    Args:
        x: ``(B, C_x, n_0, ...)`` decoder input, upsampled by 2 to the output size ``2 n``.
        up_weight: ``(C_x, C_up, 2, ..., 2)`` kernel of the upsampling transposed convolution (stride 2).
        up_bias: ``(C_up,)`` or None.
        parts: maps of any spatial size, channels following the ``C_up`` upsampled ones in ``weight``.
        weight: ``(C_out, C_up + sum(C_p), 3, ..., 3)`` kernel of the fused convolution.
        bias: ``(C_out,)`` or None.
        kernels: a store for the composed kernels, as in :func:`cross_level_conv`.

    Returns:
        ``(B, C_out, 2 n_0, ...)``.
    """
    dims = x.dim() - 2
    c_up = int(up_weight.shape[1])
    _check_channels(c_up, parts, weight)
    low = [int(v) for v in x.shape[2:]]
    size = [2 * v for v in low]
    same_inputs, same_weights, low_parts, low_weights, coarse_inputs, coarse_weights, coarse_factors = _sort_parts(
        parts, weight, c_up, size, low
    )
    low_inputs = [x]
    if up_bias is not None:
        low_inputs.append(torch.ones([int(x.shape[0]), 1] + low, dtype=x.dtype, device=x.device))
    low_inputs += low_parts
    if len(same_inputs) > 0:
        same_kernel = _stored(kernels, "same")
        if same_kernel is None:
            same_kernel = _store(kernels, "same", _cat_channels(same_weights))
        out = conv_nd(_cat_channels(same_inputs), same_kernel, bias, 1)
    else:
        out = torch.zeros([int(x.shape[0]), int(weight.shape[0])] + size, dtype=x.dtype, device=x.device)
        if bias is not None:
            out = out + bias.reshape([1, int(bias.shape[0])] + [1] * dims)
    low_input = _cat_channels(low_inputs)
    twos = [2] * dims
    as_deconv = out.numel() <= deconv_max_output()
    low_key = "low_deconv" if as_deconv else "low_classes"  # the batch size decides, so both may be stored
    low_kernel = _stored(kernels, low_key)
    if low_kernel is None:
        # one (C_x [+ 1] + parts, C_out, 4, ...) transposed-convolution kernel for everything at x's resolution
        low_kernels = [folded_upsample_kernel(weight.narrow(1, 0, c_up), _with_bias_channel(up_weight, up_bias))]
        if len(low_weights) > 0:  # the nearest parts' kernels, composed in one product
            nearest_mats = [_deconv_axis_matrix(2, weight.dtype, weight.device) for _ in range(dims)]
            low_kernels.append(compose_taps(_cat_channels(low_weights), nearest_mats, in_channels_first=True))
        low_kernel = torch.cat(low_kernels, 0) if len(low_kernels) > 1 else low_kernels[0]
        if not as_deconv:
            low_kernel = deconv_to_class_kernels(low_kernel)
        low_kernel = _store(kernels, low_key, low_kernel)
    if as_deconv:  # one transposed convolution writes the full resolution directly
        out = out.add_(conv_transpose_nd(low_input, low_kernel, twos, 1))
    else:  # 2 ** dims position classes at the low resolution, interleaved into ``out`` in one pass
        out = _add_class_conv(out, low_input, low_kernel, twos)
    return _add_coarse_parts(out, coarse_inputs, coarse_weights, coarse_factors, kernels)
