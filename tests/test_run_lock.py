"""One training per state_dir (scripts.run_lock): a second run is refused naming the first, stale locks of runs that
are gone are taken over, and the lock is released at the end."""

import json
import os
import socket
import subprocess
import sys

import pytest

from scripts.run_lock import LOCK_NAME, TrainingLock, _process_start


def _holder(folder, pid, host=None, process_start="same"):
    folder.mkdir(parents=True, exist_ok=True)
    start = _process_start(pid) if process_start == "same" else process_start
    (folder / LOCK_NAME).write_text(
        json.dumps(
            {
                "pid": pid,
                "host": host or socket.gethostname(),
                "process_start": start,
                "started": "2026-12-02 22:00:00 UTC",
                "command": "monai.bundle run --config_file configs/train.json",
            }
        )
    )


@pytest.fixture
def other_run():
    """A living process standing for another training."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def test_a_lock_is_taken_and_released(tmp_path):
    lock = TrainingLock(tmp_path / "models_state")
    path = lock.acquire()
    holder = json.loads(path.read_text())
    assert path == tmp_path / "models_state" / LOCK_NAME and holder["pid"] == os.getpid()
    assert holder["host"] == socket.gethostname() and holder["started"]
    lock.release()
    lock.release()
    assert sorted(os.listdir(tmp_path / "models_state")) == []


def test_a_second_run_is_refused_naming_the_first(tmp_path, other_run):
    _holder(tmp_path, other_run)
    with pytest.raises(RuntimeError) as err:
        TrainingLock(tmp_path).acquire()
    message = str(err.value)
    assert f"another training holds '{tmp_path / LOCK_NAME}' (config id 'state_dir')" in message
    assert f"pid {other_run} on host '{socket.gethostname()}', started 2026-12-02 22:00:00 UTC" in message
    assert "give this run its own --ckpt_dir" in message and f"delete '{tmp_path / LOCK_NAME}'" in message
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == other_run  # the other run's lock stays


def test_a_lock_held_on_another_host_is_refused_saying_so(tmp_path):
    _holder(tmp_path, 12345, host="another-node")
    with pytest.raises(RuntimeError, match="on another host: this one cannot tell whether it still runs"):
        TrainingLock(tmp_path).acquire()


@pytest.mark.parametrize("case", ["dead", "pid_reused", "no_such_pid"])
def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, case, other_run, caplog):
    if case == "dead":
        process = subprocess.Popen([sys.executable, "-c", "pass"])
        process.wait()
        _holder(tmp_path, process.pid)
    elif case == "pid_reused":  # the pid now belongs to a process started after the lock was written
        _holder(tmp_path, other_run, process_start="1")
    else:
        _holder(tmp_path, 2**22 + 7)  # above Linux's pid_max: no such process
    with caplog.at_level("WARNING", logger="scripts.run_lock"):
        TrainingLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "no longer exists" in caplog.text


def test_an_earlier_lock_of_this_process_is_its_own(tmp_path):
    TrainingLock(tmp_path).acquire()  # e.g. a workflow that was initialized and never finalized
    TrainingLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_state_dir_that_cannot_be_a_folder_is_named(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="state_dir '.*a_file/models_state': '.*a_file' is a file"):
        TrainingLock(tmp_path / "a_file" / "models_state").acquire()


# --- through train.json (ConfigWorkflow) ---


@pytest.mark.workflow
def test_a_training_into_a_ckpt_dir_in_use_stops_before_any_work(hippocampus_dir, tmp_path, other_run):
    from bundle_runs import error_text, training

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"the other run's best model")
    _holder(tmp_path / "models_state", other_run)
    workflow = training(tmp_path, hippocampus_dir)
    with pytest.raises(Exception) as err:
        workflow.initialize()
    assert f"pid {other_run} on host" in error_text(err.value)
    assert os.listdir(tmp_path / "models") == ["model.pt"]  # not even the copy of model.pt was made


@pytest.mark.workflow
def test_a_training_holds_the_lock_in_state_dir_and_releases_it(hippocampus_dir, tmp_path):
    from bundle_runs import training

    workflow = training(tmp_path, hippocampus_dir)
    workflow.initialize()
    assert workflow.parser.get_parsed_content("state_dir") == str(tmp_path / "models") + "_state"
    lock = tmp_path / "models_state" / LOCK_NAME
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    workflow.run()
    workflow.finalize()
    assert not lock.exists() and (tmp_path / "models" / "model.pt").is_file()
