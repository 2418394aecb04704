"""ResUNet (deep residual U-Net; Zhang, Liu and Wang, IEEE GRSL 2018) for 1D, 2D and 3D.

A U-Net built from pre-activation residual units (:class:`~.blocks.PreActResidualUnit`,
``[norm -> act ->] conv -> norm -> act -> conv`` plus a ``conv(1) -> norm`` shortcut). Downsampling is by the
first convolution's stride 2 (no pooling); the deepest unit is the bridge. Each decoder level upsamples,
concatenates the encoder map of its level and applies a residual unit; a 1x1 convolution gives the logits.
"""

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

from .blocks import UPSAMPLE_MODES, EncoderDecoderNet, PreActResidualUnit, make_upsample
from .registry import register_network

__all__ = ["ResUNet", "ResUpStage"]


class ResUpStage(nn.Module):
    """Decoder level: ``unit(cat([skip, up(x)]))``; ``(B, in, *S), (B, skip, *(2 S)) -> (B, out, *(2 S))``."""

    def __init__(self, up: nn.Module, unit: nn.Module):
        super().__init__()
        self.up = up
        self.unit = unit

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.unit(torch.cat([skip, self.up(x)], dim=1))


@register_network("resunet", "res_unet", "deepresunet")
class ResUNet(EncoderDecoderNet):
    """ResUNet with ``len(features) - 1`` stride-2 downsamplings.

    Inputs of any size are zero-padded to a multiple of ``2 ** (len(features) - 1)`` and the output is cropped
    back: ``(B, in_channels, *S) -> (B, out_channels, *S)``.

    Example::

        >>> net = ResUNet(spatial_dims=2, in_channels=1, out_channels=3, features=(8, 16, 32, 64))
        >>> net(torch.zeros(2, 1, 21, 30)).shape
        torch.Size([2, 3, 21, 30])
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 128, 256, 512),
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        bias: bool = True,
        dropout: float | tuple = 0.0,
        upsample: str = "interp",
        interp_mode: str = "linear",
        align_corners: bool | None = True,
    ):
        """
        Args:
            spatial_dims: number of spatial dimensions (1, 2 or 3).
            in_channels: input channels.
            out_channels: output channels (classes).
            features: channels per level, shallowest first; the last level is the bridge.
            act: activation type and arguments.
            norm: normalisation type and arguments.
            bias: whether the convolutions have a bias.
            dropout: dropout ratio inside the residual units.
            upsample: ``"interp"`` (the paper's upsampling, channels kept; default), ``"deconv"`` or
                ``"interp_conv"`` (these two map level ``l+1``'s channels to level ``l``'s).
            interp_mode: interpolation of the interp modes (``"linear"`` = bi-/trilinear, ``"nearest"``).
            align_corners: ``align_corners`` of linear interpolation.
        """
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        fea = [int(f) for f in features]
        if len(fea) < 2:
            raise ValueError(f"features needs at least 2 levels, got {features}.")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got '{upsample}'.")
        self.spatial_dims = spatial_dims
        self.depth = len(fea) - 1
        self.multiple = 2**self.depth
        unit = dict(act=act, norm=norm, bias=bias, dropout=dropout)
        self.encoder = nn.ModuleList([PreActResidualUnit(spatial_dims, in_channels, fea[0], 1, first=True, **unit)])
        for level in range(1, self.depth + 1):
            self.encoder.append(PreActResidualUnit(spatial_dims, fea[level - 1], fea[level], 2, **unit))
        self.decoder = nn.ModuleList()
        for level in range(self.depth - 1, -1, -1):
            up_chns = fea[level + 1] if upsample == "interp" else fea[level]
            up = make_upsample(spatial_dims, fea[level + 1], up_chns, upsample, interp_mode, align_corners)
            self.decoder.append(
                ResUpStage(up, PreActResidualUnit(spatial_dims, fea[level] + up_chns, fea[level], 1, **unit))
            )
        self.head = Conv["conv", spatial_dims](fea[0], out_channels, kernel_size=1)
