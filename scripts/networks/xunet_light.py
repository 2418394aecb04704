"""Light XUNet: depthwise-separable fusion convolutions in the decoder, for far fewer parameters and FLOPs.

XUNet's decoder stage convolves a wide concatenation (the upsampled map plus all five encoder levels) with a
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
from typing import List

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv

from .blocks import SeparableConv, _dropout
from .cross_level_conv import conv_nd, size_ratio, strided_pick
from .registry import register_network
from .xunet import UpCatAll, XUNet

__all__ = ["UpCatAllLight", "XUNetLight"]


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
