"""U-Net (Ronneberger, Fischer and Brox, MICCAI 2015) for 1D, 2D and 3D, with the variants of the seeds.

* Skip alignment (``skip_mode``): ``"same"`` -- same-padded convolutions on an input zero-padded to a multiple
  of ``2 ** depth`` (output cropped back: any input size, output size = input size; the default);
  ``"crop"`` -- the paper's valid (unpadded) convolutions with the encoder maps centre-cropped to the decoder
  maps (the output is smaller than the input); ``"pad"`` -- the decoder map is zero-padded to the encoder
  map's size (Pytorch-UNet's way of handling odd sizes; with ``conv_padding="valid"`` the seed's variant).
* Upsampling (``upsample``): ``"deconv"`` (2x2 transposed convolution halving the channels), ``"interp"``
  (bi-/trilinear interpolation, channels kept) or ``"interp_conv"`` (interpolation + 1x1 convolution).
  ``halve_channels=True`` with ``"interp"`` is Pytorch-UNet's bilinear layout (its ``factor = 2``).
* Optional normalisation (batch norm by default, ``norm=None`` for the original network).
* Gradient checkpointing (``checkpointing=True`` or :meth:`UNet.use_checkpointing`): each encoder and decoder
  stage runs under :func:`torch.utils.checkpoint.checkpoint`, so only the stage outputs are kept for
  backward. (Pytorch-UNet's ``use_checkpointing`` assigns ``torch.utils.checkpoint`` -- a module, not a
  wrapper -- to the layers and breaks the network; here the stage *calls* are checkpointed.)

Parameter counts reproduced (2D; tested in ``tests/networks/test_unet.py``):

* seed 002, 3 -> 10 classes, features 64..1024, ``norm=None``, ``upsample="deconv"``: 31,032,330.
* Pytorch-UNet (seed 003), 3 -> 2 classes, ``norm="batch", bias=False``: 31,037,698 with ``upsample="deconv"``,
  17,263,042 with ``upsample="interp", halve_channels=True``.
"""

from collections.abc import Sequence
from typing import List, Optional

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Pool

from .blocks import UPSAMPLE_MODES, ConvBlock, center_crop, center_pad, checkpoint_module, make_upsample
from .registry import register_network
from .xunet import crop_to, pad_to_multiple

__all__ = ["UNet", "UNetUpStage"]

SKIP_MODES = ("same", "crop", "pad")


class UNetUpStage(nn.Module):
    """Decoder stage: upsample, align with the skip, concatenate ``[skip, up]``, :class:`ConvBlock`.

    ``forward(x, skip)``: ``x`` ``(B, in, *S)``, ``skip`` ``(B, skip, *S_skip)`` -> ``(B, out, *S_out)`` where
    ``S_out`` is ``2 S`` (``align="none"``), ``min(2 S, S_skip)`` (``"crop"``: the skip is centre-cropped) or
    ``S_skip`` (``"pad"``: the upsampled map is zero-padded, centred), less 4 for valid convolutions.
    """

    def __init__(self, up: nn.Module, block: nn.Module, align: str = "none"):
        super().__init__()
        if align not in ("none", "crop", "pad"):
            raise ValueError(f"align must be 'none', 'crop' or 'pad', got '{align}'.")
        self.up = up
        self.block = block
        self.align = align

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if self.align == "crop":
            skip = center_crop(skip, [int(s) for s in x.shape[2:]])
            x = center_crop(x, [int(s) for s in skip.shape[2:]])
        elif self.align == "pad":
            x = center_pad(x, [int(s) for s in skip.shape[2:]])
            x = center_crop(x, [int(s) for s in skip.shape[2:]])
        return self.block(torch.cat([skip, x], dim=1))


