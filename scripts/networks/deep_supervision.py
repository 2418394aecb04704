"""Training with deeply supervised networks that return their heads stacked on dim 1.

:class:`~scripts.networks.nested_unet.NestedUNet` with ``deep_supervision=True`` returns, in training mode, one
tensor ``(B, heads, C, *S)`` (shallowest head first, the full network's head last). For the bundle:

* the loss: :class:`StackedDeepSupervisionLoss` wraps the bundle's loss and sums it over the heads;
* the train post-processing (decollated, per sample ``(heads, C, *S)``): :func:`last_head` keeps the final head
  so the metric sees ``(C, *S)``, e.g. ``{"_target_": "Lambdad", "keys": "pred",
  "func": "$scripts.networks.deep_supervision.last_head"}`` before ``Activationsd``.

In eval mode the network returns ``(B, C, *S)`` and nothing needs to change for validation or inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.losses import DeepSupervisionLoss

__all__ = ["StackedDeepSupervisionLoss", "last_head"]


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
