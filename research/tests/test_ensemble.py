"""research.ensemble: the members of research/configs/experiments/ensemble.json and the errors a user can cause."""

import pytest
import torch

from research.ensemble import ensemble_members, ensemble_pred_keys
from scripts.networks import XUNet
from scripts.precision import AutocastForward

FEATURES = (4, 4, 8, 8, 16, 4)


def _network(seed: int) -> XUNet:
    torch.manual_seed(seed)
    return XUNet(3, 1, 3, features=FEATURES)


def test_members_are_independent_copies_with_their_own_weights(tmp_path):
    paths = []
    for seed in (1, 2):
        paths.append(tmp_path / f"m{seed}.pt")
        torch.save(_network(seed).state_dict(), paths[-1])
    torch.save({"model": _network(3).state_dict()}, tmp_path / "wrapped.pt")  # CheckpointSaver's other layout
    template = _network(0)
    members = ensemble_members(template, [*paths, tmp_path / "wrapped.pt"])
    assert ensemble_pred_keys(members) == ["pred0", "pred1", "pred2"]
    for member, seed in zip(members, (1, 2, 3)):
        assert not member.training
        for name, value in _network(seed).state_dict().items():
            assert torch.equal(member.state_dict()[name], value)
    assert not torch.equal(template.final_conv.weight, members[0].final_conv.weight)


def test_members_run_in_the_configured_precision(tmp_path):
    torch.save(_network(1).state_dict(), tmp_path / "m.pt")
    (member,) = ensemble_members(_network(0), [tmp_path / "m.pt"], precision="bfloat16")
    assert isinstance(member, AutocastForward) and not member.training
    assert member(torch.randn(1, 1, 32, 32, 32)).dtype == torch.float32


@pytest.mark.parametrize("checkpoints", ["models/model.pt", []])
def test_the_setting_must_be_a_list_of_files(checkpoints):
    with pytest.raises(ValueError, match="ensemble_ckpts"):
        ensemble_members(_network(0), checkpoints)


def test_a_checkpoint_of_another_network_names_the_file(tmp_path):
    torch.save(XUNet(3, 1, 3, features=(8, 8, 16, 16, 32, 8)).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="wide.pt.*ensemble_ckpts.*network_options.*differ in shape"):
        ensemble_members(_network(0), [tmp_path / "wide.pt"])
