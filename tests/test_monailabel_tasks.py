"""Training as MONAI Label 0.8.5's BundleTrainTask runs the bundle, without MONAI Label installed.

BundleTrainTask (monailabel/tasks/train/bundle.py) overrides exactly these config ids: bundle_root, device,
train#trainer#max_epochs, train#dataset#data and validate#dataset#data (lists of {"image", "label"} from its
datastore, split by the request's val_split: 0 gives an empty validation list) and train#handlers (the config's own
list with a CheckpointLoader of models/model.pt inserted first, strict=False). With one device it calls
monai.bundle.run(run_id="run", init_id=None, final_id=None, ...); with several (or force_multi_gpu) it writes the
overridden train.json as configs/monailabel_train.json and runs torchrun with [that, multi_gpu_train.json]. The
tests below do the same on a copy of the bundle, as MONAI Label's app folder holds one. The real server is driven in
tests/test_monailabel_server.py.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from conftest import BUNDLE_ROOT

CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"]


@pytest.fixture
def app_bundle(tmp_path):
    """A copy of the bundle as MONAI Label's app folder holds it (app/model/<name>), with the shipped model.pt."""
    bundle = tmp_path / "app" / "model" / "xunet_hippocampus"
    for part in ("configs", "scripts", "models"):
        shutil.copytree(BUNDLE_ROOT / part, bundle / part, ignore=shutil.ignore_patterns("__pycache__"))
    return bundle


def datastore(hippocampus_dir: Path, cases: list[str]) -> list[dict]:
    return [
        {
            "image": str(hippocampus_dir / "imagesTr" / f"{c}.nii.gz"),
            "label": str(hippocampus_dir / "labelsTr" / f"{c}.nii.gz"),
        }
        for c in cases
    ]


def bundle_train_task_overrides(bundle: Path, train: list[dict], val: list[dict], max_epochs: int) -> dict:
    """BundleTrainTask.__call__'s overrides for a request {"max_epochs": max_epochs} on the CPU."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    train_handlers = parser.get("train#handlers", [])
    train_handlers.insert(
        0,
        {
            "_target_": "CheckpointLoader",
            "load_path": str(bundle / "models" / "model.pt"),
            "load_dict": {"model": "$@network"},
            "strict": False,
        },
    )
    return {
        "bundle_root": str(bundle),
        "train#trainer#max_epochs": max_epochs,
        "train#dataset#data": train,
        "device": "cpu",
        "train#handlers": train_handlers,
        "validate#dataset#data": val,
    }


def run_single(bundle: Path, overrides: dict) -> None:
    """BundleTrainTask.run_single_gpu."""
    import monai.bundle

    monai.bundle.run(
        run_id="run",
        init_id=None,
        final_id=None,
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "train.json"),
        **overrides,
    )


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_only_deployable_weights(bundle: Path, shipped: dict) -> None:
    """models/ holds model.pt alone (MONAI Label offers every models/*.pt); the state and the copy of the replaced
    model lie in models_state/."""
    assert [p.name for p in (bundle / "models").iterdir()] == ["model.pt"]
    state = sorted(p.name for p in (bundle / "models_state").iterdir())
    assert "training_state.pt" in state and len(state) == 2, state
    kept = next(p for p in (bundle / "models_state").iterdir() if p.name.startswith("model_"))
    assert all(torch.equal(weights(kept)[k], v) for k, v in shipped.items())


@pytest.mark.workflow
def test_one_epoch_with_a_validation_case_replaces_model_pt(app_bundle, hippocampus_dir):
    """max_epochs 1 with train.json's val_interval (10 for a real run): validation follows the epochs, runs after
    epoch 1 and saves its model.pt; before, check_schedule refused the run (HTTP 500 in MONAI Label)."""
    shipped = weights(app_bundle / "models" / "model.pt")
    data = datastore(hippocampus_dir, CASES)
    # 3 training cases: 2 iterations of batch_size 2 (the first at learning rate 0, the warm-up's start)
    run_single(app_bundle, bundle_train_task_overrides(app_bundle, data[:3], data[3:], max_epochs=1))
    trained = weights(app_bundle / "models" / "model.pt")
    assert trained.keys() == shipped.keys()
    assert any(not torch.equal(trained[k], shipped[k]) for k in shipped)  # written by this run
    assert_only_deployable_weights(app_bundle, shipped)


@pytest.mark.workflow
def test_no_validation_case_saves_the_last_weights(app_bundle, hippocampus_dir):
    """val_split 0 in the request: validate#dataset#data is empty, so nothing would ever save model.pt by its
    validation score; the last epoch's weights are saved instead (as with val_interval 0)."""
    shipped = weights(app_bundle / "models" / "model.pt")
    run_single(
        app_bundle, bundle_train_task_overrides(app_bundle, datastore(hippocampus_dir, CASES[:3]), [], max_epochs=1)
    )
    trained = weights(app_bundle / "models" / "model.pt")
    assert any(not torch.equal(trained[k], shipped[k]) for k in shipped)
    assert_only_deployable_weights(app_bundle, shipped)


@pytest.mark.workflow
def test_multi_gpu_path_with_fewer_validation_cases_than_processes(app_bundle, hippocampus_dir, tmp_path):
    """BundleTrainTask's multi-GPU path: the overridden train.json exported as configs/monailabel_train.json, then
    torchrun with multi_gpu_train.json, two processes (Gloo on the CPU). A small datastore gives fewer validation
    cases than processes (here 1 for 2), which MONAI's DistributedSampler refused; MONAI Label still answers 200 when
    torchrun fails, so the proof is a new model.pt."""
    shipped = weights(app_bundle / "models" / "model.pt")
    shipped_mtime = (app_bundle / "models" / "model.pt").stat().st_mtime_ns
    data = datastore(hippocampus_dir, CASES)
    overrides = bundle_train_task_overrides(app_bundle, data[:2], data[3:], max_epochs=1)
    parser = ConfigParser()
    parser.read_config(str(app_bundle / "configs" / "train.json"))
    parser.config.update({"bundle_root": str(app_bundle)})
    for key, value in overrides.items():
        parser.set(value, key)
    train_path = app_bundle / "configs" / "monailabel_train.json"
    ConfigParser.export_config_file(parser.config, str(train_path), indent=2)
    configs = [str(train_path), str(app_bundle / "configs" / "multi_gpu_train.json")]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "run",
        "--meta_file",
        str(app_bundle / "configs" / "metadata.json"),
        "--config_file",
        repr(configs),
        "--logging_file",
        str(app_bundle / "configs" / "logging.conf"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "val_mean_dice" in done.stdout + done.stderr
    trained = weights(app_bundle / "models" / "model.pt")
    assert not any(k.startswith("module.") for k in trained) and trained.keys() == shipped.keys()
    # written by this run (its single iteration per process is the warm-up's first, at learning rate 0, so the
    # weights are the shipped ones again)
    assert (app_bundle / "models" / "model.pt").stat().st_mtime_ns != shipped_mtime
    train_path.unlink()  # MONAI Label leaves it in configs/; it is no *.pt, so no model choice
    assert_only_deployable_weights(app_bundle, shipped)
    assert json.loads((app_bundle / "configs" / "multi_gpu_train.json").read_text())  # untouched, still JSON
