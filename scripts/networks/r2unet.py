"""R2U-Net (Alom et al., 2018: recurrent residual convolutional U-Net) and R2AttU-Net (R2U-Net with the attention
gates of Attention U-Net on its skips), for 1D, 2D and 3D.

Every conv block of the U-Net is a :class:`~.blocks.RRCNNBlock`: a 1x1 convolution matching the channels, then
two recurrent convolutional layers (:class:`~.blocks.RecurrentConv`) with a residual connection. The recurrent
layer applies **one** convolution (with its norm and activation) ``steps + 1`` times,
``h(0) = f(conv(x))``, ``h(k) = f(conv(x + h(k-1)))`` -- the paper's tied feed-forward/recurrent weights, ``t =
steps``. Upsampling as in the seed's code: nearest interpolation + ``conv -> norm -> act``.
"""

from collections.abc import Sequence

import torch.nn as nn

from .blocks import GatedUNetSkeleton, RRCNNBlock
from .registry import register_network

__all__ = ["R2AttUNet", "R2UNet"]


@register_network("r2unet", "r2u_net")
class R2UNet(GatedUNetSkeleton):
    """R2U-Net; ``(B, in_channels, *S) -> (B, out_channels, *S)`` for any ``S`` (zero-padded to a multiple of
    ``2 ** (len(features) - 1)`` and cropped back).

    Example::

        >>> net = R2UNet(spatial_dims=2, in_channels=1, out_channels=3, features=(8, 16, 32), steps=2)
        >>> net(torch.zeros(2, 1, 30, 31)).shape
        torch.Size([2, 3, 30, 31])
    """

    attention = False

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        steps: int = 2,
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
            steps: recurrent steps ``t`` of each recurrent convolutional layer (the paper uses 2); the number
                of parameters does not depend on it.
            act: activation type and arguments.
            norm: normalisation type and arguments (None: none).
            bias: whether the 3x3 convolutions have a bias.
            dropout: dropout ratio in the recurrent convolutions.
            interp_mode: interpolation of the upsampling (``"nearest"`` or ``"linear"``).
            align_corners: ``align_corners`` of linear interpolation.
        """

        def make_block(cin: int, cout: int) -> nn.Module:
            return RRCNNBlock(spatial_dims, cin, cout, steps=steps, act=act, norm=norm, bias=bias, dropout=dropout)

        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            list(features),
            make_block,
            attention=self.attention,
            act=act,
            norm=norm,
            bias=bias,
            interp_mode=interp_mode,
            align_corners=align_corners,
        )
        self.steps = steps


@register_network("r2attunet", "r2attu_net", "r2_att_unet")
class R2AttUNet(R2UNet):
    """R2U-Net whose skips pass through :class:`~.blocks.AttentionGate` (gated by the upsampled decoder map) before
    the concatenation. Same arguments as :class:`~.r2unet.R2UNet`;
    ``(B, in_channels, *S) -> (B, out_channels, *S)`` for any ``S``.

    Example::

        >>> net = R2AttUNet(spatial_dims=1, in_channels=2, out_channels=3, features=(8, 16, 32))
        >>> net(torch.zeros(2, 2, 37)).shape
        torch.Size([2, 3, 37])
    """

    attention = True
