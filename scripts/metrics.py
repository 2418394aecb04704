"""Output transforms for the bundle's metrics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.handlers import from_engine

__all__ = ["whole_structure"]


def _merge_foreground(onehot: torch.Tensor) -> torch.Tensor:
    """``(C, *S)`` one-hot -> ``(2, *S)``: background, and the union of classes ``1 .. C-1``."""
    return torch.stack([onehot[0], onehot[1:].amax(dim=0)])


def whole_structure(output: Sequence[dict]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``output_transform`` for a metric of the whole structure (for this bundle: the hippocampus, anterior and
    posterior together), so ``MeanDice(include_background=False, output_transform=whole_structure)`` scores the
    outline regardless of where the prediction puts the anterior/posterior boundary.

    Args:
        output: the evaluator's decollated output, a list of dicts with one-hot ``"pred"`` and ``"label"``
            of shape ``(C, *S)``, as the bundle's post-processing leaves them.

    Returns:
        ``(preds, labels)``, each a list of ``(2, *S)`` tensors (background, union of the foreground classes).
    """
    preds, labels = from_engine(["pred", "label"])(output)
    return [_merge_foreground(p) for p in preds], [_merge_foreground(y) for y in labels]
