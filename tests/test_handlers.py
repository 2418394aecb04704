"""scripts.handlers: the final-weights saver of training without a held-out fold; the training state that lets an
interrupted run go on."""

import pytest
import torch
from ignite.engine import Engine, Events

from scripts.handlers import FinalWeightsSaver, TrainingState


def _engine(fail_at: int | None = None) -> Engine:
    def step(engine, batch):
        if engine.state.iteration == fail_at:
            raise RuntimeError("a broken case")

    return Engine(step)


def test_saves_the_plain_state_dict_when_training_completes(tmp_path):
    network = torch.nn.Conv3d(1, 3, 1)
    engine = _engine()
    FinalWeightsSaver(str(tmp_path), {"model": network}, final_filename="model.pt").attach(engine)
    engine.run([0, 1, 2], max_epochs=2)
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert sorted(state) == ["bias", "weight"]  # plain, not {"model": ...}
    assert all(torch.equal(state[k], v) for k, v in network.state_dict().items())


def test_writes_nothing_when_training_stops_on_an_error(tmp_path):
    """MONAI's CheckpointSaver(save_final=True) would save the half-trained weights as model.pt here."""
    engine = _engine(fail_at=2)
    FinalWeightsSaver(str(tmp_path), {"model": torch.nn.Conv3d(1, 3, 1)}).attach(engine)
    with pytest.raises(RuntimeError, match="a broken case"):
        engine.run([0, 1, 2], max_epochs=1)
    assert list(tmp_path.iterdir()) == []


def test_the_error_still_reaches_handlers_attached_after_it(tmp_path):
    """train.json lists the saver before StatsHandler, which logs the error: the saver must not cut it off."""
    engine = _engine(fail_at=1)
    FinalWeightsSaver(str(tmp_path), {"model": torch.nn.Conv3d(1, 3, 1)}).attach(engine)
    seen = []

    def log_and_raise(engine, e):
        seen.append(str(e))
        raise e

    engine.add_event_handler(Events.EXCEPTION_RAISED, log_and_raise)
    with pytest.raises(RuntimeError, match="a broken case"):
        engine.run([0, 1], max_epochs=1)
    assert seen and set(seen) == {"a broken case"}  # ignite fires the event at each level the error crosses
    assert list(tmp_path.iterdir()) == []


def _sgd_run(tmp_path, max_epochs: int, resume: bool, stop_after: int | None = None):
    """A small SGD fit under a plain ignite Engine with a TrainingState; returns (engine, network, epochs run)."""
    torch.manual_seed(0)
    network = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    epochs_run = []

    def step(engine, batch):
        optimizer.zero_grad()
        loss = (network(batch) - torch.rand(1)).pow(2).mean()  # draws from torch's generator, as augmentation does
        loss.backward()
        optimizer.step()

    engine = Engine(step)
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    TrainingState(
        str(tmp_path / "training_state.pt"), {"network": network, "optimizer": optimizer}, resume=resume
    ).attach(engine)
    if stop_after is not None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda e: e.terminate())
    engine.run([torch.ones(1, 2)] * 3, max_epochs=max_epochs)
    return engine, network, epochs_run


def test_a_resumed_run_goes_on_after_the_saved_epoch(tmp_path):
    _, whole, _ = _sgd_run(tmp_path / "whole", max_epochs=5, resume=False)
    _sgd_run(tmp_path / "split", max_epochs=5, resume=False, stop_after=2)
    engine, resumed, epochs_run = _sgd_run(tmp_path / "split", max_epochs=5, resume=True)
    assert epochs_run == [3, 4, 5] and engine.state.iteration == 15
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


@pytest.mark.parametrize("other_length", [4, 7])
def test_resuming_with_another_number_of_epochs_names_the_setting(tmp_path, other_length):
    """The restored schedule is as long as the interrupted run: fewer epochs would stop before its end, more would
    run past it."""
    _sgd_run(tmp_path, max_epochs=5, resume=False, stop_after=2)
    with pytest.raises(ValueError, match="resume with train#trainer#max_epochs 5"):
        _sgd_run(tmp_path, max_epochs=other_length, resume=True)


