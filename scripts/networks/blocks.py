"""Building blocks shared by the U-Net family (:mod:`scripts.networks`), for 1, 2 and 3 spatial dimensions.

Everything here is built from MONAI's layer factories (``Conv``, ``Pool``) and blocks (``Convolution``,
``UpSample``) so the same code serves 1D, 2D and 3D, and everything is TorchScript-compatible.

* :class:`ConvBlock` -- two ``conv -> norm -> dropout -> act`` units (the U-Net "double conv", the VGG block of
  UNet++), optional middle width and ``padding`` (1 = same, 0 = valid convolutions).
* :func:`make_upsample` -- 2x upsampling by transposed convolution, interpolation, or interpolation + 1x1 conv.
* :class:`UpConv` -- interpolation then ``conv -> norm -> act`` (the ``up_conv`` of Attention/R2U-Net).
* :class:`RecurrentConv` / :class:`RRCNNBlock` -- recurrent (residual) convolutions of R2U-Net.
* :class:`AttentionGate` -- additive attention gate on a skip connection (Attention U-Net).
* :class:`PreActResidualUnit` -- pre-activation residual unit (ResUNet).
* :class:`SeparableConv` -- depthwise-separable convolution.
* :class:`ChannelAttention` -- squeeze-and-excitation weights from pooled channel statistics.
* :class:`GatedUNetSkeleton` -- the encoder/decoder of Attention U-Net, R2U-Net and R2AttU-Net.
* :func:`center_crop`, :func:`center_pad` -- align a skip and a decoder map of different sizes.
* :func:`checkpoint_module` -- gradient checkpointing of one module call that also keeps norm running
  statistics right.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
from typing import Any, Iterator, List

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import ADN, Convolution, UpSample
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer
from torch.utils.checkpoint import checkpoint

from .xunet import crop_to as _crop_to
from .xunet import pad_to_multiple as _pad_to_multiple

__all__ = [
    "AttentionGate",
    "ChannelAttention",
    "ConvBlock",
    "GatedUNetSkeleton",
    "GatedUpStage",
    "NoGate",
    "PreActResidualUnit",
    "RRCNNBlock",
    "RecurrentConv",
    "SeparableConv",
    "UpConv",
    "center_crop",
    "center_pad",
    "checkpoint_module",
    "interpolation",
    "make_upsample",
    "UPSAMPLE_MODES",
]

UPSAMPLE_MODES = ("deconv", "interp", "interp_conv")


def _dropout(dropout: float | tuple | None) -> float | tuple | None:
    """MONAI's ``Convolution`` adds a Dropout layer for any non-None value; skip it for 0."""
    if dropout is None or (isinstance(dropout, (int, float)) and float(dropout) == 0.0):
        return None
    return dropout


