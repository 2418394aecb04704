"""The two XUNet variants the XUNet README plans, both exact on the fast cross-level path.

* :class:`XUNetAttn` (``xunet_attn``): squeeze-and-excitation channel attention on each decoder stage's fused input.
* :class:`XUNetLight` (``xunet_light``): depthwise-separable fusion convolutions in the decoder, for far fewer
  parameters and FLOPs.

Attention fusion. XUNet's decoder stage (:class:`~.xunet.UpCatAll`) convolves the concatenation ``[up, x0', x1', x2', x3', x4']``
of the upsampled decoder map and all five encoder maps nearest-resized to its size. Here a channel attention
(:class:`~.blocks.ChannelAttention`, Hu et al. 2018) first re-weights those channels -- one weight per channel
and sample, from the channels' global means -- so each stage learns how much of every level (and of the decoder
path) to use, before the fusion convolution. This is the "attention / weighted fusion" plan of the XUNet README.

The fast path stays exact and never builds the resized maps: the mean of a nearest-upsampled map (integer
factor) is the mean of the map; a strided pick gives the mean of a nearest-downsampled one; and scaling channels
commutes with nearest resizing, so the weights are applied to the maps at their own resolution before
:func:`~.cross_level_conv.cross_level_conv`.

Light fusion. XUNet's decoder stage convolves a wide concatenation (the upsampled map plus all five encoder levels) with a
full 3x3(x3) kernel -- most of XUNet's parameters. :class:`UpCatAllLight` factorises it into a 1x1 **pointwise**
fusion of the concatenation followed by a 3x3(x3) **depthwise** convolution (``norm -> act``), and makes the
stage's second convolution a depthwise-separable one (:class:`~.blocks.SeparableConv`). This is the "lighter
modules (depthwise-separable convolutions)" plan of the XUNet README.

The pointwise step comes first on purpose: a 1x1 convolution commutes with nearest resizing, so the fast path
applies each level's slice of the pointwise weight at that level's own resolution (after a strided pick for the
finer levels) and only resizes ``out_chns``-channel results -- exact, and the wide concatenation is never built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv

from .blocks import ChannelAttention, SeparableConv, _dropout
from .cross_level_conv import conv_nd, cross_level_conv, size_ratio, strided_pick
from .registry import register_network
from .xunet import UpCatAll, XUNet

__all__ = ["UpCatAllLight", "UpCatAllSE", "XUNetAttn", "XUNetLight", "nearest_resized_mean"]


def nearest_resized_mean(x: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Per-channel mean ``(B, C)`` of ``F.interpolate(x, size=size, mode="nearest")``, computed without the
    upsampling when the size ratio is an integer."""
    kind, factors = size_ratio([int(v) for v in x.shape[2:]], size)
    if kind == "same" or kind == "coarser":  # same size, or each sample repeated equally often
        return x.flatten(2).mean(2)
    if kind == "finer":  # finer: nearest downsampling is a strided pick
        return strided_pick(x, factors).flatten(2).mean(2)
    return F.interpolate(x, size=size, mode="nearest").flatten(2).mean(2)


