"""Engine handlers of the research experiments (not used by the bundle's own configs)."""

from __future__ import annotations

import torch.nn as nn
from ignite.engine import Engine
from ignite.handlers import EMAHandler

from scripts.handlers import FinalWeightsSaver


class AveragedWeightsSaver(EMAHandler):
    """ignite's ``EMAHandler`` (an exponential moving average of the network's weights over the training
    iterations) that writes the averaged weights, as a plain state dict, when training completes.

    The average only watches the weights, so training itself runs exactly as without it: the run's own last-epoch
    weights and any number of averages (one saver each, different ``momentum``) come from the same trajectory and
    compare per case without seed noise. Experiment overlay: ``research/configs/experiments/weight_averaging.json``.

    Args:
        network: the network being trained (the module itself, not the autocast wrapper the trainer runs).
        momentum: weight of the current weights at each iteration; the average spans about ``1 / momentum``
            iterations.
        save_dir: folder the averaged weights are written to.
        final_filename: file name in ``save_dir``.
    """

    def __init__(self, network: nn.Module, momentum: float, save_dir: str, final_filename: str = "model.pt") -> None:
        if not 0.0 < momentum < 1.0:
            raise ValueError(
                f"AveragedWeightsSaver momentum must lie between 0 and 1 (exclusive), got {momentum}: "
                "e.g. 0.001 averages over about the last 1,000 iterations."
            )
        super().__init__(network, momentum=momentum)
        self.saver = FinalWeightsSaver(
            save_dir=save_dir, save_dict={"model": self.ema_model}, final_filename=final_filename
        )

    def attach(self, engine: Engine) -> None:
        # EMAHandler reads its momentum from engine.state.<name>, so each average in a run needs a name of its own
        super().attach(engine, name=f"ema_momentum_{id(self)}")
        self.saver.attach(engine)