def center_crop(x: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Crop the spatial dimensions of ``x`` (``(B, C, *S)``) to ``size``, centred; larger axes only.

    An odd difference puts the extra sample at the end (the start offset is ``(S - size) // 2``)."""
    for d in range(len(size)):
        cur = int(x.shape[2 + d])
        if cur > size[d]:
            x = x.narrow(2 + d, (cur - size[d]) // 2, size[d])
    return x


def center_pad(x: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Zero-pad the spatial dimensions of ``x`` to ``size``, centred; smaller axes only (the extra sample of
    an odd difference goes at the end, as in Pytorch-UNet)."""
    pads: List[int] = []
    for d in range(len(size) - 1, -1, -1):  # F.pad lists the last dimension first
        diff = max(size[d] - int(x.shape[2 + d]), 0)
        pads += [diff // 2, diff - diff // 2]
    if sum(pads) == 0:
        return x
    return F.pad(x, pads)


class ConvBlock(nn.Sequential):
    """Two ``conv(3) -> norm -> dropout -> act`` units: ``conv_0`` (in -> mid) and ``conv_1`` (mid -> out).

    Input ``(B, in_channels, *S)``; output ``(B, out_channels, *S)`` with ``padding=1`` (same convolutions) or
    ``(B, out_channels, *(S - 4))`` with ``padding=0`` (valid convolutions, as in Ronneberger et al. 2015).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        mid_channels: int | None = None,
        act: str | tuple | None = "relu",
        norm: str | tuple | None = "batch",
        bias: bool = True,
        dropout: float | tuple | None = 0.0,
        padding: int = 1,
    ):
        """
        Args:
            spatial_dims: number of spatial dimensions.
            in_channels: input channels.
            out_channels: output channels.
            mid_channels: channels between the two convolutions; defaults to ``out_channels``.
            act: activation type and arguments (None: none).
            norm: normalisation type and arguments (None: none).
            bias: whether the convolutions have a bias.
            dropout: dropout ratio after each normalisation (0: no dropout layer).
            padding: 1 for same convolutions, 0 for valid ones.
        """
        super().__init__()
        mid = out_channels if mid_channels is None else mid_channels
        common: dict[str, Any] = dict(kernel_size=3, act=act, norm=norm, dropout=_dropout(dropout), bias=bias)
        self.add_module("conv_0", Convolution(spatial_dims, in_channels, mid, padding=padding, **common))
        self.add_module("conv_1", Convolution(spatial_dims, mid, out_channels, padding=padding, **common))


def interpolation(spatial_dims: int, mode: str = "linear", align_corners: bool | None = True) -> nn.Upsample:
    """2x ``nn.Upsample``; ``"linear"`` becomes linear/bilinear/trilinear by ``spatial_dims`` and
    ``align_corners`` is dropped for the modes that do not take it (nearest, area)."""
    if mode in ("linear", "bilinear", "trilinear"):
        mode = ("linear", "bilinear", "trilinear")[spatial_dims - 1]
    if mode not in ("linear", "bilinear", "trilinear", "bicubic"):
        align_corners = None
    return nn.Upsample(scale_factor=2.0, mode=mode, align_corners=align_corners)


def make_upsample(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    mode: str = "deconv",
    interp_mode: str = "linear",
    align_corners: bool | None = True,
) -> nn.Module:
    """2x upsampling ``(B, in_channels, *S) -> (B, out_channels, *(2 S))``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: output channels; must equal ``in_channels`` for ``mode="interp"``.
        mode: ``"deconv"``: transposed convolution, kernel 2, stride 2 (with bias). ``"interp"``:
            interpolation only. ``"interp_conv"``: a 1x1 convolution then interpolation (the same as
            interpolating first: a 1x1 convolution commutes with nearest and linear interpolation).
        interp_mode: ``"nearest"`` or ``"linear"`` (bi-/trilinear by dimension), ... for the interp modes.
        align_corners: ``align_corners`` of linear interpolation.
    """
    if mode == "deconv":
        return UpSample(spatial_dims, in_channels, out_channels, 2, mode="deconv", bias=True)
    if mode == "interp":
        if in_channels != out_channels:
            raise ValueError(f"upsample='interp' keeps the channels, got {in_channels} -> {out_channels}.")
        return interpolation(spatial_dims, interp_mode, align_corners)
    if mode == "interp_conv":
        return nn.Sequential(
            Conv["conv", spatial_dims](in_channels, out_channels, kernel_size=1),
            interpolation(spatial_dims, interp_mode, align_corners),
        )
    raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got '{mode}'.")


class UpConv(nn.Sequential):
    """Interpolation (2x) then ``conv(3) -> norm -> act``: ``(B, in, *S) -> (B, out, *(2 S))``.

    The ``up_conv`` block of Attention U-Net and R2U-Net (nearest interpolation by default)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        act: str | tuple | None = "relu",
        norm: str | tuple | None = "batch",
        bias: bool = True,
        interp_mode: str = "nearest",
        align_corners: bool | None = None,
    ):
        super().__init__()
        self.add_module("up", interpolation(spatial_dims, interp_mode, align_corners))
        self.add_module(
            "conv", Convolution(spatial_dims, in_channels, out_channels, kernel_size=3, act=act, norm=norm, bias=bias)
        )


class RecurrentConv(nn.Module):
    """Recurrent convolutional layer (RCL) with one convolution shared by all time steps.

    Alom et al. 2018 (R2U-Net, eq. 1) follow Liang & Hu 2015: ``O(t) = w_f * x + w_r * h(t-1) + b``. With the
    feed-forward and recurrent kernels tied (``w_f = w_r = w``), this is one convolution of ``x + h(t-1)``::

        h(0) = f(conv(x))
        h(k) = f(conv(x + h(k-1))),  k = 1 .. steps

    where ``f`` is ``norm -> act``. ``steps = 2`` is the paper's ``t = 2``: one convolution followed by two
    recurrent convolutions, all with the **same** weights (parameter count independent of ``steps``).
    Input and output ``(B, channels, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        steps: int = 2,
        act: str | tuple | None = "relu",
        norm: str | tuple | None = "batch",
        bias: bool = True,
        dropout: float | tuple | None = 0.0,
    ):
        super().__init__()
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}.")
        self.steps = steps
        self.conv = Convolution(
            spatial_dims, channels, channels, kernel_size=3, act=act, norm=norm, bias=bias, dropout=_dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        for _ in range(self.steps):
            h = self.conv(x + h)
        return h


class RRCNNBlock(nn.Module):
    """Recurrent residual convolutional unit (R2U-Net, Alom et al. 2018, fig. 3d and eq. 3).

    ``x' = conv_1x1(x)`` matches the channels, then ``out = x' + RCL(RCL(x'))`` -- two stacked
    :class:`RecurrentConv` layers with a residual connection. ``(B, in, *S) -> (B, out, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        steps: int = 2,
        act: str | tuple | None = "relu",
        norm: str | tuple | None = "batch",
        bias: bool = True,
        dropout: float | tuple | None = 0.0,
    ):
        super().__init__()
        self.conv_1x1 = Conv["conv", spatial_dims](in_channels, out_channels, kernel_size=1)
        self.rcnn = nn.Sequential(
            RecurrentConv(spatial_dims, out_channels, steps, act, norm, bias, dropout),
            RecurrentConv(spatial_dims, out_channels, steps, act, norm, bias, dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_1x1(x)
        return x + self.rcnn(x)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, in the form of the common Attention U-Net code).

    ``alpha = sigmoid(norm(psi(act(W_g g + W_x x))))`` with 1x1 convolutions ``W_g``, ``W_x`` (each followed by
    the norm) and ``psi`` (to one channel); returns ``x * alpha``. ``g`` is the gating (decoder) map and ``x``
    the skip (encoder) map, both ``(B, *, *S)`` of the same spatial size.
    """

    def __init__(
        self,
        spatial_dims: int,
        gate_channels: int,
        skip_channels: int,
        inter_channels: int,
        act: str | tuple = "relu",
        norm: str | tuple | None = "batch",
    ):
        super().__init__()
        self.w_g = Convolution(spatial_dims, gate_channels, inter_channels, kernel_size=1, act=None, norm=norm)
        self.w_x = Convolution(spatial_dims, skip_channels, inter_channels, kernel_size=1, act=None, norm=norm)
        self.psi = Convolution(spatial_dims, inter_channels, 1, kernel_size=1, act="sigmoid", norm=norm)
        self.act = get_act_layer(act)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            g: ``(B, gate_channels, *S)`` gating signal.
            x: ``(B, skip_channels, *S)`` skip connection.

        Returns:
            ``(B, skip_channels, *S)``: ``x`` weighted by the attention coefficients.
        """
        return x * self.psi(self.act(self.w_g(g) + self.w_x(x)))


class NoGate(nn.Module):
    """Stand-in for :class:`AttentionGate` that returns the skip unchanged."""

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x


class PreActResidualUnit(nn.Module):
    """Pre-activation residual unit of ResUNet (Zhang et al. 2018, after He et al. 2016).

    ``body = [norm -> act ->] conv(3, stride) -> norm -> act -> conv(3)`` and
    ``shortcut = conv(1, stride) -> norm``; returns ``body(x) + shortcut(x)``. The first unit of the network
    (``first=True``) leaves out the leading ``norm -> act``, since it sees the raw input.
    ``(B, in, *S) -> (B, out, *ceil(S / stride))``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        bias: bool = True,
        dropout: float | tuple | None = 0.0,
        first: bool = False,
    ):
        super().__init__()
        conv = Conv["conv", spatial_dims]
        self.pre = nn.Identity() if first else _adn(spatial_dims, in_channels, act, norm, None)
        self.conv_0 = conv(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=bias)
        self.adn_0 = _adn(spatial_dims, out_channels, act, norm, _dropout(dropout))
        self.conv_1 = conv(out_channels, out_channels, kernel_size=3, padding=1, bias=bias)
        self.shortcut = Convolution(
            spatial_dims, in_channels, out_channels, strides=stride, kernel_size=1, act=None, norm=norm, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_1(self.adn_0(self.conv_0(self.pre(x)))) + self.shortcut(x)


def _adn(spatial_dims: int, channels: int, act: Any, norm: Any, dropout: Any) -> nn.Module:
    """``norm -> dropout -> act`` on ``channels`` (MONAI ``ADN``)."""
    return ADN(
        ordering="NDA",
        in_channels=channels,
        act=act,
        norm=norm,
        norm_dim=spatial_dims,
        dropout=dropout,
        dropout_dim=spatial_dims,
    )


class SeparableConv(nn.Sequential):
    """Depthwise-separable convolution: ``depthwise`` (kernel 3, one filter per channel, no bias) then
    ``pointwise`` (1x1 ``in -> out`` with ``norm -> dropout -> act``). ``(B, in, *S) -> (B, out, *S)``;
    ``9 in + in * out`` weights in 2D instead of ``9 in * out``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        act: str | tuple | None = "relu",
        norm: str | tuple | None = "batch",
        bias: bool = True,
        dropout: float | tuple | None = 0.0,
    ):
        super().__init__()
        self.add_module(
            "depthwise",
            Conv["conv", spatial_dims](
                in_channels, in_channels, kernel_size=3, padding=1, groups=in_channels, bias=False
            ),
        )
        self.add_module(
            "pointwise",
            Convolution(
                spatial_dims,
                in_channels,
                out_channels,
                kernel_size=1,
                act=act,
                norm=norm,
                bias=bias,
                dropout=_dropout(dropout),
            ),
        )


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel weights (Hu et al. 2018) from pooled channel statistics.

    ``forward(pooled)`` maps the per-channel means ``(B, C)`` to weights ``sigmoid(W_2 relu(W_1 pooled))``,
    ``(B, C)``, with ``W_1: C -> max(C // reduction, min_hidden)``. The caller does the pooling and scaling, so
    the statistics can come from maps that are never materialised (see :mod:`scripts.networks.xunet_variants`).
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 4):
        super().__init__()
        hidden = max(channels // reduction, min_hidden)
        self.fc_0 = nn.Linear(channels, hidden)
        self.act = nn.ReLU()
        self.fc_1 = nn.Linear(hidden, channels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc_1(self.act(self.fc_0(pooled))))


@contextmanager
def _restore_norm_stats(module: nn.Module) -> Iterator[None]:
    """Snapshot the running statistics of ``module``'s norm layers and put them back on exit."""
    saved = [
        (buf, buf.detach().clone())
        for m in module.modules()
        for name, buf in m.named_buffers(recurse=False)
        if name in ("running_mean", "running_var", "num_batches_tracked")
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def checkpoint_module(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """``module(*args)`` under non-reentrant gradient checkpointing (``torch.utils.checkpoint``).

    The activations inside ``module`` are not kept for backward; they are recomputed during the backward pass
    (with the forward's RNG state, so dropout matches). The recomputation would update batch-norm running
    statistics a second time; they are restored after it, so checkpointing changes neither the gradients
    nor the running statistics.
    """

    def contexts() -> tuple[Any, Any]:
        return contextlib.nullcontext(), _restore_norm_stats(module)

    return checkpoint(module, *args, use_reentrant=False, context_fn=contexts)


class GatedUpStage(nn.Module):
    """Decoder stage of Attention U-Net / R2U-Net: ``g = up(x)``, ``skip' = gate(g, skip)``,
    ``block(cat([skip', g]))``. ``(B, in, *S), (B, skip, *(2 S)) -> (B, out, *(2 S))``."""

    def __init__(self, up: nn.Module, gate: nn.Module, block: nn.Module):
        super().__init__()
        self.up = up
        self.gate = gate
        self.block = block

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        g = self.up(x)
        return self.block(torch.cat([self.gate(g, skip), g], dim=1))


class EncoderDecoderNet(nn.Module):
    """Forward pass shared by the U-Nets built from stage lists (Attention U-Net, R2U-Net, ResUNet).

    Subclasses set ``encoder`` (ModuleList, finest level first), ``decoder`` (ModuleList of stages called as
    ``stage(x, skip)``, deepest first), ``head``, ``depth`` (number of downsamplings) and ``multiple``
    (``2 ** depth``). Inputs of any size are zero-padded to ``multiple`` and the output is cropped back.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *S)`` -> ``(B, out_channels, *S)`` logits, any ``S``."""
        spatial_size = [int(s) for s in x.shape[2:]]
        x = _pad_to_multiple(x, self.multiple)
        skips: List[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        for i, stage in enumerate(self.decoder):
            x = stage(x, skips[self.depth - 1 - i])
        return _crop_to(self.head(x), spatial_size)


class GatedUNetSkeleton(EncoderDecoderNet):
    """The U-Net skeleton shared by Attention U-Net, R2U-Net and R2AttU-Net (1D/2D/3D).

    Encoder: ``make_block(in, f0)``, then per level ``maxpool(2) -> make_block(f_{l-1}, f_l)``. Decoder per level
    (deepest first): :class:`UpConv` ``f_{l+1} -> f_l``, an :class:`AttentionGate` (gating signal: the upsampled
    map, ``f_l // 2`` intermediate channels) or :class:`NoGate` on the skip, concatenation ``[skip, up]`` and
    ``make_block(2 f_l, f_l)``. Head: 1x1 convolution. Inputs of any size are zero-padded to a multiple of
    ``2 ** depth`` and the output is cropped back: ``(B, in, *S) -> (B, out, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: List[int],
        make_block: Any,
        attention: bool,
        act: str | tuple | None = "relu",
        norm: str | tuple | None = "batch",
        bias: bool = True,
        interp_mode: str = "nearest",
        align_corners: bool | None = None,
    ):
        """
        Args:
            spatial_dims: number of spatial dimensions (1, 2 or 3).
            in_channels: input channels.
            out_channels: output channels.
            features: channels per level, shallowest first (``len - 1`` downsamplings).
            make_block: ``make_block(in_channels, out_channels) -> nn.Module`` for the encoder and decoder blocks.
            attention: attention gates on the skips.
            act: activation of the upsampling convolutions and gates.
            norm: normalisation of the upsampling convolutions and gates.
            bias: bias of the upsampling convolutions.
            interp_mode: interpolation of the upsampling (``"nearest"`` as in the papers' code).
            align_corners: ``align_corners`` for linear interpolation.
        """
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        fea = [int(f) for f in features]
        if len(fea) < 2:
            raise ValueError(f"features needs at least 2 levels, got {features}.")
        self.spatial_dims = spatial_dims
        self.depth = len(fea) - 1
        self.multiple = 2**self.depth
        self.encoder = nn.ModuleList([make_block(in_channels, fea[0])])
        for level in range(1, self.depth + 1):
            self.encoder.append(
                nn.Sequential(Pool["max", spatial_dims](kernel_size=2), make_block(fea[level - 1], fea[level]))
            )
        self.decoder = nn.ModuleList()
        for level in range(self.depth - 1, -1, -1):
            up = UpConv(spatial_dims, fea[level + 1], fea[level], act, norm, bias, interp_mode, align_corners)
            gate: nn.Module = (
                AttentionGate(
                    spatial_dims, fea[level], fea[level], max(fea[level] // 2, 1), act=act or "relu", norm=norm
                )
                if attention
                else NoGate()
            )
            self.decoder.append(GatedUpStage(up, gate, make_block(2 * fea[level], fea[level])))
        self.head = Conv["conv", spatial_dims](fea[0], out_channels, kernel_size=1)
