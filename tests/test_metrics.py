"""scripts.metrics: the whole-structure Dice used by evaluate.json."""

import torch
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot

from scripts.metrics import whole_structure


def _onehot(labels: torch.Tensor) -> torch.Tensor:
    return one_hot(labels[None, None], num_classes=3)[0]


def test_whole_structure_ignores_the_boundary_between_foreground_classes():
    label = torch.zeros(8, 8, 8, dtype=torch.long)
    label[2:6, 2:6, 2:4] = 1
    label[2:6, 2:6, 4:6] = 2
    swapped = label.clone()
    swapped[label == 1], swapped[label == 2] = 2, 1
    output = [{"pred": _onehot(swapped), "label": _onehot(label)}]
    preds, labels = whole_structure(output)
    assert preds[0].shape == (2, 8, 8, 8) and torch.equal(preds[0], labels[0])

    dice = DiceMetric(include_background=False)
    whole = dice(torch.stack(preds), torch.stack(labels)).mean()
    per_class = dice(output[0]["pred"][None], output[0]["label"][None]).mean()
    assert whole == 1.0 and per_class == 0.0


def test_whole_structure_scores_missed_voxels():
    label = torch.zeros(8, 8, 8, dtype=torch.long)
    label[2:6, 2:6, 2:6] = 1  # 64 voxels
    pred = label.clone()
    pred[2:6, 2:6, 5] = 0  # 16 missed
    preds, labels = whole_structure([{"pred": _onehot(pred), "label": _onehot(label)}])
    tp = (preds[0][1] * labels[0][1]).sum()
    assert 2 * tp / (preds[0][1].sum() + labels[0][1].sum()) == 2 * 48 / (48 + 64)
