"""R2AttU-Net: R2U-Net (:mod:`.r2unet`) with the attention gates of Attention U-Net (:mod:`.attention_unet`) on
its skip connections, for 1D, 2D and 3D."""

from .r2unet import R2UNet
from .registry import register_network

__all__ = ["R2AttUNet"]


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
