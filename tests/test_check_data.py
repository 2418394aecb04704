"""python -m scripts.check_data: a per-case report of a dataset folder, from the same checks the workflows run."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import BUNDLE_ROOT
from scripts.check_data import check_data
from scripts.checks import check_images
from scripts.data import msd_datalist


def _save(path: Path, data, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))


def _task(root: Path, cases: dict, duplicate: bool = False) -> Path:
    """An MSD task whose cases are {name: (label data, label affine)}; images are random, on np.eye(4)."""
    rng = np.random.default_rng(0)
    entries = []
    for name, (label, affine) in cases.items():
        _save(root / "imagesTr" / f"{name}.nii.gz", rng.random((12, 13, 14)).astype(np.float32))
        if label is not None:
            _save(root / "labelsTr" / f"{name}.nii.gz", label, affine)
        entries.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    if duplicate:
        entries.append(entries[0])
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"0": "background", "1": "a", "2": "b"}, "modality": {"0": "MRI"}, "training": entries})
    )
    return root


def _label(value=1.0, dtype=np.uint8):
    label = np.zeros((12, 13, 14), dtype)
    label[4:8, 4:8, 4:8] = value
    return label


FLIPPED = np.diag([-1.0, 1.0, 1.0, 1.0])
SHIFTED = np.eye(4)
SHIFTED[:3, 3] = (0, 2, 0)
COARSE = np.diag([1.0, 1.0, 1.5, 1.0])

BAD_CASES = {
    "flipped": (_label(), FLIPPED),
    "shifted": (_label(), SHIFTED),
    "coarse": (_label(), COARSE),
    "fractional": (_label(0.9999999, np.float32), None),
    "unknown": (_label(7), None),
}


def test_every_case_is_reported_with_the_workflows_own_message(tmp_path, capsys):
    task = _task(tmp_path / "Task", {"good": (_label(), None), **BAD_CASES})
    assert check_data(str(task)) == len(BAD_CASES)
    report = capsys.readouterr().out
    assert "  ok   good" in report and f"{len(BAD_CASES)} problem(s) found" in report
    with pytest.raises(ValueError) as err:  # what training and evaluation stop with
        msd_datalist(task, split="all", download=False)
    workflow_message = str(err.value)
    for name in BAD_CASES:
        [line] = [line for line in report.splitlines() if line.startswith(f"  FAIL {name}: ")]
        problem = line.split(": ", 1)[1]
        assert problem in workflow_message, name
    assert "orientation LAS" in report and "shifted by (0, 2, 0) mm" in report and "voxel size (1, 1, 1.5)" in report
    assert "[0.999999881] are not whole numbers" in report and "label values [7] are not among" in report


def test_a_dataset_json_listing_a_case_twice_or_a_missing_file_is_reported(tmp_path, capsys):
    assert check_data(str(_task(tmp_path / "twice", {"a": (_label(), None)}, duplicate=True))) == 1
    assert "FAIL dataset.json: " in capsys.readouterr().out
    assert check_data(str(_task(tmp_path / "missing", {"a": (_label(), None), "b": (None, None)}))) == 1
    report = capsys.readouterr().out
    assert "FAIL '" in report and "'./labelsTr/b.nii.gz' but the file is missing" in report and "  ok   a" in report


def test_a_folder_of_images_is_reported_with_its_prediction_names_and_output_dir(tmp_path, capsys):
    rng = np.random.default_rng(0)
    _save(tmp_path / "in" / "A.NII.GZ", rng.random((12, 13, 14)).astype(np.float32))
    _save(
        tmp_path / "in" / "metres.nii.gz",
        rng.random((12, 13, 14)).astype(np.float32),
        np.diag([0.001, 0.001, 0.001, 1.0]),
    )
    _save(tmp_path / "in" / "huge.nii.gz", rng.random((12, 13, 14)) * 1e30)
    assert check_data(str(tmp_path / "in"), output_dir=str(tmp_path / "out")) == 2
    report = capsys.readouterr().out
    assert "  ok   A.NII.GZ" in report and "FAIL metres.nii.gz" in report and "FAIL huge.nii.gz" in report
    assert f"ok   output_dir '{tmp_path / 'out'}'" in report and not (tmp_path / "out").exists()
    with pytest.raises(ValueError) as err:
        check_images([{"image": str(tmp_path / "in" / "metres.nii.gz")}])
    assert report.split("FAIL metres.nii.gz: ")[1].splitlines()[0] in str(err.value)


def test_the_command_line_exits_1_on_a_problem_and_0_when_all_is_well(tmp_path):
    good = _task(tmp_path / "good", {"a": (_label(), None)})
    bad = _task(tmp_path / "bad", {"a": (_label(), FLIPPED)})
    runs = {
        name: subprocess.run(
            [sys.executable, "-m", "scripts.check_data", str(folder)],
            cwd=BUNDLE_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        for name, folder in (("good", good), ("bad", bad))
    }
    assert runs["good"].returncode == 0 and "All cases can be used." in runs["good"].stdout
    assert runs["bad"].returncode == 1 and "FAIL a: " in runs["bad"].stdout and "Traceback" not in runs["bad"].stderr
