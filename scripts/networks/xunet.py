"""XUNet (CrossBasicUNet): a BasicUNet whose every decoder stage sees every encoder level.

The encoder is MONAI's BasicUNet encoder (``TwoConv`` then four ``Down``). Each decoder stage
(:class:`UpCatAll`) upsamples its input, nearest-resizes **all** encoder maps ``x0 .. x4`` to that size,
concatenates ``[up, x0, x1, x2, x3, x4]`` on channels and applies a ``TwoConv``.

Module names and shapes follow the original CrossBasicUNet (https://github.com/lgy112112/XUNet), so its
checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import UpSample
from monai.networks.layers.factories import Conv
from monai.networks.nets.basic_unet import Down, TwoConv
from monai.utils import ensure_tuple_rep

from .cross_level_conv import cross_level_conv, upsample_cross_level_conv, upsample_folding_pays
from .registry import register_network

__all__ = ["UpCatAll", "XUNet", "CrossBasicUNet", "pad_to_multiple", "crop_to"]


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "constant") -> torch.Tensor:
    """Pad the spatial dimensions of ``x`` at their end up to the next multiple of ``multiple``."""
    pads: List[int] = []
    for size in x.shape[2:][::-1]:  # F.pad lists the last dimension first
        pads += [0, (multiple - int(size) % multiple) % multiple]
    if sum(pads) == 0:
        return x
    return F.pad(x, pads, mode=mode)


def crop_to(x: torch.Tensor, spatial_size: List[int]) -> torch.Tensor:
    """Crop the spatial dimensions of ``x`` to ``spatial_size`` (keeping the start)."""
    for d, size in enumerate(spatial_size):
        if int(x.shape[2 + d]) != size:
            x = x.narrow(2 + d, 0, size)
    return x


class UpCatAll(nn.Module):
    """Decoder stage: upsample, fuse with every encoder level, two convolutions.

    ``forward(x, skips)`` computes ``convs(cat([upsample(x)] + [nearest_resize(s) for s in skips]))``.
    With ``fast=True`` (default) the first convolution of ``convs`` is evaluated by
    :func:`scripts.networks.cross_level_conv.cross_level_conv`, which gives the same result without
    materialising the resized maps or the concatenation; skips whose size is not an integer multiple or
    fraction of the upsampled size fall back to interpolation. With ``upsample="deconv"`` the upsampling itself is
    folded into that convolution where it saves work
    (:func:`~scripts.networks.cross_level_conv.upsample_cross_level_conv`), so ``up`` is not computed either.
    ``fast=False`` runs the straightforward interpolate-and-concatenate computation (the reference the fast path
    is tested against).

    While no gradient is recorded (inference), the fast path composes its kernels once and reuses them
    (:meth:`kernel_store`) for as long as the weights stay equal to those they were composed from.
    """

    # kernels composed from the weights for inference: derived data, never saved, not part of a scripted module
    __jit_ignored_attributes__ = ["_inference_kernels"]

    def __init__(
        self,
        spatial_dims: int,
        in_chns: int,
        skip_chns: Sequence[int],
        out_chns: int,
        act: str | tuple,
        norm: str | tuple,
        bias: bool,
        dropout: float | tuple = 0.0,
        upsample: str = "deconv",
        pre_conv: nn.Module | str | None = "default",
        interp_mode: str = "linear",
        align_corners: bool | None = True,
        halves: bool = True,
        fast: bool = True,
    ):
        """
        Args:
            spatial_dims: number of spatial dimensions.
            in_chns: channels of the decoder input to be upsampled.
            skip_chns: channels of each encoder map, in the order they are passed to ``forward``.
            out_chns: output channels.
            act: activation type and arguments.
            norm: normalisation type and arguments.
            bias: whether the convolutions have a bias.
            dropout: dropout ratio.
            upsample: ``"deconv"``, ``"pixelshuffle"`` or ``"nontrainable"``.
            pre_conv: conv block before upsampling ("nontrainable" and "pixelshuffle" modes).
            interp_mode: interpolation of the "nontrainable" mode.
            align_corners: align_corners of the "nontrainable" mode.
            halves: whether upsampling halves the channels.
            fast: use the exact low-resolution computation of the cross-level skips.
        """
        super().__init__()
        if upsample == "nontrainable" and pre_conv is None:
            up_chns = in_chns
        else:
            up_chns = in_chns // 2 if halves else in_chns
        self.upsample = UpSample(
            spatial_dims,
            in_chns,
            up_chns,
            2,
            mode=upsample,
            pre_conv=pre_conv,
            interp_mode=interp_mode,
            align_corners=align_corners,
        )
        self.build_fusion(spatial_dims, up_chns + sum(skip_chns), out_chns, act, norm, bias, dropout)
        self.fast = fast
        self._inference_kernels: Optional[Tuple[List[torch.Tensor], Dict[str, Dict[str, torch.Tensor]]]] = None

    def __getstate__(self):
        # copies and pickles start without composed kernels (they hold a copy of the weights)
        state = self.__dict__.copy()
        state["_inference_kernels"] = None
        return state

    def composed_from(self) -> List[torch.Tensor]:
        """The weights the fast path composes its kernels from: the fusion convolution's, and the upsampling
        transposed convolution's where it is folded in."""
        tensors = [self.convs.conv_0.conv.weight, self.convs.conv_0.conv.bias]
        if hasattr(self.upsample, "deconv"):
            tensors += [self.upsample.deconv.weight, self.upsample.deconv.bias]
        return [t for t in tensors if t is not None]

    @torch.jit.unused
    def kernel_store(self, x: torch.Tensor, skips: List[torch.Tensor]) -> Optional[Dict[str, torch.Tensor]]:
        """Where the fast path keeps the kernels it composes, for this stage's input shapes, input dtype and autocast
        setting; None (compose at every call) while gradients are recorded, since training changes the weights at
        every step.

        The kept kernels are used only while every weight is still **equal** to the copy they were composed
        from: any change (an optimiser step, ``load_state_dict``, an in-place edit through ``.data``, which no
        version counter sees) composes them anew, so a reuse can never give a stale result.
        """
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or x.device.type == "meta":
            return None  # meta tensors (shape and cost tracing) have no values to compare or keep
        weights = [w.detach() for w in self.composed_from()]
        state = self._inference_kernels
        if state is not None and not _all_equal(state[0], weights):
            state = None
        if state is None:
            state = ([w.clone() for w in weights], {})
            self._inference_kernels = state
        # every choice the fast path makes (which parts fold, transposed or class convolution) follows from the
        # shapes, batch size included, and autocast composes kernels in its own dtype: kernels are kept per both
        device = x.device.type
        autocast = "off"
        if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
            autocast = str(torch.get_autocast_dtype(device))
        key = str([list(x.shape)] + [list(s.shape) for s in skips]) + f" {x.dtype} autocast {autocast}"
        stores = state[1]
        if key not in stores:
            if len(stores) >= 8:  # inputs of many shapes (whole volumes of varying size): keep the latest only
                stores.clear()
            stores[key] = {}
        return stores[key]

    def build_fusion(
        self,
        spatial_dims: int,
        in_chns: int,
        out_chns: int,
        act: str | tuple,
        norm: str | tuple,
        bias: bool,
        dropout: float | tuple,
    ) -> None:
        """Build the layers that fuse the ``in_chns``-channel concatenation into ``out_chns`` channels (called by
        ``__init__``): here ``convs``, a :class:`~monai.networks.nets.basic_unet.TwoConv`. Variants override it
        (and ``forward``) to fuse differently without building layers they would not use."""
        self.convs = TwoConv(spatial_dims, in_chns, out_chns, act, norm, bias, dropout)

    def forward(self, x: torch.Tensor, skips: List[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_chns, *S)`` decoder input.
            skips: encoder maps ``(B, skip_chns[i], *S_i)`` of any spatial sizes.

        Returns:
            ``(B, out_chns, *(2 * S))``.
        """
        if self.fast:
            kernels: Optional[Dict[str, torch.Tensor]] = None
            if not torch.jit.is_scripting():
                kernels = self.kernel_store(x, skips)
            first = self.convs.conv_0
            fold = False
            if hasattr(self.upsample, "deconv"):  # a transposed convolution can be folded into the fused one
                fold = upsample_folding_pays(x, self.upsample.deconv.weight, first.conv.weight)
            if fold:  # ``up`` is never computed
                deconv = self.upsample.deconv
                fused = upsample_cross_level_conv(
                    x, deconv.weight, deconv.bias, skips, first.conv.weight, first.conv.bias, kernels
                )
            else:
                fused = cross_level_conv(self.upsample(x), skips, first.conv.weight, first.conv.bias, kernels)
            return self.convs.conv_1(first.adn(fused))
        up = self.upsample(x)
        size = up.shape[2:]
        resized = [F.interpolate(s, size=size, mode="nearest") for s in skips]
        return self.convs(torch.cat([up] + resized, dim=1))


def _all_equal(kept: List[torch.Tensor], current: List[torch.Tensor]) -> bool:
    """Whether two lists of tensors match in shape, dtype, device and every value."""
    if len(kept) != len(current):
        return False
    for a, b in zip(kept, current):
        if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
            return False
    return all(torch.equal(a, b) for a, b in zip(kept, current))


@register_network("xunet", "crossbasicunet", "cross_basic_unet")
class XUNet(nn.Module):
    """XUNet / CrossBasicUNet with 1D/2D/3D support.

    Every decoder stage concatenates the upsampled decoder map with all five encoder maps, nearest-resized to
    its size, before its two convolutions. Inputs of any size are accepted: the input is zero-padded at the
    end of each spatial axis to a multiple of 16 (four 2x poolings) and the output is cropped back, so the
    output always has the input's spatial size. For sizes that are already multiples of 16 the result is the
    original CrossBasicUNet's.

    Example::

        >>> net = XUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(64, 64, 128, 256, 512, 64))
        >>> net(torch.zeros(2, 1, 33, 47)).shape
        torch.Size([2, 1, 33, 47])
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
            spatial_dims: number of spatial dimensions (1, 2 or 3).
            in_channels: number of input channels.
            out_channels: number of output channels.
            features: six integers: the five encoder levels' channels ``f0..f4`` and the channels after the
                last upsampling stage ``f5``. Decoder stages output ``f3, f2, f1, f5`` channels.
            act: activation type and arguments. Defaults to LeakyReLU(0.1).
            norm: normalisation type and arguments. Defaults to affine instance norm.
            bias: whether convolutions have a bias.
            dropout: dropout ratio.
            upsample: ``"deconv"`` (default), ``"pixelshuffle"`` or ``"nontrainable"``.
            fast: compute the cross-level skips with the exact low-resolution method (same outputs,
                same parameters); ``False`` runs the straightforward interpolate-and-concatenate path.
        """
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if len(tuple(features)) != 6:
            raise ValueError(f"features must have 6 values (f0..f4 encoder, f5 last decoder), got {features}.")
        fea = ensure_tuple_rep(features, 6)
        skip = list(fea[:5])
        self.spatial_dims = spatial_dims
        self.conv_0 = TwoConv(spatial_dims, in_channels, fea[0], act, norm, bias, dropout)
        self.down_1 = Down(spatial_dims, fea[0], fea[1], act, norm, bias, dropout)
        self.down_2 = Down(spatial_dims, fea[1], fea[2], act, norm, bias, dropout)
        self.down_3 = Down(spatial_dims, fea[2], fea[3], act, norm, bias, dropout)
        self.down_4 = Down(spatial_dims, fea[3], fea[4], act, norm, bias, dropout)

        options = dict(act=act, norm=norm, bias=bias, dropout=dropout, upsample=upsample, fast=fast)
        self.upcat_4 = self.decoder_stage(spatial_dims, fea[4], skip, fea[3], True, options)
        self.upcat_3 = self.decoder_stage(spatial_dims, fea[3], skip, fea[2], True, options)
        self.upcat_2 = self.decoder_stage(spatial_dims, fea[2], skip, fea[1], True, options)
        self.upcat_1 = self.decoder_stage(spatial_dims, fea[1], skip, fea[5], False, options)

        self.final_conv = Conv["conv", spatial_dims](fea[5], out_channels, kernel_size=1)

    def decoder_stage(
        self, spatial_dims: int, in_chns: int, skip_chns: Sequence[int], out_chns: int, halves: bool, options: dict
    ) -> nn.Module:
        """Build one decoder stage (called by ``__init__``); variants of XUNet override this to change how a
        stage fuses the encoder levels. ``options``: act, norm, bias, dropout, upsample, fast."""
        return UpCatAll(spatial_dims, in_chns, skip_chns, out_chns, halves=halves, **options)

    @torch.jit.unused
    def _check_input_size(self, spatial_size: List[int]) -> None:
        # An input no larger than 16 along every axis pads to 16, and four poolings leave one voxel per channel.
        # Instance norm cannot normalise one value; torch refuses with a message about training that misleads
        # in eval mode, so say what is wrong and what to do.
        if all(s <= 16 for s in spatial_size) and any(
            isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in self.down_4.modules()
        ):
            raise ValueError(
                f"{type(self).__name__} with instance norm needs an input larger than 16 voxels along at least one "
                f"spatial axis, got {spatial_size}: the deepest level would hold one voxel, which instance norm "
                "cannot normalise. Pad the input (e.g. MONAI's SpatialPad to 32), run it through a sliding window "
                "of 32 or more (as the bundle's inference does), or build the network with norm='batch'. In the "
                "bundle's configs, patches and windows are config id 'patch_size': make one of its sizes 17 or more."
            )

    def set_fast(self, fast: bool) -> XUNet:
        """Switch every decoder stage between the fast exact path and the straightforward one."""
        for stage in (self.upcat_4, self.upcat_3, self.upcat_2, self.upcat_1):
            stage.fast = fast
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, *S)``, any spatial size ``S``.

        Returns:
            ``(B, out_channels, *S)`` logits.
        """
        spatial_size = [int(s) for s in x.shape[2:]]
        if not torch.jit.is_scripting():
            self._check_input_size(spatial_size)
        x = pad_to_multiple(x, 16)
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        skips = [x0, x1, x2, x3, x4]
        u4 = self.upcat_4(x4, skips)
        u3 = self.upcat_3(u4, skips)
        u2 = self.upcat_2(u3, skips)
        u1 = self.upcat_1(u2, skips)
        return crop_to(self.final_conv(u1), spatial_size)


CrossBasicUNet = XUNet
