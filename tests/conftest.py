"""Shared pytest set-up: the bundle root on sys.path and the shared data locations."""

import json
import os
import sys
from pathlib import Path

import pytest

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
if str(BUNDLE_ROOT) not in sys.path:
    sys.path.insert(0, str(BUNDLE_ROOT))

SHARED_DATA = Path(os.environ.get("XUNET_SHARED_DATA", BUNDLE_ROOT.parent / "shared" / "data"))
HIPPOCAMPUS_DIR = SHARED_DATA / "Task04_Hippocampus"


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
def bundle_models_untouched():
    """No test may write into the bundle's own models/ folder (a test training with the default ckpt_dir would
    replace the shipped weights, or leave copies of them there). Checked around each test, so the failure names
    the test that wrote there (a session-wide check reports it as an error of whichever test ran last)."""
    folder = BUNDLE_ROOT / "models"

    def snapshot():
        return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    before = snapshot()
    yield
    assert snapshot() == before, f"a test wrote into {folder}: give its workflow a ckpt_dir under tmp_path"


def msd_subset_folder(folder: Path, hippocampus_dir: Path, cases: list[str]) -> Path:
    """An MSD-layout folder (dataset.json, imagesTr, labelsTr) listing only ``cases`` of the shared data, as links."""
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
        for case in cases:
            (folder / sub / f"{case}.nii.gz").symlink_to(hippocampus_dir / sub / f"{case}.nii.gz")
    entries = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases]
    (folder / "dataset.json").write_text(json.dumps({"training": entries}))
    return folder
