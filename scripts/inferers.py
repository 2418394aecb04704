"""Inferers used by the bundle's configs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer


class FlipAveragingInferer(Inferer):
    """Test-time augmentation: average the logits of the input and of its mirror images.

    Wraps another inferer (e.g. MONAI's SlidingWindowInferer); each flip is undone on the output before
    averaging, so the result is in the input's orientation. Flip only along axes the network was trained to
    be symmetric under (the bundle trains with left-right flips, axis 0 of RAS images).

    Args:
        inferer: the inferer to run on each view.
        spatial_axes: spatial axes (0-based, not counting batch and channel) to mirror, one view per axis.
    """

    def __init__(self, inferer: Inferer, spatial_axes: Sequence[int] | int = (0,)) -> None:
        super().__init__()
        self.inferer = inferer
        # one axis given as a number (--tta_axes 0) means that axis, as MONAI's Flip reads spatial_axis
        self.spatial_axes = (
            (int(spatial_axes),) if isinstance(spatial_axes, int) else tuple(int(a) for a in spatial_axes)
        )
        if any(a < 0 for a in self.spatial_axes):  # -1 would become the channel axis once batch and channel lead
            raise ValueError(
                f"tta_axes (config id 'tta_axes') must count spatial axes from 0, got {list(spatial_axes)}: "
                "e.g. [0] for left-right flips, [] for none."
            )

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        spatial = inputs.dim() - 2
        if any(a >= spatial for a in self.spatial_axes):
            raise ValueError(
                f"tta_axes (config id 'tta_axes') is {list(self.spatial_axes)}, but the images have "
                f"{spatial} spatial axes (0 to {spatial - 1}): e.g. [0] for left-right flips, [] for none."
            )
        total = self.inferer(inputs, network, *args, **kwargs)
        for axis in self.spatial_axes:
            dims = [axis + 2]
            total = total + torch.flip(self.inferer(torch.flip(inputs, dims), network, *args, **kwargs), dims)
        return total / (1 + len(self.spatial_axes))