def test_resuming_from_a_file_of_something_else_names_it(tmp_path):
    torch.save({"weight": torch.zeros(1)}, tmp_path / "training_state.pt")  # e.g. a model.pt copied there
    with pytest.raises(ValueError, match="is no training state of this bundle"):
        _sgd_run(tmp_path, max_epochs=2, resume=True)


def test_resuming_with_another_network_names_the_settings(tmp_path):
    _sgd_run(tmp_path, max_epochs=5, resume=False, stop_after=2)
    state = torch.load(tmp_path / "training_state.pt", map_location="cpu", weights_only=True)
    state["network"]["weight"] = torch.zeros(3, 2)  # as if saved by a network with 3 outputs
    torch.save(state, tmp_path / "training_state.pt")
    with pytest.raises(
        ValueError, match="network saved in .* does not fit this run's network .*network_name.*differ in shape"
    ):
        _sgd_run(tmp_path, max_epochs=5, resume=True)


def test_a_fresh_run_warns_that_it_will_replace_an_earlier_state(tmp_path, caplog):
    _sgd_run(tmp_path, max_epochs=2, resume=False)
    with caplog.at_level("WARNING", logger="scripts.handlers"):
        _sgd_run(tmp_path, max_epochs=2, resume=False)
    assert "epoch 2 of 2" in caplog.text and "--resume True" in caplog.text


def test_the_state_file_is_replaced_whole(tmp_path):
    """Written under another name and renamed: no partial file is left, and the state is the last epoch's."""
    _sgd_run(tmp_path, max_epochs=3, resume=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training_state.pt"]
    state = torch.load(tmp_path / "training_state.pt", map_location="cpu", weights_only=True)
    assert state["trainer"]["iteration"] == 3 * 3 and sorted(state) == ["network", "optimizer", "rng", "trainer"]


def test_a_resumed_run_keeps_the_better_model_of_the_interrupted_run(tmp_path):
    """The interrupted run validated 0.9 and saved model.pt; after the resume a validation of 0.8 must not replace it
    (a CheckpointSaver that forgot the 0.9 would)."""
    from monai.handlers import CheckpointSaver

    def validate(score: float, network: torch.nn.Module, resume: bool, trainer: Engine) -> None:
        evaluator = Engine(lambda engine, batch: None)
        evaluator.state.key_metric_name = "val_mean_dice"
        evaluator.state.best_metric, evaluator.state.best_metric_epoch = -1, -1
        saver = CheckpointSaver(str(tmp_path), {"model": network}, save_key_metric=True, key_metric_filename="model.pt")
        state = TrainingState(
            str(tmp_path / "training_state.pt"),
            {"network": network},
            resume=resume,
            evaluator=evaluator,
            best_saver=saver,
        )
        state.attach(trainer)
        if resume:
            trainer.run([0], max_epochs=1)  # STARTED loads the state (the run had finished its one epoch)
            torch.nn.init.constant_(network.weight, 2.0)  # as further training would change it
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(val_mean_dice=score))
        saver.attach(evaluator)
        evaluator.run([0])
        if not resume:
            evaluator.state.best_metric, evaluator.state.best_metric_epoch = score, 1  # as MONAI's evaluator records
            trainer.run([0], max_epochs=1)  # EPOCH_COMPLETED saves the state

    first = torch.nn.Linear(1, 1)
    torch.nn.init.constant_(first.weight, 1.0)
    validate(0.9, first, resume=False, trainer=Engine(lambda engine, batch: None))
    validate(0.8, torch.nn.Linear(1, 1), resume=True, trainer=Engine(lambda engine, batch: None))
    kept = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert kept["weight"].item() == 1.0
