"""scripts.handlers: the final-weights saver of training without a held-out fold."""

import pytest
import torch
from ignite.engine import Engine, Events

from scripts.handlers import FinalWeightsSaver


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
