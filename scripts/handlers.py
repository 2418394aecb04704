"""Engine handlers the configs use beyond MONAI's own."""

from __future__ import annotations

from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver


class FinalWeightsSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing the final weights when training completes, and only then.

    Training without a held-out fold (``val_interval`` 0, e.g. ``configs/train_all_cases.json``) has no validation
    to choose a best checkpoint, so the weights of the last epoch are the model. ``CheckpointSaver(save_final=True)``
    would also write them when the run stops on an error, under the same file name: a half-trained ``model.pt``
    that looks finished. This saver does not listen to errors at all, so it writes nothing then, and the error
    reaches the other handlers (``StatsHandler`` logs it) and the caller as usual.

    Args:
        save_dir: folder of the checkpoint (config id ``ckpt_dir``).
        save_dict: what to save, e.g. ``{"model": network}``; a single entry is saved as its plain state dict.
        final_filename: file name in ``save_dir``.
    """

    def __init__(self, save_dir: str, save_dict: dict, final_filename: str = "model.pt") -> None:
        super().__init__(save_dir=save_dir, save_dict=save_dict, save_final=True, final_filename=final_filename)

    def attach(self, engine: Engine) -> None:
        # CheckpointSaver.attach would also register ``exception_raised``; removing it afterwards is no good, as
        # ignite then finds an empty handler list for the event and swallows the error
        if self._name is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.COMPLETED, self.completed)
