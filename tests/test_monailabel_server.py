"""The bundle in a real MONAI Label server: the stock monaibundle sample app of monailabel 0.8.5, driven over HTTP.

MONAI Label runs in its own environment (requirements-monailabel.txt, built by .ci/monailabel in
<checkout>/.venv-label, or the folder XUNET_MONAILABEL_VENV names); this test runs in the bundle's environment and
talks to the server on 127.0.0.1 only. The server gets what a user sets up: the sample app copied from monailabel's
wheel, this bundle copied to app/model/xunet_hippocampus, a studies folder of four labelled hippocampus cases
(labels/final/), `monailabel start_server --conf models xunet_hippocampus --conf zoo_source ngc` (offline: the
bundle is found locally and nothing is downloaded).

Run with: .ci/monailabel (or, with .venv-label built: .venv/bin/python -m pytest -m monailabel).
"""

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import BUNDLE_ROOT

LABEL_VENV = Path(os.environ.get("XUNET_MONAILABEL_VENV", BUNDLE_ROOT / ".venv-label"))
MODEL = "xunet_hippocampus"
CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"]
STARTUP_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `monailabel start_server` and the folders it was given."""

    def __init__(self, root: Path, process: subprocess.Popen, port: int, log: Path) -> None:
        self.root, self.process, self.port, self.log = root, process, port, log
        self.bundle = root / "app" / "model" / MODEL
        self.studies = root / "studies"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 600) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url(path), data=data, method=method, headers={"Content-Type": "application/json"} if data else {}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def info(self) -> dict:
        status, body = self.request("GET", "/info/")
        assert status == 200, body[:2000]
        return json.loads(body)

    def infer(self, image: str) -> np.ndarray:
        status, body = self.request("POST", f"/infer/{MODEL}?image={image}&output=image")
        assert status == 200, f"/infer answered {status}: {body[:2000]!r}\n{self.log_tail()}"
        label = nib.Nifti1Image.from_bytes(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)
        return np.asarray(label.dataobj)

    def train(self, **params) -> dict:
        status, body = self.request("POST", f"/train/{MODEL}?run_sync=true", params)
        assert status == 200, f"/train answered {status}: {body[:2000]!r}\n{self.log_tail()}"
        return json.loads(body)


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _changed(before: dict, after: dict) -> bool:
    return before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def server(tmp_path_factory, hippocampus_dir):
    monailabel = LABEL_VENV / "bin" / "monailabel"
    if not monailabel.is_file():
        pytest.fail(
            f"no MONAI Label environment at {LABEL_VENV}: build it with .ci/monailabel (or point "
            "XUNET_MONAILABEL_VENV at one installed from requirements-monailabel.txt)"
        )
    root = tmp_path_factory.mktemp("monailabel")
    # the stock sample app, as the wheel installs it (sys.prefix/monailabel/sample-apps)
    shutil.copytree(LABEL_VENV / "monailabel" / "sample-apps" / "monaibundle", root / "app")
    bundle = root / "app" / "model" / MODEL
    for part in ("configs", "scripts", "models", "LICENSE"):
        source = BUNDLE_ROOT / part
        if source.is_dir():
            shutil.copytree(source, bundle / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, bundle / part)
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for case in CASES:
        shutil.copy2(hippocampus_dir / "imagesTr" / f"{case}.nii.gz", studies / f"{case}.nii.gz")
        shutil.copy2(hippocampus_dir / "labelsTr" / f"{case}.nii.gz", studies / "labels" / "final" / f"{case}.nii.gz")

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # the monailabel script runs `python` (and training runs `torchrun`) from PATH, as in an activated environment
    env["PATH"] = f"{LABEL_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    log = root / "server.log"
    cmd = [
        str(monailabel),
        "start_server",
        "--app",
        str(root / "app"),
        "--studies",
        str(studies),
        "--conf",
        "models",
        MODEL,
        "--conf",
        "zoo_source",
        "ngc",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    running = Server(root, process, port, log)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert process.poll() is None, f"the server exited ({process.returncode}):\n{running.log_tail()}"
            assert time.monotonic() < deadline, f"no answer on port {port} after {STARTUP_S} s:\n{running.log_tail()}"
            try:
                if running.request("GET", "/info/", timeout=5)[0] == 200:
                    break
            except OSError:  # not listening yet
                time.sleep(1)
        yield running
    finally:
        # the server by its process id (the script execs python: the Popen is the server itself); training ran
        # synchronously (run_sync), so it has no child left
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.mark.monailabel
def test_info_lists_the_model_its_labels_and_model_pt_alone(server):
    info = server.info()
    model = info["models"][MODEL]
    assert model["type"] == "segmentation" and model["dimension"] == 3
    assert model["labels"] == {"anterior": 1, "posterior": 2}
    assert model["config"]["model_filename"] == ["model.pt"]
    assert info["trainers"][MODEL]["config"]["model_filename"] == ["model.pt"]
    assert info["datastore"]["total"] == len(CASES) and info["datastore"]["completed"] == len(CASES)


@pytest.mark.monailabel
def test_infer_train_infer(server, hippocampus_dir):
    """/infer with the shipped weights, /train for one epoch (replaces model.pt), /infer with the new weights, then
    the multi-GPU path of BundleTrainTask (torchrun, two processes on the CPU) replaces model.pt again."""
    image = CASES[0]
    truth = np.asarray(nib.load(hippocampus_dir / "labelsTr" / f"{image}.nii.gz").dataobj)

    # the shipped model: a label of the image's shape holding both hippocampus parts, close to the reference
    first = server.infer(image)
    assert first.shape == truth.shape
    assert set(np.unique(first)) == {0, 1, 2}
    for part in (1, 2):
        dice = 2 * np.sum((first == part) & (truth == part)) / (np.sum(first == part) + np.sum(truth == part))
        assert dice > 0.8, (part, dice)

    # one epoch (train.json's val_interval is 10: it follows the epochs), fine-tuning the shipped weights on 3
    # cases, validating on 1 (the request's default val_split 0.2)
    model_pt = server.bundle / "models" / "model.pt"
    shipped = _weights(model_pt)
    assert server.train(max_epochs=1) == {}
    trained = _weights(model_pt)
    assert _changed(shipped, trained), "model.pt was not replaced:\n" + server.log_tail()
    # nothing but deployable weights in models/: the training state and the replaced model are in models_state/
    assert [p.name for p in (server.bundle / "models").iterdir()] == ["model.pt"]
    state = sorted(p.name for p in (server.bundle / "models_state").iterdir())
    assert "training_state.pt" in state and any(name.startswith("model_") for name in state)
    assert server.info()["models"][MODEL]["config"]["model_filename"] == ["model.pt"]

    # the next /infer uses the new weights
    second = server.infer(image)
    assert second.shape == truth.shape and set(np.unique(second)) <= {0, 1, 2}
    assert not np.array_equal(first, second), "the same segmentation after training: the old weights were used"

    # several GPUs (here forced, on the CPU): BundleTrainTask writes configs/monailabel_train.json and runs torchrun
    # with multi_gpu_train.json; it answers 200 even when torchrun fails, so the proof is a new model.pt (written:
    # with 3 training cases over 2 processes, its one iteration is the warm-up's first, at learning rate 0)
    before = model_pt.stat().st_mtime_ns
    assert server.train(max_epochs=1, force_multi_gpu=True, gpus="0,1") == {}
    assert "Return code: 0" in server.log.read_text(errors="replace"), server.log_tail()
    assert model_pt.stat().st_mtime_ns != before, "model.pt was not replaced by torchrun:\n" + server.log_tail()
    assert _weights(model_pt).keys() == trained.keys()  # a plain state dict, not DistributedDataParallel's
    assert [p.name for p in (server.bundle / "models").iterdir()] == ["model.pt"]
    third = server.infer(image)
    assert third.shape == truth.shape
