"""Files the bundle reads with torch.load (checkpoints, training state) fail with the file, the setting and the fix,
say when they were refused for safety, and never suggest weights_only=False."""

import os

import pytest
import torch

from scripts.checks import read_weights
from scripts.torch_files import BundleFileError, load_torch_file


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def _write(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "code":
        torch.save({"model": _RunsCode()}, path)
    elif kind == "whole_network":
        torch.save(torch.nn.Linear(2, 2), path)
    elif kind == "garbage":
        path.write_bytes(b"garbage" * 20)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "cut":
        torch.save({"w": torch.zeros(100)}, tmp_path / "whole.pt")
        path.write_bytes((tmp_path / "whole.pt").read_bytes()[:300])
    elif kind == "torchscript":
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    return path


@pytest.mark.parametrize(
    "kind, what",
    [
        (
            "code",
            "holds pickled Python objects or code (posix.system), which the bundle refuses to unpickle for safety",
        ),
        (
            "whole_network",
            "holds pickled Python objects or code (torch.nn.modules.linear.Linear), which the bundle refuses "
            "to unpickle for safety",
        ),
        ("garbage", "is not a file torch.save wrote, or is damaged or cut short"),
        ("empty", "is empty or cut short"),
        ("cut", "is not a file torch.save wrote, or is damaged or cut short"),
        ("torchscript", "is a TorchScript export"),
    ],
)
def test_each_unreadable_file_says_what_it_is_with_the_file_setting_and_fix(tmp_path, kind, what):
    path = _write(tmp_path, kind)
    with pytest.raises(BundleFileError) as err:
        load_torch_file(path, "resume", "train afresh")
    message = str(err.value)
    assert message.startswith(f"'{path}' (config id 'resume') {what}") and message.endswith("train afresh.")
    assert "weights_only" not in message and "trusted" not in message
    if "for safety" in what:  # a refused file is not a damaged copy: no advice to copy it again
        assert "sha256" not in message and "cut short" not in message
    else:
        assert "sha256" in message or kind == "torchscript"


def test_a_missing_file_names_the_setting(tmp_path):
    with pytest.raises(BundleFileError, match=r"missing.pt' \(config id 'ckpt_dir'\) does not exist: fix it"):
        load_torch_file(tmp_path / "missing.pt", "ckpt_dir", "fix it")


def test_a_checkpoint_refused_for_code_is_not_called_cut_short(tmp_path):
    with pytest.raises(ValueError) as err:
        read_weights(_write(tmp_path, "code"), "ckpt_dir")
    assert "refuses to unpickle for safety" in str(err.value) and "cut short" not in str(err.value)


def _fit(tmp_path, resume, max_epochs=2):
    from ignite.engine import Engine

    from scripts.handlers import TrainingState

    network = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    engine = Engine(lambda engine, batch: None)
    TrainingState(
        str(tmp_path / "training_state.pt"), {"network": network, "optimizer": optimizer}, resume=resume
    ).attach(engine)
    engine.run([0] * 2, max_epochs=max_epochs)
    return engine


def _foreign(tmp_path, kind):
    path = tmp_path / "training_state.pt"
    if kind in ("code", "garbage", "empty", "cut"):
        _write(tmp_path, kind).rename(path)
    elif kind == "list":
        torch.save([torch.zeros(1)], path)
    elif kind == "weights":  # a model.pt copied over it
        torch.save(torch.nn.Linear(2, 1).state_dict(), path)
    return path


KINDS = ["code", "garbage", "empty", "cut", "list", "weights"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_fresh_run_is_not_blocked_by_a_state_file_it_does_not_need(tmp_path, kind, caplog):
    path = _foreign(tmp_path, kind)
    with caplog.at_level("WARNING", logger="scripts.handlers"):
        engine = _fit(tmp_path, resume=False)
    assert engine.state.epoch == 2 and f"'{path}'" in caplog.text and "starts afresh" in caplog.text
    assert "weights_only" not in caplog.text
    state = torch.load(path, map_location="cpu", weights_only=True)  # replaced by this run's
    assert state["trainer"]["max_epochs"] == 2


@pytest.mark.parametrize("kind", KINDS)
def test_resuming_from_a_damaged_or_foreign_state_names_the_file_setting_and_fix(tmp_path, kind):
    path = _foreign(tmp_path, kind)
    with pytest.raises(BundleFileError) as err:
        _fit(tmp_path, resume=True)
    message = str(err.value)
    assert message.startswith(f"'{path}' (config id 'resume') ") and "train afresh without --resume" in message
    assert "weights_only" not in message
    assert ("refuses to unpickle for safety" in message) == (kind == "code")


def test_the_temporary_state_file_is_this_process_s_own(tmp_path, monkeypatch):
    import socket

    written = []
    original = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (written.append(str(f)), original(obj, f, *a, **k)))
    _fit(tmp_path, resume=False, max_epochs=1)
    assert written == [str(tmp_path / f"training_state.{socket.gethostname()}.{os.getpid()}.pt.partial")]
    assert [p.name for p in tmp_path.iterdir()] == ["training_state.pt"]


# --- through train.json / evaluate.json (ConfigWorkflow) ---


@pytest.mark.workflow
@pytest.mark.parametrize("kind", ["code", "cut"])
def test_training_runs_past_a_damaged_state_it_does_not_need_and_resume_names_it(hippocampus_dir, tmp_path, kind):
    from bundle_runs import error_text, training

    (tmp_path / "models_state").mkdir()  # state_dir: <ckpt_dir>_state
    state = _foreign(tmp_path / "models_state", kind)
    workflow = training(tmp_path, hippocampus_dir, resume=True)
    workflow.initialize()
    with pytest.raises(Exception) as err:
        workflow.run()
    message = error_text(err.value)
    assert f"'{state}' (config id 'resume') " in message and "train afresh without --resume" in message
    assert "weights_only" not in message
    assert ("refuses to unpickle for safety" in message) == (kind == "code")
    workflow = training(tmp_path, hippocampus_dir)  # a fresh run: the file is not needed (it warns: unit tests)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()
    assert torch.load(state, map_location="cpu", weights_only=True)["trainer"]["max_epochs"] == 1


@pytest.mark.workflow
def test_evaluation_refuses_a_checkpoint_holding_code_for_safety(hippocampus_dir, tmp_path):
    from bundle_runs import CONFIGS, META, TINY_NET, error_text
    from monai.bundle import ConfigWorkflow

    from conftest import BUNDLE_ROOT

    (tmp_path / "models").mkdir()
    _write(tmp_path, "code").rename(tmp_path / "models" / "model.pt")
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        meta_file=META,
        workflow_type="eval",
        bundle_root=str(BUNDLE_ROOT),
        dataset_dir=str(hippocampus_dir),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
        network_options=TINY_NET,
        download=False,
        device="cpu",
        num_workers=0,
    )
    with pytest.raises(Exception) as err:
        workflow.initialize()
    message = error_text(err.value)
    model = tmp_path / "models" / "model.pt"
    assert f"'{model}' (config id 'ckpt_dir') holds pickled Python objects or code" in message
    assert "refuses to unpickle for safety" in message and "cut short" not in message and "weights_only" not in message
