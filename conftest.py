"""Shared pytest set-up: the bundle root on sys.path and the shared data locations."""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

BUNDLE_ROOT = Path(__file__).resolve().parent
if str(BUNDLE_ROOT) not in sys.path:
    sys.path.insert(0, str(BUNDLE_ROOT))

SHARED_DATA = Path(os.environ.get("XUNET_SHARED_DATA", BUNDLE_ROOT.parent / "shared" / "data"))
HIPPOCAMPUS_DIR = SHARED_DATA / "Task04_Hippocampus"
CONFIGS = BUNDLE_ROOT / "configs"
META = str(CONFIGS / "metadata.json")
TRAIN = str(CONFIGS / "train.json")
EVALUATE = [TRAIN, str(CONFIGS / "evaluate.json")]
TRAIN_ALL_CASES = [TRAIN, str(CONFIGS / "train_all_cases.json")]
INFER = str(CONFIGS / "inference.json")
SCHEMA = SHARED_DATA.parent / "monai" / "schemas" / "meta_schema_20240725.json"
TINY_NET = {"xunet": {"features": [4, 4, 8, 8, 16, 4]}}


def quick_overrides(tmp: Path, data_dir: Path) -> dict:
    """Settings that make the training workflow take seconds: 4 cases, tiny net and patch, no workers."""
    return {
        "bundle_root": str(BUNDLE_ROOT),
        "dataset_dir": str(data_dir),
        "ckpt_dir": str(tmp / "models"),
        "output_dir": str(tmp / "eval"),
        "tensorboard_dir": str(tmp / "runs"),
        "data_limit": 4,
        "num_workers": 0,
        "patch_size": [32, 32, 32],  # XUNet pools 4 times: 2 voxels left for instance norm
        "network_options": TINY_NET,
        "val_interval": 1,
        "download": False,
    }


def own_run_dirs(workflow_type: str, tmp: Path) -> dict:
    """A training workflow writes ckpt_dir/model.pt and TensorBoard logs: give them folders under tmp (evaluation
    and inference read the shipped model)."""
    return {"ckpt_dir": str(tmp / "models"), "tensorboard_dir": str(tmp / "runs")} if workflow_type == "train" else {}


def exception_chain(exc):
    """The exception and every exception it was raised from or during, outermost first."""
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


WORKFLOW_FIXTURES = {"hippocampus_dir", "trained"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    """A test that reads the shared data (directly or through a trained run) is a workflow test."""
    for item in items:
        if item.get_closest_marker("monailabel"):  # its own tier, in its own environment (.ci/monailabel)
            continue
        if WORKFLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.workflow)


@pytest.fixture(scope="session")
def bundle_root() -> Path:
    return BUNDLE_ROOT


@pytest.fixture(scope="session")
def hippocampus_dir() -> Path:
    if not (HIPPOCAMPUS_DIR / "dataset.json").is_file():
        pytest.fail(
            f"MSD Task04_Hippocampus not found at {HIPPOCAMPUS_DIR}: put ../shared beside the repo "
            "or set XUNET_SHARED_DATA to the folder holding Task04_Hippocampus."
        )
    return HIPPOCAMPUS_DIR


@pytest.fixture(autouse=True)
def bundle_untouched():
    """No test may write into the repository: not into the bundle's models/ (a test training with the default
    ckpt_dir would replace the shipped weights, or leave copies of them there), nor a new folder beside it (runs/,
    eval/, models_state/ from a workflow left at its defaults). Checked around each test, so the failure names the
    test that wrote there (a session-wide check reports it as an error of whichever test ran last)."""
    models = BUNDLE_ROOT / "models"

    def snapshot():
        top = {p.name for p in BUNDLE_ROOT.iterdir() if not p.name.startswith(".") and p.name != "__pycache__"}
        return top, {p.name: p.stat().st_mtime_ns for p in models.iterdir()}

    before = snapshot()
    yield
    after = snapshot()
    created = sorted(after[0] - before[0])
    for name in created:  # removed, so that the next test that writes there is named too
        shutil.rmtree(BUNDLE_ROOT / name, ignore_errors=True)
    assert after[1] == before[1], f"a test wrote into {models}: give its workflow a ckpt_dir under tmp_path"
    assert not created, (
        f"a test created {created} in {BUNDLE_ROOT}: give its workflow tensorboard_dir, "
        "output_dir and ckpt_dir under tmp_path"
    )


def msd_subset_folder(folder: Path, hippocampus_dir: Path, cases: list[str]) -> Path:
    """An MSD-layout folder (dataset.json, imagesTr, labelsTr) listing only ``cases`` of the shared data, as links."""
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
        for case in cases:
            (folder / sub / f"{case}.nii.gz").symlink_to(hippocampus_dir / sub / f"{case}.nii.gz")
    entries = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases]
    (folder / "dataset.json").write_text(json.dumps({"training": entries}))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, hippocampus_dir):
    """Train two epochs on 4 + 4 shared cases; returns the run's folder."""
    tmp = tmp_path_factory.mktemp("train")
    workflow = ConfigWorkflow(
        config_file=TRAIN,
        meta_file=META,
        workflow_type="train",
        **{**quick_overrides(tmp, hippocampus_dir), "train#trainer#max_epochs": 2},
    )
    workflow.initialize()
    workflow.run()
    trainer = workflow.trainer
    workflow.finalize()
    assert trainer.state.epoch == 2
    assert np.isfinite(float(trainer.state.output[0]["loss"]))
    return tmp