@register_network("unet")
class UNet(nn.Module):
    """U-Net with ``len(features) - 1`` 2x downsamplings, for 1D, 2D and 3D.

    Encoder: ``ConvBlock(in, f0)``, then per level ``maxpool(2) -> ConvBlock(f_{l-1}, f_l)``. Decoder per level
    (deepest first): upsample, concatenate with the encoder map of the same level, ``ConvBlock``. Head: 1x1
    convolution to ``out_channels``.

    With the default ``skip_mode="same"`` the output has the input's spatial size for any input size. With
    ``skip_mode="crop"`` (valid convolutions) the output is smaller; :meth:`output_size` and
    :meth:`valid_input_sizes` give the sizes, and other sizes raise a ValueError naming the nearest valid ones.

    Example::

        >>> net = UNet(spatial_dims=2, in_channels=1, out_channels=3, features=(8, 16, 32, 64, 128))
        >>> net(torch.zeros(2, 1, 33, 47)).shape
        torch.Size([2, 3, 33, 47])
        >>> valid = UNet(spatial_dims=2, in_channels=1, out_channels=2, skip_mode="crop")
        >>> valid.output_size(572)
        388
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        act: str | tuple | None = "relu",
        norm: str | tuple | None = "batch",
        bias: bool = True,
        dropout: float | tuple = 0.0,
        upsample: str = "deconv",
        interp_mode: str = "linear",
        align_corners: bool | None = True,
        halve_channels: bool = False,
        skip_mode: str = "same",
        conv_padding: str | None = None,
        checkpointing: bool = False,
    ):
        """
        Args:
            spatial_dims: number of spatial dimensions (1, 2 or 3).
            in_channels: input channels.
            out_channels: output channels (classes).
            features: channels of each level, shallowest first; ``len(features) - 1`` downsamplings (>= 1).
            act: activation type and arguments.
            norm: normalisation type and arguments; ``None`` for none (the 2015 network), ``"batch"`` default.
            bias: whether the 3x3 convolutions have a bias (the upsampling and head convolutions always do).
            dropout: dropout ratio in the conv blocks.
            upsample: ``"deconv"``, ``"interp"`` or ``"interp_conv"`` (see :func:`~.blocks.make_upsample`).
            interp_mode: interpolation of the interp modes (``"linear"`` = bi-/trilinear, ``"nearest"``).
            align_corners: ``align_corners`` of linear interpolation.
            halve_channels: with ``upsample="interp"``, Pytorch-UNet's bilinear layout: the bottleneck has
                ``features[-1] // 2`` channels and decoder level ``l`` has ``features[l+1] // 2`` middle and
                ``features[l] // 2`` output channels (``features[0]`` at the last level). Without it the
                interpolated map keeps its channels and each decoder level outputs ``features[l]``.
            skip_mode: ``"same"``, ``"crop"`` or ``"pad"`` (see the module docstring).
            conv_padding: ``"same"`` or ``"valid"`` 3x3 convolutions; defaults to ``"valid"`` for
                ``skip_mode="crop"`` and ``"same"`` otherwise (``"same"`` mode needs ``"same"``).
            checkpointing: run every stage under gradient checkpointing while training.
        """
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        fea = [int(f) for f in features]
        if len(fea) < 2:
            raise ValueError(f"features needs at least 2 levels, got {features}.")
        if skip_mode not in SKIP_MODES:
            raise ValueError(f"skip_mode must be one of {SKIP_MODES}, got '{skip_mode}'.")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got '{upsample}'.")
        if conv_padding is None:
            conv_padding = "valid" if skip_mode == "crop" else "same"
        if conv_padding not in ("same", "valid"):
            raise ValueError(f"conv_padding must be 'same' or 'valid', got '{conv_padding}'.")
        if skip_mode == "same" and conv_padding == "valid":
            raise ValueError("skip_mode='same' needs same-padded convolutions; use skip_mode='crop' or 'pad'.")
        if halve_channels and upsample != "interp":
            raise ValueError("halve_channels (Pytorch-UNet's bilinear layout) applies to upsample='interp' only.")

        self.spatial_dims = spatial_dims
        self.depth = len(fea) - 1
        self.multiple = 2**self.depth  # the 'same' mode pads the input to a multiple of this
        self.skip_mode = skip_mode
        self.conv_padding = conv_padding
        self.checkpointing = checkpointing
        padding = 1 if conv_padding == "same" else 0
        block = dict(act=act, norm=norm, bias=bias, dropout=dropout, padding=padding)

        bottleneck = fea[-1] // 2 if halve_channels else fea[-1]
        enc_out = fea[:-1] + [bottleneck]
        self.encoder = nn.ModuleList([ConvBlock(spatial_dims, in_channels, enc_out[0], **block)])
        for level in range(1, self.depth + 1):
            self.encoder.append(
                nn.Sequential(
                    Pool["max", spatial_dims](kernel_size=2),
                    ConvBlock(spatial_dims, enc_out[level - 1], enc_out[level], **block),
                )
            )

        align = "none" if skip_mode == "same" else skip_mode
        self.decoder = nn.ModuleList()
        prev = bottleneck
        for level in range(self.depth - 1, -1, -1):
            if upsample == "interp":
                up_chns = prev
                if halve_channels:
                    mid, out = fea[level + 1] // 2, (fea[level] // 2 if level > 0 else fea[0])
                else:
                    mid, out = fea[level], fea[level]
            else:
                up_chns, mid, out = fea[level], fea[level], fea[level]
            up = make_upsample(spatial_dims, prev, up_chns, upsample, interp_mode, align_corners)
            conv = ConvBlock(spatial_dims, fea[level] + up_chns, out, mid_channels=mid, **block)
            self.decoder.append(UNetUpStage(up, conv, align))
            prev = out
        self.head = Conv["conv", spatial_dims](prev, out_channels, kernel_size=1)

    # ----------------------------------------------------------------------------------------------------------
    def use_checkpointing(self, enabled: bool = True) -> "UNet":
        """Turn gradient checkpointing of the stages on (or off); returns the network."""
        self.checkpointing = enabled
        return self

    def output_size(self, size: int) -> Optional[int]:
        """Output size along one axis for an input of ``size`` samples, or None if ``size`` is not valid
        (too small, or -- valid convolutions with centre crop -- a max-pooling of an odd size)."""
        if self.skip_mode == "same":
            return size
        shrink = 4 if self.conv_padding == "valid" else 0
        strict = self.skip_mode == "crop" and shrink > 0
        s = size - shrink
        enc = [s]
        for _ in range(self.depth):
            if s < 2 or (strict and s % 2):
                return None
            s = s // 2 - shrink
            enc.append(s)
        if s < 1:
            return None
        for level in range(self.depth - 1, -1, -1):
            s = 2 * s
            s = min(s, enc[level]) if self.skip_mode == "crop" else enc[level]
            s -= shrink
            if s < 1:
                return None
        return s

    def valid_input_sizes(self, low: int = 1, high: int = 1024) -> List[int]:
        """The input sizes in ``[low, high]`` that :meth:`output_size` accepts."""
        return [n for n in range(low, high + 1) if self.output_size(n) is not None]

    @torch.jit.unused
    def _check_input_size(self, size: List[int]) -> None:
        for axis, n in enumerate(size):
            if self.output_size(n) is None:
                below = self.valid_input_sizes(max(1, n - 256), n)
                above = self.valid_input_sizes(n, n + 256)
                near = ([below[-1]] if below else []) + ([above[0]] if above else [])
                raise ValueError(
                    f"UNet(skip_mode='{self.skip_mode}', conv_padding='{self.conv_padding}') cannot take "
                    f"{n} samples on spatial axis {axis} (input {size}): every max-pooling needs an even size "
                    f"and the deepest level at least one sample. Nearest valid sizes: {near} "
                    f"(outputs {[self.output_size(v) for v in near]}); see UNet.valid_input_sizes()."
                )

    @torch.jit.unused
    def _checkpointed_encoder(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return checkpoint_module(self.encoder[index], x)

    @torch.jit.unused
    def _checkpointed_decoder(self, index: int, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return checkpoint_module(self.decoder[index], x, skip)

    def _use_checkpointing(self) -> bool:
        if torch.jit.is_scripting():
            return False
        return self.checkpointing and self.training and torch.is_grad_enabled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, *S)``.

        Returns:
            ``(B, out_channels, *S)`` logits (``skip_mode="same"``/``"pad"`` with same convolutions), or
            ``(B, out_channels, *output_size(S))`` with valid convolutions.
        """
        spatial_size = [int(s) for s in x.shape[2:]]
        if self.skip_mode == "same":
            x = pad_to_multiple(x, self.multiple)
        elif not torch.jit.is_scripting():
            self._check_input_size(spatial_size)
        ckpt = self._use_checkpointing()
        skips: List[torch.Tensor] = []
        for i, stage in enumerate(self.encoder):
            x = self._checkpointed_encoder(i, x) if ckpt else stage(x)
            skips.append(x)
        for i, stage in enumerate(self.decoder):
            skip = skips[self.depth - 1 - i]
            x = self._checkpointed_decoder(i, x, skip) if ckpt else stage(x, skip)
        x = self.head(x)
        if self.skip_mode == "same":
            x = crop_to(x, spatial_size)
        return x
