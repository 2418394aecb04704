"""Engine handlers the configs use beyond MONAI's own."""

from __future__ import annotations

import logging
import os
import random
import socket
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from .checks import weights_mismatch
from .distributed import is_main_process, unwrap_network
from .torch_files import BundleFileError, load_torch_file

logger = logging.getLogger(__name__)

RESUME_FIX = (
    "resume reads the training state an interrupted run of this bundle's train.json saved after each epoch: "
    "give that run's --ckpt_dir, or train afresh without --resume (a fresh run replaces the file)"
)


class FinalWeightsSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing the final weights when training completes, and only then.

    Training without a held-out fold (``val_interval`` 0, e.g. ``configs/train_all_cases.json``, or an empty
    ``validate#dataset#data``, as MONAI Label passes for a request with ``val_split`` 0) has no validation to choose a
    best checkpoint, so the weights of the last epoch are the model. ``CheckpointSaver(save_final=True)``
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


class TrainingState:
    """Everything a training run needs to go on where it stopped, saved after every epoch, restored with ``resume``.

    After each epoch (and its validation, if any) the file ``path`` is replaced by one holding the network, the
    optimizer, the learning-rate schedule, the trainer's epoch and iteration, the random number generators (torch,
    numpy, python: they draw the next epoch's shuffling and the data-loader workers' augmentation seeds) and, when
    training validates, the best validation score so far and which ``model.pt`` it belongs to. The file is written
    to a temporary name of this process's own and then renamed, so an interruption while saving leaves the previous
    epoch's state whole. A file that cannot be read (damaged, foreign, refused for safety) stops only a run that
    resumes from it, with a message naming it and the fix; a fresh run, which does not need it, warns and replaces it.

    With ``resume`` the run loads that file before its first epoch and goes on from the epoch after the saved one; it
    must have the interrupted run's ``max_epochs``, whose length the learning-rate schedule keeps. The best-checkpoint
    memory is restored too, so a resumed run replaces ``model.pt`` only with a better validation score than the
    interrupted run had.
    With the bundle's data loader workers (``num_workers`` > 0) a resumed run repeats the uninterrupted run's
    batches and augmentation; with ``num_workers`` 0 the transforms draw from their own generators in the main
    process, which start again from the seed.

    Attach to the trainer after it is built (the config's ``run`` does ``@training_state.attach(@train#trainer)``):
    the trainer's handlers cannot refer to the trainer itself.

    Args:
        path: the state file (config id ``training_state_file``, default ``<state_dir>/training_state.pt``; config
            id ``state_dir`` defaults to ``<ckpt_dir>_state``: not ckpt_dir, whose every ``*.pt`` MONAI Label offers
            as a model and loads without checking that it fits).
        objects: what to save and restore by name, each with ``state_dict``/``load_state_dict`` (network, optimizer,
            lr_scheduler).
        resume: load ``path`` at the start of training (config id ``resume``).
        evaluator: the validation engine, whose best score and epoch are kept.
        best_saver: the ``CheckpointSaver`` that writes ``model.pt`` on the best validation score.
    """

    def __init__(self, path: str, objects: dict, resume: bool = False, evaluator=None, best_saver=None) -> None:
        self.path = Path(path)
        self.objects = dict(objects)
        self.resume = bool(resume)
        self.evaluator = evaluator
        self.best_saver = best_saver

    def attach(self, trainer: Engine) -> None:
        if self.resume:  # that the file exists, train.json's initialize checks before any case is read
            trainer.add_event_handler(Events.STARTED, self.load)
        elif self.path.is_file() and is_main_process():
            self._warn_of_earlier_state()
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def _warn_of_earlier_state(self) -> None:
        """A fresh run does not need the state file it will replace: whatever the file holds (an earlier run's state,
        or something damaged or foreign), it only warns, and never stops the run."""
        try:
            saved = load_torch_file(self.path, "resume", RESUME_FIX)
            trainer = saved.get("trainer") if isinstance(saved, dict) else None
            if not isinstance(trainer, dict):
                raise BundleFileError(f"'{self.path}' is no training state of this bundle")
        except BundleFileError as err:
            logger.warning(
                "%s. This run starts afresh (without --resume it does not need the file) and replaces it "
                "after its first epoch.",
                err.problem,
            )
            return
        # ignite keeps the iteration and the epoch length, not the epoch
        epoch = trainer.get("iteration", 0) // max(trainer.get("epoch_length") or 1, 1)
        logger.warning(
            "'%s' holds the state of an earlier run (epoch %s of %s); this run starts afresh and replaces it after "
            "its first epoch. To continue that run instead, add --resume True.",
            self.path,
            epoch,
            trainer.get("max_epochs"),
        )

    def _best_checkpoint(self):
        # MONAI's CheckpointSaver keeps its memory of the best score in an ignite Checkpoint
        return getattr(self.best_saver, "_key_metric_checkpoint", None)

    def save(self, engine: Engine) -> None:
        if not is_main_process():
            return
        numpy_state = np.random.get_state()
        state = {
            **{name: unwrap_network(obj).state_dict() for name, obj in self.objects.items()},
            "trainer": engine.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
                "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
            },
        }
        if self.evaluator is not None and self.evaluator.state.best_metric_epoch > 0:
            state["best"] = {
                "metric": float(self.evaluator.state.best_metric),
                "epoch": int(self.evaluator.state.best_metric_epoch),
            }
            best_checkpoint = self._best_checkpoint()
            if best_checkpoint is not None:
                state["best"]["checkpoint"] = best_checkpoint.state_dict()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a name of this process's own: two runs writing one state file must not write into each other's temporary
        # file (the lock in state_dir stops the second run; this keeps even unlocked writers whole)
        own = f"{self.path.stem}.{socket.gethostname()}.{os.getpid()}{self.path.suffix}.partial"
        partial = self.path.with_name(own)
        torch.save(state, partial)
        os.replace(partial, self.path)

    def load(self, engine: Engine) -> None:
        state = load_torch_file(self.path, "resume", RESUME_FIX)
        missing = [
            name for name in (*self.objects, "trainer", "rng") if not isinstance(state, dict) or name not in state
        ]
        if missing:
            raise BundleFileError(
                f"'{self.path}' (config id 'resume') is no training state of this bundle (it lacks " f"{missing})",
                RESUME_FIX,
            )
        saved_epochs = state["trainer"].get("max_epochs")
        if saved_epochs != engine.state.max_epochs:
            # the learning-rate schedule restored with the state is as long as the interrupted run: a resumed run
            # of another length would run off its end (the cosine comes back up) or stop before it
            raise ValueError(
                f"'{self.path}' is the state of a run of {saved_epochs} epochs, this one has {engine.state.max_epochs}: "
                f"resume with train#trainer#max_epochs {saved_epochs}, as the interrupted run had (to train longer, "
                "start a new run)."
            )
        for name, obj in self.objects.items():
            if (
                isinstance(obj, nn.Module)
                and (problem := weights_mismatch(state[name], unwrap_network(obj))) is not None
            ):
                raise ValueError(
                    f"the {name} saved in '{self.path}' does not fit this run's {name} (config ids 'network_name', "
                    f"'network_options', 'num_classes'): {problem}. Resume with the interrupted run's settings, "
                    "or train afresh without --resume."
                )
            unwrap_network(obj).load_state_dict(state[name])
        engine.load_state_dict(state["trainer"])
        if is_main_process():  # the generators saved are rank 0's; other ranks keep their own (seed + rank)
            rng = state["rng"]
            torch.set_rng_state(rng["torch"])
            random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
            numpy_state = rng["numpy"]
            np.random.set_state((numpy_state[0], numpy_state[1].numpy().astype(np.uint32), *numpy_state[2:]))
        best = state.get("best")
        if best is not None and self.evaluator is not None:
            self.evaluator.state.best_metric, self.evaluator.state.best_metric_epoch = best["metric"], best["epoch"]
            best_checkpoint = self._best_checkpoint()
            if "checkpoint" in best and best_checkpoint is not None:
                best_checkpoint.load_state_dict(best["checkpoint"])
        logger.info("resumed from '%s' after epoch %d of %d", self.path, engine.state.epoch, engine.state.max_epochs)
