"""Attention U-Net (Oktay et al., MIDL 2018) for 1D, 2D and 3D: a U-Net with attention gates on the skips.

Each decoder level upsamples (nearest interpolation + ``conv -> norm -> act``, the seed's ``up_conv``), weights
the encoder map by an additive :class:`~.blocks.AttentionGate` gated by the upsampled map, concatenates and
applies a :class:`~.blocks.ConvBlock` -- the layout of the seed's ``AttU_Net``, for any number of dimensions.
"""

from collections.abc import Sequence

import torch.nn as nn

from .blocks import ConvBlock, GatedUNetSkeleton
from .registry import register_network

__all__ = ["AttentionUNet"]


@register_network("attentionunet", "attunet", "attention_unet")
class AttentionUNet(GatedUNetSkeleton):
    """Attention U-Net; ``(B, in_channels, *S) -> (B, out_channels, *S)`` for any ``S`` (zero-padded to a
    multiple of ``2 ** (len(features) - 1)`` and cropped back).

    Example::

        >>> net = AttentionUNet(spatial_dims=3, in_channels=1, out_channels=3, features=(4, 8, 16, 32))
        >>> net(torch.zeros(1, 1, 20, 17, 9)).shape
        torch.Size([1, 3, 20, 17, 9])
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        act: str | tuple = "relu",
        norm: str | tuple | None = "batch",
        bias: bool = True,
        dropout: float | tuple = 0.0,
        interp_mode: str = "nearest",
        align_corners: bool | None = None,
    ):
        """
        Args:
            spatial_dims: number of spatial dimensions (1, 2 or 3).
            in_channels: input channels.
            out_channels: output channels (classes).
            features: channels per level, shallowest first; ``len(features) - 1`` downsamplings.
            act: activation type and arguments.
            norm: normalisation type and arguments (None: none).
            bias: whether the 3x3 convolutions have a bias.
            dropout: dropout ratio in the conv blocks.
            interp_mode: interpolation of the upsampling (``"nearest"`` or ``"linear"``).
            align_corners: ``align_corners`` of linear interpolation.
        """

        def make_block(cin: int, cout: int) -> nn.Module:
            return ConvBlock(spatial_dims, cin, cout, act=act, norm=norm, bias=bias, dropout=dropout)

        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            list(features),
            make_block,
            attention=True,
            act=act,
            norm=norm,
            bias=bias,
            interp_mode=interp_mode,
            align_corners=align_corners,
        )
