"""research.handlers: the averaged-weights saver of the weight-averaging experiment."""

import pytest
import torch
from ignite.engine import Engine

from research.handlers import AveragedWeightsSaver


def _fit_with_averages(tmp_path, momenta, fail_at=None):
    """A small SGD fit with one AveragedWeightsSaver per momentum; returns (the weights after each iteration, network)."""
    torch.manual_seed(0)
    network = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    history = [{k: v.clone() for k, v in network.state_dict().items()}]

    def step(engine, batch):
        if engine.state.iteration == fail_at:
            raise RuntimeError("a broken case")
        optimizer.zero_grad()
        network(batch).square().mean().backward()
        optimizer.step()
        history.append({k: v.clone() for k, v in network.state_dict().items()})

    engine = Engine(step)
    for m in momenta:
        AveragedWeightsSaver(network, momentum=m, save_dir=str(tmp_path / f"ema_{m}")).attach(engine)
    engine.run([torch.randn(4, 3) for _ in range(5)], max_epochs=2)
    return history, network


def _expected_average(history, momentum):
    average = {k: v.clone() for k, v in history[0].items()}  # EMAHandler starts from a copy of the network
    for weights in history[1:]:
        for k in average:
            average[k] = (1 - momentum) * average[k] + momentum * weights[k]
    return average


def test_each_average_of_the_weights_is_saved_with_its_own_momentum(tmp_path):
    """Two averages in one run: ignite's EMAHandler would read both momenta from one engine.state attribute."""
    momenta = (0.5, 0.1)
    history, network = _fit_with_averages(tmp_path, momenta)
    assert len(history) == 11
    for m in momenta:
        saved = torch.load(tmp_path / f"ema_{m}" / "model.pt", map_location="cpu", weights_only=True)
        expected = _expected_average(history, m)
        assert sorted(saved) == ["bias", "weight"]  # plain state dict, loads into the network as model.pt does
        assert all(torch.allclose(saved[k], expected[k], atol=1e-6) for k in expected)
    # averaging only watches: the network keeps its own last weights
    assert all(torch.equal(v, history[-1][k]) for k, v in network.state_dict().items())
    assert not torch.allclose(history[-1]["weight"], _expected_average(history, 0.1)["weight"])


def test_an_average_is_not_written_when_training_stops_on_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="a broken case"):
        _fit_with_averages(tmp_path, (0.1,), fail_at=3)
    assert not (tmp_path / "ema_0.1").exists() or list((tmp_path / "ema_0.1").iterdir()) == []


@pytest.mark.parametrize("momentum", [0.0, 1.0, -0.1, 2.0])
def test_a_momentum_outside_0_to_1_is_named(tmp_path, momentum):
    with pytest.raises(ValueError, match="momentum must lie between 0 and 1"):
        AveragedWeightsSaver(torch.nn.Linear(2, 1), momentum=momentum, save_dir=str(tmp_path))
