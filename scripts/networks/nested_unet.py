"""UNet++ (NestedUNet; Zhou et al., DLMIA 2018) for 1D, 2D and 3D, with deep supervision.

Node ``x[i][j]`` (level ``i``, column ``j``) is a :class:`~.blocks.ConvBlock` (the seed's VGG block):

* ``x[i][0]`` -- the encoder: ``ConvBlock(x)`` for ``i = 0``, ``ConvBlock(maxpool(x[i-1][0]))`` below;
* ``x[i][j]``, ``j >= 1`` -- ``ConvBlock(cat(x[i][0], ..., x[i][j-1], up(x[i+1][j-1])))``, the dense skip paths.

Every top node ``x[0][j]`` (``j = 1 .. depth``) has a 1x1 head. The heads are always built, so weights load
with or without deep supervision.

Outputs:

* ``deep_supervision=True`` in training mode: **one** tensor ``(B, depth, C, *S)``, the heads of
  ``x[0][1] .. x[0][depth]`` stacked on dim 1 (not a list, so the module stays TorchScript-able and
  engines that move ``pred`` around keep working). Train it with
  :class:`StackedDeepSupervisionLoss` (below).
* otherwise (training without deep supervision, and **always in eval mode**): one tensor ``(B, C, *S)``, the
  head of ``x[0][eval_head]`` -- so MONAI's inferers (``SlidingWindowInferer``) work. ``eval_head`` defaults to
  ``depth`` (the full UNet++); a smaller value runs the pruned UNet++ L\\ :sub:`eval_head`: only the nodes that
  head needs are computed.

MONAI's ``BasicUNetPlusPlus`` returns a list in every mode, which the sliding-window inferer cannot stitch.

Training with the stacked heads (shallowest first, the full network's head last), for the bundle:

* the loss: :class:`StackedDeepSupervisionLoss` wraps the bundle's loss and sums it over the heads;
* the train post-processing (decollated, per sample ``(heads, C, *S)``): :func:`last_head` keeps the final head
  so the metric sees ``(C, *S)``, e.g. ``{"_target_": "Lambdad", "keys": "pred",
  "func": "$scripts.networks.last_head"}`` before ``Activationsd``.

In eval mode the network returns ``(B, C, *S)`` and nothing needs to change for validation or inference.
"""

from collections.abc import Sequence
from typing import List, Optional

import torch
import torch.nn as nn
from monai.losses import DeepSupervisionLoss
from monai.networks.layers.factories import Conv, Pool

from .blocks import UPSAMPLE_MODES, ConvBlock, make_upsample
from .registry import register_network
from .xunet import crop_to, pad_to_multiple

__all__ = ["NestedDecoderNode", "NestedEncoderNode", "NestedUNet", "StackedDeepSupervisionLoss", "last_head"]


class NestedEncoderNode(nn.Module):
    """``x[i][0]``: optional 2x max-pooling then a :class:`ConvBlock`; ``forward([x])``."""

    def __init__(self, block: nn.Module, pool: Optional[nn.Module] = None):
        super().__init__()
        self.pool = pool if pool is not None else nn.Identity()
        self.block = block

    def forward(self, xs: List[torch.Tensor]) -> torch.Tensor:
        return self.block(self.pool(xs[0]))


class NestedDecoderNode(nn.Module):
    """``x[i][j]``, ``j >= 1``: ``forward([x[i][0], ..., x[i][j-1], x[i+1][j-1]])`` upsamples the last map,
    concatenates all on channels and applies the :class:`ConvBlock`."""

    def __init__(self, up: nn.Module, block: nn.Module):
        super().__init__()
        self.up = up
        self.block = block

    def forward(self, xs: List[torch.Tensor]) -> torch.Tensor:
        up = self.up(xs[-1])
        return self.block(torch.cat(xs[:-1] + [up], dim=1))


