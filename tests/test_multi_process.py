"""The multi_gpu_* overlays under torchrun: two processes on the CPU (Gloo) train, checkpoint and evaluate.

The same overlays use NCCL and one GPU per process when CUDA is available; only the backend and the device
differ, so two CPU processes test the distributed logic: sampler, DistributedDataParallel, rank-0 reporting and
saving, metric gathering.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from conftest import BUNDLE_ROOT, CONFIGS, EVALUATE, META, TINY_NET, TRAIN, exception_chain, own_run_dirs
from scripts.distributed import TORCHRUN_VARIABLES

MULTI_TRAIN = [TRAIN, str(CONFIGS / "multi_gpu_train.json")]
MULTI_EVALUATE = EVALUATE + [str(CONFIGS / "multi_gpu_evaluate.json")]


def _torchrun_command(
    run_id: str, config_files: list[str], tmp: Path, data_dir: Path, *extra: str, val_interval: str | None = "1"
) -> tuple[list[str], dict]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        run_id,
        "--meta_file",
        META,
        "--config_file",
        repr(config_files),
        "--bundle_root",
        str(BUNDLE_ROOT),
        "--dataset_dir",
        str(data_dir),
        "--ckpt_dir",
        str(tmp / "models"),
        "--output_dir",
        str(tmp / "eval"),
        "--tensorboard_dir",
        str(tmp / "runs"),
        "--data_limit",
        "4",
        "--num_workers",
        "0",
        "--patch_size",
        "[32, 32, 32]",
        "--network_options",
        repr(TINY_NET),
        "--download",
        "False",
        *extra,
    ]
    if val_interval is not None:  # None: the configs' own
        cmd += ["--val_interval", val_interval]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return cmd, env


def _torchrun(
    run_id: str, config_files: list[str], tmp: Path, data_dir: Path, *extra: str, val_interval: str | None = "1"
) -> str:
    cmd, env = _torchrun_command(run_id, config_files, tmp, data_dir, *extra, val_interval=val_interval)
    # from another directory: the overlays must find scripts/ through bundle_root, as the single-process ones do
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def trained_two_processes(tmp_path_factory, hippocampus_dir):
    tmp = tmp_path_factory.mktemp("ddp")
    log = _torchrun("training", MULTI_TRAIN, tmp, hippocampus_dir, "--train#trainer#max_epochs", "2")
    return tmp, log


def test_two_processes_train_and_save_a_plain_state_dict(trained_two_processes):
    tmp, log = trained_two_processes
    state = torch.load(tmp / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "final_conv.weight" in state and not any(k.startswith("module.") for k in state)
    from scripts.networks import XUNet

    XUNet(3, 1, 3, features=TINY_NET["xunet"]["features"]).load_state_dict(state, strict=True)
    # rank 0 alone reports: each epoch's validation is logged once, not once per process
    assert log.count("Epoch[2] Metrics -- train_mean_dice") == 1
    assert log.count("Epoch[2] Metrics -- val_") == 1


def test_two_processes_train_on_all_cases_and_save_the_last_weights(tmp_path, hippocampus_dir):
    """train_all_cases.json under torchrun: no validation, the final weights saved once, unwrapped from DDP."""
    log = _torchrun(
        "training",
        MULTI_TRAIN[:1] + [str(CONFIGS / "train_all_cases.json")] + MULTI_TRAIN[1:],
        tmp_path,
        hippocampus_dir,
        "--train#trainer#max_epochs",
        "1",
        val_interval=None,
    )
    assert "val_" not in log
    # the final weights, and the state --resume goes on from (written once, by rank 0, unwrapped from DDP too)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.pt"]
    assert sorted(p.name for p in (tmp_path / "models_state").iterdir()) == ["training_state.pt"]
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state)
    training_state = torch.load(tmp_path / "models_state" / "training_state.pt", map_location="cpu", weights_only=True)
    assert training_state["network"].keys() == state.keys()
    from scripts.networks import XUNet

    XUNet(3, 1, 3, features=TINY_NET["xunet"]["features"]).load_state_dict(state, strict=True)


def test_two_processes_evaluate_every_case_once(trained_two_processes, hippocampus_dir):
    tmp, _ = trained_two_processes
    _torchrun("evaluating", MULTI_EVALUATE, tmp, hippocampus_dir)
    rows = (tmp / "eval" / "val_mean_dice_raw.csv").read_text().strip().splitlines()
    names = [row.split("\t")[0] for row in rows[1:]]
    assert rows[0].startswith("filename")
    assert len(names) == 4 and len(set(names)) == 4  # gathered from both ranks, none twice


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc): torchrun starts each worker in a session of its own, so
    killing torchrun's process group would leave the workers training."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(child) for child in children.read_text().split()]
            except OSError:  # the thread or process ended meanwhile
                pass
    return tree


def _running(pid: int) -> bool:
    try:  # a killed process not yet reaped by its new parent is a zombie ("Z"): it no longer runs
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_processes_killed_mid_run_resume_to_the_end(tmp_path, hippocampus_dir):
    """torchrun killed (SIGKILL, the agent and both workers) once the first epoch's state is on disk, then the same
    command with --resume True: it goes on after the saved epoch and trains to the last."""
    import signal
    import time

    epochs = "6"
    cmd, env = _torchrun_command(
        "training", MULTI_TRAIN, tmp_path, hippocampus_dir, "--train#trainer#max_epochs", epochs
    )
    state_file = tmp_path / "models_state" / "training_state.pt"
    with open(tmp_path / "killed.log", "w") as log:
        run = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while not state_file.exists():
            assert run.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no training state after 300 s"
            time.sleep(0.1)
        tree = _process_tree(run.pid)
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        run.wait()
        while any(_running(pid) for pid in tree):
            assert time.monotonic() < deadline + 60, "the killed workers did not stop"
            time.sleep(0.1)
    saved = torch.load(state_file, map_location="cpu", weights_only=True)["trainer"]
    saved_epoch = saved["iteration"] // saved["epoch_length"]
    assert 1 <= saved_epoch < int(epochs)
    log = _torchrun(
        "training", MULTI_TRAIN, tmp_path, hippocampus_dir, "--train#trainer#max_epochs", epochs, "--resume", "True"
    )
    assert f"after epoch {saved_epoch} of {epochs}" in log
    assert log.count(f"Epoch[{epochs}] Metrics -- val_") == 1
    final = torch.load(state_file, map_location="cpu", weights_only=True)["trainer"]
    assert final["iteration"] == int(epochs) * saved["epoch_length"]


def test_overlay_without_torchrun_says_how_to_launch(tmp_path, hippocampus_dir, monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    workflow = ConfigWorkflow(
        config_file=MULTI_TRAIN,
        meta_file=META,
        workflow_type="train",
        bundle_root=str(BUNDLE_ROOT),
        dataset_dir=str(hippocampus_dir),
        download=False,
    )
    with pytest.raises(Exception) as err:
        workflow.initialize()
    message = "".join(str(e) for e in exception_chain(err.value))
    assert "torchrun" in message and "LOCAL_RANK" in message


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("workflow_type,config", [("train", MULTI_TRAIN), ("eval", MULTI_EVALUATE)])
def test_overlays_keep_every_bundle_property(workflow_type, config, hippocampus_dir, tmp_path, monkeypatch):
    """A one-process group in this process (what torchrun --nproc_per_node=1 sets up): all property ids resolve."""
    for name, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }.items():
        monkeypatch.setenv(name, value)
    workflow = ConfigWorkflow(
        config_file=config,
        meta_file=META,
        workflow_type=workflow_type,
        bundle_root=str(BUNDLE_ROOT),
        dataset_dir=str(hippocampus_dir),
        download=False,
        output_dir=str(tmp_path),
        data_limit=2,
        **own_run_dirs(workflow_type, tmp_path),
    )
    try:
        workflow.initialize()
        assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == 1
        assert workflow.check_properties() in (None, [])
    finally:
        workflow.finalize()
    assert not torch.distributed.is_initialized()
