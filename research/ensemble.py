"""Members of a model ensemble for MONAI's ``EnsembleEvaluator`` (``research/configs/experiments/ensemble.json``).

The evaluator runs every member through the same inferer, and ``MeanEnsembled`` averages their softmax
probabilities before the argmax. The members are copies of the config's ``network``, each loaded from one
checkpoint, so an ensemble needs no network definition of its own.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import torch
import torch.nn as nn

from scripts.checks import checked_weights
from scripts.precision import with_autocast

__all__ = ["ensemble_members", "ensemble_pred_keys"]

_FIX = (
    "list the model.pt files of the trained members, e.g. "
    "--ensemble_ckpts \"['/runs/a/models/model.pt', '/runs/b/models/model.pt']\""
)


def ensemble_pred_keys(checkpoints: Sequence[str | os.PathLike]) -> list[str]:
    """One prediction key per member, ``pred0``, ``pred1``, ...: the keys ``EnsembleEvaluator`` writes."""
    return [f"pred{i}" for i in range(len(checkpoints))]


def ensemble_members(
    network: nn.Module,
    checkpoints: Sequence[str | os.PathLike],
    precision: str = "float32",
    device: torch.device | str = "cpu",
) -> list[nn.Module]:
    """Copies of ``network``, member ``i`` loaded (``strict=True``) from ``checkpoints[i]``.

    Args:
        network: the architecture every member shares (its own weights are not used).
        checkpoints: the members' weights: plain state dicts, or a dict holding one under ``"model"``
            (what the bundle's ``CheckpointSaver`` writes either way).
        precision: the config id ``precision``, as for the single network (:func:`with_autocast`).
        device: where the members run.

    Raises:
        ValueError: ``checkpoints`` is empty or a single string (config id ``ensemble_ckpts``).
        FileNotFoundError: a checkpoint does not exist, naming it and the setting.
        ValueError: a checkpoint is no state dict, or does not fit the network, naming the file and what differs.
    """
    if isinstance(checkpoints, (str, os.PathLike)) or len(checkpoints) == 0:
        raise ValueError(
            f"config id 'ensemble_ckpts' must be a non-empty list of checkpoint files, got {checkpoints!r}: {_FIX}."
        )
    members = []
    for path in checkpoints:
        state = checked_weights(path, network, "ensemble_ckpts", _FIX)
        member = copy.deepcopy(network).to(device)
        member.load_state_dict(state, strict=True)
        members.append(with_autocast(member, precision).eval())
    return members