@register_network("unetpp", "nestedunet", "unetplusplus", "unet++")
class NestedUNet(nn.Module):
    """UNet++ with ``len(features) - 1`` downsamplings; see the module docstring for the outputs.

    Inputs of any size are zero-padded to a multiple of ``2 ** depth`` and the outputs cropped back.

    Example::

        >>> net = NestedUNet(spatial_dims=2, in_channels=1, out_channels=3, features=(8, 16, 32, 64, 128),
        ...                  deep_supervision=True)
        >>> net.train()(torch.zeros(2, 1, 33, 47)).shape  # (B, heads, C, H, W)
        torch.Size([2, 4, 3, 33, 47])
        >>> net.eval()(torch.zeros(2, 1, 33, 47)).shape
        torch.Size([2, 3, 33, 47])
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        act: str | tuple | None = "relu",
        norm: str | tuple | None = "batch",
        bias: bool = True,
        dropout: float | tuple = 0.0,
        upsample: str = "interp",
        interp_mode: str = "linear",
        align_corners: bool | None = True,
        deep_supervision: bool = False,
        eval_head: int | None = None,
    ):
        """
        Args:
            spatial_dims: number of spatial dimensions (1, 2 or 3).
            in_channels: input channels.
            out_channels: output channels (classes).
            features: channels of each level ``i`` (shared by all its nodes), shallowest first.
            act: activation type and arguments.
            norm: normalisation type and arguments (None: none).
            bias: whether the 3x3 convolutions have a bias.
            dropout: dropout ratio in the conv blocks.
            upsample: ``"interp"`` (the seed's bilinear upsampling, channels kept; default), ``"deconv"`` or
                ``"interp_conv"`` (both map level ``i+1``'s channels to level ``i``'s).
            interp_mode: interpolation of the interp modes (``"linear"`` = bi-/trilinear).
            align_corners: ``align_corners`` of linear interpolation.
            deep_supervision: in training mode return all heads stacked ``(B, depth, C, *S)``.
            eval_head: which head (1 .. depth) gives the single output in eval mode (and in training without
                deep supervision); default ``depth``. Smaller values prune the network.
        """
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        fea = [int(f) for f in features]
        if len(fea) < 2:
            raise ValueError(f"features needs at least 2 levels, got {features}.")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got '{upsample}'.")
        depth = len(fea) - 1
        self.spatial_dims = spatial_dims
        self.depth = depth
        self.multiple = 2**depth
        self.deep_supervision = deep_supervision
        self.eval_head = depth
        self.set_eval_head(depth if eval_head is None else eval_head)
        block = dict(act=act, norm=norm, bias=bias, dropout=dropout)

        # nodes in computation order: by i + j, deeper first, so x[0][k] needs exactly the first
        # (k + 1)(k + 2) / 2 nodes. outs[0] is the input, node n writes outs[n + 1].
        position: dict[tuple[int, int], int] = {}
        self.nodes = nn.ModuleList()
        inputs: List[List[int]] = []
        for s in range(depth + 1):
            for i in range(s, -1, -1):
                j = s - i
                if j == 0:
                    if i == 0:
                        node: nn.Module = NestedEncoderNode(ConvBlock(spatial_dims, in_channels, fea[0], **block))
                        inputs.append([0])
                    else:
                        node = NestedEncoderNode(
                            ConvBlock(spatial_dims, fea[i - 1], fea[i], **block),
                            Pool["max", spatial_dims](kernel_size=2),
                        )
                        inputs.append([position[(i - 1, 0)]])
                else:
                    up_chns = fea[i + 1] if upsample == "interp" else fea[i]
                    up = make_upsample(spatial_dims, fea[i + 1], up_chns, upsample, interp_mode, align_corners)
                    node = NestedDecoderNode(up, ConvBlock(spatial_dims, j * fea[i] + up_chns, fea[i], **block))
                    inputs.append([position[(i, k)] for k in range(j)] + [position[(i + 1, j - 1)]])
                self.nodes.append(node)
                position[(i, j)] = len(self.nodes)
        self._inputs: List[List[int]] = inputs
        self._top: List[int] = [position[(0, j)] for j in range(1, depth + 1)]
        self._nodes_for_head: List[int] = [(k + 1) * (k + 2) // 2 for k in range(depth + 1)]
        self.heads = nn.ModuleList(
            [Conv["conv", spatial_dims](fea[0], out_channels, kernel_size=1) for _ in range(depth)]
        )

    def set_eval_head(self, head: int) -> "NestedUNet":
        """Choose the head (1 .. depth) of the single-tensor output; returns the network."""
        if not 1 <= int(head) <= self.depth:
            raise ValueError(f"eval_head must be in 1 .. {self.depth}, got {head}.")
        self.eval_head = int(head)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, *S)``, any spatial size.

        Returns:
            ``(B, depth, out_channels, *S)`` in training mode with deep supervision, else
            ``(B, out_channels, *S)`` (the head chosen by ``eval_head``).
        """
        spatial_size = [int(s) for s in x.shape[2:]]
        all_heads = self.training and self.deep_supervision
        head = self.depth if all_heads else self.eval_head
        n_run = self._nodes_for_head[head]
        outs: List[torch.Tensor] = [pad_to_multiple(x, self.multiple)]
        for n, node in enumerate(self.nodes):
            if n < n_run:
                outs.append(node([outs[k] for k in self._inputs[n]]))
        results: List[torch.Tensor] = []
        for k, conv in enumerate(self.heads):
            if all_heads or k == head - 1:
                results.append(crop_to(conv(outs[self._top[k]]), spatial_size))
        if all_heads:
            return torch.stack(results, dim=1)
        return results[0]


class StackedDeepSupervisionLoss(nn.Module):
    """Weighted sum of ``loss`` over the heads of a stacked ``(B, heads, C, *S)`` prediction.

    A ``(B, C, *S)`` prediction (eval mode, or a network without deep supervision) is passed to ``loss`` as is.
    The weights follow :class:`monai.losses.DeepSupervisionLoss` (its ``weight_mode``: ``"same"``, ``"exp"``,
    ``"two"``, or explicit ``weights``), applied to the heads **deepest first** (the full network's head gets
    the first weight), matching MONAI's convention that the main output comes first.
    """

    def __init__(self, loss: nn.Module, weight_mode: str = "same", weights: Sequence[float] | None = None):
        super().__init__()
        self.ds_loss = DeepSupervisionLoss(
            loss, weight_mode=weight_mode, weights=None if weights is None else list(weights)
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: ``(B, heads, C, *S)`` stacked heads, or ``(B, C, *S)``.
            target: ``(B, C_t, *S)``, as the wrapped loss expects.
        """
        if input.dim() == target.dim() + 1:
            heads = list(torch.unbind(input, dim=1))[::-1]
            return self.ds_loss(heads, target)
        return self.ds_loss(input, target)


def last_head(pred: torch.Tensor) -> torch.Tensor:
    """The full network's head of a decollated stacked prediction ``(heads, C, *S)`` -> ``(C, *S)``."""
    return pred[-1]