def _scale(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``x * weights`` with ``weights`` ``(B, C)`` broadcast over the spatial dimensions of ``x``."""
    shape = [int(weights.shape[0]), int(weights.shape[1])] + [1] * (x.dim() - 2)
    return x * weights.reshape(shape)


class UpCatAllSE(UpCatAll):
    """:class:`~.xunet.UpCatAll` with channel attention on the fused input.

    ``forward(x, skips)`` computes ``convs(a * c)`` with ``c = cat([upsample(x)] + [nearest_resize(s) for s in
    skips])`` and ``a = se(mean(c))`` per sample and channel. Same arguments as ``UpCatAll`` plus ``reduction``
    (the attention's hidden width is ``channels // reduction``, at least 4).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chns: int,
        skip_chns: Sequence[int],
        out_chns: int,
        *args,
        reduction: int = 16,
        **kwargs,
    ):
        super().__init__(spatial_dims, in_chns, skip_chns, out_chns, *args, **kwargs)
        self.se = ChannelAttention(int(self.convs.conv_0.conv.in_channels), reduction)

    def forward(self, x: torch.Tensor, skips: List[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_chns, *S)`` decoder input.
            skips: encoder maps ``(B, skip_chns[i], *S_i)`` of any spatial sizes.

        Returns:
            ``(B, out_chns, *(2 * S))``.
        """
        up = self.upsample(x)
        size = [int(v) for v in up.shape[2:]]
        if self.fast:
            pooled = [up.flatten(2).mean(2)] + [nearest_resized_mean(s, size) for s in skips]
            weights = self.se(torch.cat(pooled, dim=1))
            offset = int(up.shape[1])
            scaled_up = _scale(up, weights.narrow(1, 0, offset))
            scaled: List[torch.Tensor] = []
            for s in skips:
                channels = int(s.shape[1])
                scaled.append(_scale(s, weights.narrow(1, offset, channels)))
                offset += channels
            kernels: Optional[Dict[str, torch.Tensor]] = None
            if not torch.jit.is_scripting():
                kernels = self.kernel_store(scaled_up, scaled)
            first = self.convs.conv_0
            fused = cross_level_conv(scaled_up, scaled, first.conv.weight, first.conv.bias, kernels)
            return self.convs.conv_1(first.adn(fused))
        resized = [F.interpolate(s, size=size, mode="nearest") for s in skips]
        cat = torch.cat([up] + resized, dim=1)
        return self.convs(_scale(cat, self.se(cat.flatten(2).mean(2))))


@register_network("xunet_attn", "xunetattn", "xunet_se")
class XUNetAttn(XUNet):
    """XUNet whose four decoder stages are :class:`UpCatAllSE` (channel attention before the fusion conv).

    Same arguments and module names as :class:`~.xunet.XUNet`, plus ``reduction``; each stage adds an ``se``
    module, so an XUNet checkpoint loads with ``strict=False`` (only the ``se`` weights missing).
    ``(B, in_channels, *S) -> (B, out_channels, *S)`` for any ``S``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float | tuple = 0.0,
        upsample: str = "deconv",
        fast: bool = True,
        reduction: int = 16,
    ):
        """
        Args:
            spatial_dims, in_channels, out_channels, features, act, norm, bias, dropout, upsample, fast: as
                :class:`~.xunet.XUNet`.
            reduction: channel reduction of the attention's hidden layer.
        """
        self.reduction = reduction  # read by decoder_stage during XUNet.__init__
        super().__init__(spatial_dims, in_channels, out_channels, features, act, norm, bias, dropout, upsample, fast)

    def decoder_stage(self, spatial_dims, in_chns, skip_chns, out_chns, halves, options):
        return UpCatAllSE(
            spatial_dims, in_chns, skip_chns, out_chns, halves=halves, reduction=self.reduction, **options
        )


class UpCatAllLight(UpCatAll):
    """:class:`~.xunet.UpCatAll` with separable fusion convolutions.

    ``forward(x, skips)`` = ``conv_1(depthwise(pointwise(cat([upsample(x)] + [nearest_resize(s) for s in
    skips]))))`` where ``pointwise`` is a 1x1 convolution to ``out_chns``, ``depthwise`` a 3x3(x3) per-channel
    convolution with ``norm -> dropout -> act``, and ``conv_1`` a :class:`~.blocks.SeparableConv`. Same arguments
    as ``UpCatAll`` (the dense ``convs`` is never built).
    """

    def build_fusion(self, spatial_dims: int, in_chns: int, out_chns: int, act, norm, bias: bool, dropout) -> None:
        """Pointwise fusion, depthwise convolution and a separable second convolution instead of ``convs``."""
        self.pointwise = Conv["conv", spatial_dims](in_chns, out_chns, kernel_size=1, bias=bias)
        self.depthwise = Convolution(
            spatial_dims,
            out_chns,
            out_chns,
            kernel_size=3,
            groups=out_chns,
            act=act,
            norm=norm,
            bias=bias,
            dropout=_dropout(dropout),
        )
        self.conv_1 = SeparableConv(spatial_dims, out_chns, out_chns, act=act, norm=norm, bias=bias, dropout=dropout)

    def forward(self, x: torch.Tensor, skips: List[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_chns, *S)`` decoder input.
            skips: encoder maps ``(B, skip_chns[i], *S_i)`` of any spatial sizes.

        Returns:
            ``(B, out_chns, *(2 * S))``.
        """
        up = self.upsample(x)
        size = [int(v) for v in up.shape[2:]]
        if self.fast:
            weight = self.pointwise.weight
            offset = int(up.shape[1])
            fused = conv_nd(up, weight.narrow(1, 0, offset), self.pointwise.bias, 0)
            for s in skips:
                channels = int(s.shape[1])
                part_weight = weight.narrow(1, offset, channels)
                offset += channels
                kind, factors = size_ratio([int(v) for v in s.shape[2:]], size)
                if kind == "finer":  # finer: nearest downsampling is a strided pick
                    s = strided_pick(s, factors)
                    kind = "same"
                part = conv_nd(s, part_weight, None, 0)
                if kind != "same":  # coarser or irregular: resize the out_chns-channel result
                    part = F.interpolate(part, size=size, mode="nearest")
                fused = fused + part
        else:
            resized = [F.interpolate(s, size=size, mode="nearest") for s in skips]
            fused = self.pointwise(torch.cat([up] + resized, dim=1))
        return self.conv_1(self.depthwise(fused))


@register_network("xunet_light", "xunetlight", "light_xunet")
class XUNetLight(XUNet):
    """XUNet whose four decoder stages are :class:`UpCatAllLight`; the encoder is XUNet's.

    Same arguments as :class:`~.xunet.XUNet`. ``(B, in_channels, *S) -> (B, out_channels, *S)`` for any ``S``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float | tuple = 0.0,
        upsample: str = "deconv",
        fast: bool = True,
    ):
        """
        Args:
            spatial_dims, in_channels, out_channels, features, act, norm, bias, dropout, upsample, fast: as
                :class:`~.xunet.XUNet` (``fast`` here selects the exact low-resolution pointwise fusion).
        """
        super().__init__(spatial_dims, in_channels, out_channels, features, act, norm, bias, dropout, upsample, fast)

    def decoder_stage(self, spatial_dims, in_chns, skip_chns, out_chns, halves, options):
        return UpCatAllLight(spatial_dims, in_chns, skip_chns, out_chns, halves=halves, **options)
