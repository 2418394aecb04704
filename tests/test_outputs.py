"""No write destroys data the user did not ask to replace: prediction names, output_dir and the folders runs write
into (scripts.outputs), unit tests and inference through ConfigWorkflow."""

import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scripts.data import image_datalist
from scripts.outputs import (
    RECORD_NAME,
    PredictionNames,
    check_output_dir,
    check_outside_dataset,
    check_report_files,
    prediction_names,
    record_prediction,
)


def _image(path: Path, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).random((9, 10, 11)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return str(path)


def _task(root: Path, cases=("a", "b")) -> Path:
    """A small MSD-layout task: dataset.json, imagesTr, labelsTr."""
    for case in cases:
        _image(root / "imagesTr" / f"{case}.nii.gz")
        _image(root / "labelsTr" / f"{case}.nii.gz", seed=1)
    entries = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases]
    (root / "dataset.json").write_text(json.dumps({"training": entries}))
    return root


def test_each_input_gets_its_own_prediction_name(tmp_path):
    inputs = [
        str(tmp_path / "x" / "scan.nii.gz"),
        str(tmp_path / "y" / "scan.NII"),
        str(tmp_path / "x" / "c.nii"),
        str(tmp_path / "x" / "UP.NII.GZ"),
    ]
    names = prediction_names(inputs)
    assert names == {
        inputs[0]: "x_scan.nii.gz",
        inputs[1]: "y_scan.nii.gz",
        inputs[2]: "c.nii.gz",
        inputs[3]: "UP.nii.gz",
    }
    deeper = [str(tmp_path / "p1" / "t1" / "image.nii.gz"), str(tmp_path / "p2" / "t1" / "image.nii.gz")]
    assert sorted(prediction_names(deeper).values()) == ["p1_t1_image.nii.gz", "p2_t1_image.nii.gz"]


@pytest.mark.parametrize("pair", [("case.nii", "case.nii.gz"), ("case.nii.gz", "CASE.NII.GZ"), ("a.nii", "A.nii")])
def test_two_inputs_that_would_share_one_prediction_are_refused_naming_both(tmp_path, pair):
    inputs = [str(tmp_path / name) for name in pair]
    with pytest.raises(ValueError) as err:
        prediction_names(inputs)
    message = str(err.value)
    assert all(f"'{p}'" in message for p in inputs) and "would be saved as one prediction" in message


def test_an_output_dir_inside_the_data_read_is_refused(tmp_path):
    task = _task(tmp_path / "Task")
    images = image_datalist(task / "imagesTr")
    for out in (task / "labelsTr", task, task / "imagesTr", task / "imagesTr" / "pred", task / "new"):
        with pytest.raises(ValueError, match=f"'{out}', which lies inside the dataset '{task}"):
            check_output_dir(out, PredictionNames(images, out), task / "imagesTr")
    # a folder of images with no dataset.json around it: the folder itself is the data
    loose = [{"image": _image(tmp_path / "loose" / "s.nii.gz")}]
    with pytest.raises(ValueError, match="lies inside the dataset"):
        check_output_dir(tmp_path / "loose" / "out", PredictionNames(loose, tmp_path), tmp_path / "loose")
    assert sorted(p.name for p in (task / "labelsTr").iterdir()) == ["a.nii.gz", "b.nii.gz"]


def test_an_output_dir_reached_through_a_link_is_still_inside_the_data(tmp_path):
    task = _task(tmp_path / "Task")
    (tmp_path / "link").symlink_to(task / "labelsTr")
    (tmp_path / "inputs").symlink_to(task / "imagesTr")
    images = image_datalist(tmp_path / "inputs")
    with pytest.raises(ValueError, match="lies inside the dataset"):
        check_output_dir(tmp_path / "link", PredictionNames(images, tmp_path / "link"), tmp_path / "inputs")


def test_a_single_input_file_makes_only_itself_and_its_task_data(tmp_path):
    scan = [{"image": _image(tmp_path / "home" / "scan.nii.gz")}]
    out = tmp_path / "home" / "predictions"
    assert check_output_dir(out, PredictionNames(scan, out), scan[0]["image"]) == out
    with pytest.raises(ValueError, match="holds the dataset's file"):
        check_output_dir(tmp_path / "home", PredictionNames(scan, tmp_path), scan[0]["image"])
    task = _task(tmp_path / "Task")
    (tmp_path / "a_link.nii.gz").symlink_to(task / "imagesTr" / "a.nii.gz")
    linked = [{"image": str(tmp_path / "a_link.nii.gz")}]
    with pytest.raises(ValueError, match=f"lies inside the dataset '{task}'"):
        check_output_dir(task / "labelsTr", PredictionNames(linked, task), linked[0]["image"])


def test_a_file_that_is_not_an_earlier_prediction_of_the_same_input_stops_the_run(tmp_path):
    images = [{"image": _image(tmp_path / "in" / "a.nii.gz")}, {"image": _image(tmp_path / "in" / "b.nii.gz")}]
    out = tmp_path / "out"
    names = PredictionNames(images, out)
    _image(out / "a.nii.gz", seed=5)  # e.g. ground truth named like the images
    with pytest.raises(ValueError) as err:
        check_output_dir(out, names, tmp_path / "in")
    message = str(err.value)
    assert f"'{out / 'a.nii.gz'}' exists and is not a prediction of this bundle" in message
    assert "b.nii.gz" not in message and "Nothing was written" in message
    # recorded as the prediction of another input: still not to be replaced
    record_prediction(out, "a.nii.gz", str(tmp_path / "elsewhere" / "a.nii.gz"))
    with pytest.raises(ValueError, match="is a prediction of '.*elsewhere/a.nii.gz', not of the input"):
        check_output_dir(out, names, tmp_path / "in")
    # recorded as the prediction of this input, but not a label map on its grid (replaced since)
    record_prediction(out, "a.nii.gz", images[0]["image"])
    with pytest.raises(ValueError, match="is no longer the prediction of"):
        check_output_dir(out, names, tmp_path / "in")
    # an earlier prediction of the same input may be replaced
    nib.save(nib.Nifti1Image(np.zeros((9, 10, 11), np.uint8), np.eye(4)), str(out / "a.nii.gz"))
    assert check_output_dir(out, names, tmp_path / "in") == out


def test_a_record_file_the_bundle_did_not_write_is_not_replaced(tmp_path):
    images = [{"image": _image(tmp_path / "in" / "a.nii.gz")}]
    out = tmp_path / "out"
    out.mkdir()
    (out / RECORD_NAME).write_text('{"the user\'s": 1}')
    with pytest.raises(ValueError, match=f"holds a '{RECORD_NAME}' that this bundle did not write"):
        check_output_dir(out, PredictionNames(images, out), tmp_path / "in")


def test_the_formatter_records_each_prediction_before_it_is_written(tmp_path):
    images = [{"image": _image(tmp_path / "x" / "s.nii.gz")}, {"image": _image(tmp_path / "y" / "s.nii.gz")}]
    out = tmp_path / "out"
    names = PredictionNames(images, out)
    assert names({"filename_or_obj": images[1]["image"]}) == {"subject": "y_s.nii.gz", "idx": None}
    record = json.loads((out / RECORD_NAME).read_text())["predictions"]
    assert record == {"y_s.nii.gz": os.path.realpath(images[1]["image"])}
    with pytest.raises(ValueError, match="is not among the inputs"):
        names({"filename_or_obj": str(tmp_path / "other.nii.gz")})


@pytest.mark.parametrize("setting", ["ckpt_dir", "state_dir", "tensorboard_dir", "output_dir"])
def test_training_and_evaluation_folders_inside_the_dataset_are_refused(tmp_path, setting):
    task = _task(tmp_path / "Task")
    for inside in (task, task / "labelsTr", task / "models"):
        with pytest.raises(ValueError, match=f"config id '{setting}' is '{inside}', which lies inside the dataset"):
            check_outside_dataset(task, **{setting: inside})
    assert check_outside_dataset(task, **{setting: tmp_path / "models"}) == {setting: tmp_path / "models"}
    # the dataset's files listed elsewhere (dataset.json may point outside its folder)
    outside = {"image": _image(tmp_path / "shared" / "c.nii.gz")}
    with pytest.raises(ValueError, match="holds the dataset's file"):
        check_outside_dataset(task, [outside], **{setting: tmp_path / "shared"})


def test_images_with_upper_case_extensions_are_read_and_other_files_named(tmp_path, caplog):
    for name in ("a.nii.gz", "B.NII.GZ", "c.NII", "notes.txt", "scan.dcm"):
        _image(tmp_path / name) if "nii" in name.lower() else (tmp_path / name).write_text("x")
    (tmp_path / ".hidden").write_text("x")
    with caplog.at_level(logging.WARNING, logger="scripts.data"):
        found = [Path(item["image"]).name for item in image_datalist(tmp_path)]
    assert found == ["B.NII.GZ", "a.nii.gz", "c.NII"]
    assert "skips 2 file(s)" in caplog.text and "'notes.txt', 'scan.dcm'" in caplog.text
    assert ".hidden" not in caplog.text


# --- through inference.json (ConfigWorkflow), with a tiny untrained network ---

TINY_NET = {"xunet": {"features": [4, 4, 8, 8, 16, 4]}}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    import torch

    from scripts.networks import create_network

    folder = tmp_path_factory.mktemp("tiny_models")
    torch.manual_seed(0)
    torch.save(create_network("xunet", 3, 1, 3, TINY_NET).state_dict(), folder / "model.pt")
    return folder


def _infer(ckpt: Path, dataset_dir, output_dir: Path, run: bool = True):
    from monai.bundle import ConfigWorkflow

    from conftest import BUNDLE_ROOT

    workflow = ConfigWorkflow(
        config_file=str(BUNDLE_ROOT / "configs" / "inference.json"),
        meta_file=str(BUNDLE_ROOT / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(BUNDLE_ROOT),
        ckpt_dir=str(ckpt),
        dataset_dir=dataset_dir,
        output_dir=str(output_dir),
        network_options=TINY_NET,
        patch_size=[32, 32, 32],
        device="cpu",
        tta_axes=[],
    )
    workflow.initialize()
    if run:
        workflow.run()
        workflow.finalize()


def _message(err) -> str:
    from bundle_runs import error_text

    return error_text(err.value)


def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.workflow
def test_inference_into_the_task_s_labels_is_refused_and_the_labels_stay(tiny_ckpt, hippocampus_dir, tmp_path):
    from conftest import msd_subset_folder

    task = msd_subset_folder(tmp_path / "Task", hippocampus_dir, ["hippocampus_001", "hippocampus_019"])
    # links resolve into the shared data: copies make the labels this test's own, to compare byte for byte
    for label in (task / "labelsTr").iterdir():
        data = label.read_bytes()
        label.unlink()
        label.write_bytes(data)
    before = _snapshot(task)
    for out in (task / "labelsTr", task):
        with pytest.raises(Exception) as err:
            _infer(tiny_ckpt, str(task / "imagesTr"), out, run=False)
        assert f"config id 'output_dir' is '{out}', which lies inside the dataset '{task}'" in _message(err)
    assert _snapshot(task) == before


@pytest.mark.workflow
def test_inference_never_writes_two_inputs_to_one_file_and_reruns_replace_only_its_own(
    tiny_ckpt, hippocampus_dir, tmp_path
):
    source = hippocampus_dir / "imagesTr"
    for folder, case in (("p1", "hippocampus_001"), ("p2", "hippocampus_019")):
        (tmp_path / "in" / folder).mkdir(parents=True)
        (tmp_path / "in" / folder / "scan.nii.gz").symlink_to(source / f"{case}.nii.gz")
    (tmp_path / "in" / "UPPER.NII.GZ").symlink_to(source / "hippocampus_001.nii.gz")
    inputs = [str(tmp_path / "in" / "p1"), str(tmp_path / "in" / "p2"), str(tmp_path / "in" / "UPPER.NII.GZ")]
    out = tmp_path / "out"
    _infer(tiny_ckpt, inputs, out)
    written = sorted(p.name for p in out.iterdir())
    assert written == ["UPPER.nii.gz", "p1_scan.nii.gz", "p2_scan.nii.gz", RECORD_NAME]
    assert nib.load(out / "p1_scan.nii.gz").shape == nib.load(source / "hippocampus_001.nii.gz").shape
    assert nib.load(out / "p2_scan.nii.gz").shape == nib.load(source / "hippocampus_019.nii.gz").shape
    _infer(tiny_ckpt, inputs, out)  # the same inputs again: their own earlier predictions are replaced
    assert sorted(p.name for p in out.iterdir()) == written
    # a file of the user's under a prediction's name stops the run before anything is written
    (out / "p1_scan.nii.gz").write_bytes(b"the user's segmentation")
    before = _snapshot(out)
    with pytest.raises(Exception) as err:
        _infer(tiny_ckpt, inputs, out, run=False)
    assert f"'{out / 'p1_scan.nii.gz'}' exists and is no longer the prediction of" in _message(err)
    assert "would overwrite" in _message(err) and _snapshot(out) == before


@pytest.mark.workflow
def test_inference_refuses_two_copies_of_one_case_naming_both(tiny_ckpt, hippocampus_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = nib.load(hippocampus_dir / "imagesTr" / "hippocampus_001.nii.gz")
    nib.save(image, str(inputs / "case.nii"))
    nib.save(image, str(inputs / "case.nii.gz"))
    with pytest.raises(Exception) as err:
        _infer(tiny_ckpt, str(inputs), tmp_path / "out", run=False)
    message = _message(err)
    assert f"'{inputs / 'case.nii'}' and '{inputs / 'case.nii.gz'}'" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.workflow
@pytest.mark.parametrize("setting", ["ckpt_dir", "tensorboard_dir"])
def test_training_writing_inside_its_dataset_is_refused_before_any_work(hippocampus_dir, tmp_path, setting):
    from bundle_runs import error_text, training

    from conftest import msd_subset_folder

    task = msd_subset_folder(tmp_path / "Task", hippocampus_dir, ["hippocampus_001", "hippocampus_019"])
    before = _snapshot(task)
    workflow = training(tmp_path, task, **{setting: str(task / "labelsTr")})
    with pytest.raises(Exception) as err:
        workflow.initialize()
    assert f"config id '{setting}' is '{task / 'labelsTr'}', which lies inside the dataset" in error_text(err.value)
    assert _snapshot(task) == before


def _tiny_evaluation(dataset_dir: Path, output_dir: Path, ckpt_dir: Path):
    """evaluate.json over train.json with the tiny network's checkpoint, on the CPU (to be initialised)."""
    from bundle_runs import CONFIGS, META, TINY_NET
    from monai.bundle import ConfigWorkflow

    from conftest import BUNDLE_ROOT

    return ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        meta_file=META,
        workflow_type="eval",
        bundle_root=str(BUNDLE_ROOT),
        dataset_dir=str(dataset_dir),
        ckpt_dir=str(ckpt_dir),
        output_dir=str(output_dir),
        network_options=TINY_NET,
        patch_size=[32, 32, 32],
        download=False,
        device="cpu",
        num_workers=0,
    )


@pytest.mark.workflow
def test_evaluation_into_its_dataset_is_refused(hippocampus_dir, tmp_path, tiny_ckpt):
    from bundle_runs import error_text

    from conftest import msd_subset_folder

    task = msd_subset_folder(tmp_path / "Task", hippocampus_dir, ["hippocampus_001", "hippocampus_019"])
    workflow = _tiny_evaluation(task, task / "eval", tiny_ckpt)
    with pytest.raises(Exception) as err:
        workflow.initialize()
    assert f"config id 'output_dir' is '{task / 'eval'}', which lies inside the dataset" in error_text(err.value)
    assert not (task / "eval").exists()


def _metrics_saver(folder: Path):
    from monai.handlers import MetricsSaver

    return MetricsSaver(
        save_dir=str(folder), metrics=["val_mean_dice"], metric_details=["val_mean_dice"], summary_ops="*"
    )


def test_an_earlier_evaluation_s_reports_may_be_replaced(tmp_path):
    import torch
    from monai.handlers.utils import write_metrics_reports

    write_metrics_reports(
        str(tmp_path),
        images=["a.nii.gz", "b.nii.gz"],
        metrics={"val_mean_dice": 0.8},
        metric_details={"val_mean_dice": torch.tensor([[0.7, 0.9], [0.8, 0.8]])},
        summary_ops="*",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics.csv",
        "val_mean_dice_raw.csv",
        "val_mean_dice_summary.csv",
    ]
    check_report_files([object(), _metrics_saver(tmp_path)])  # other handlers are ignored


@pytest.mark.parametrize(
    "name, content",
    [
        ("metrics.csv", "patient,volume\n1,2.5\n"),
        ("val_mean_dice_raw.csv", "case,dice\na,0.5\n"),
        ("val_mean_dice_summary.csv", "my notes"),
        ("metrics.csv", None),  # a folder of that name
    ],
)
def test_evaluation_reports_never_replace_other_files(tmp_path, name, content):
    target = tmp_path / name
    if content is None:
        target.mkdir()
    else:
        target.write_text(content)
    with pytest.raises(ValueError) as err:
        check_report_files([_metrics_saver(tmp_path)])
    message = str(err.value)
    assert f"'{target}'" in message and "--output_dir" in message and "Nothing was written" in message
    assert target.is_dir() if content is None else target.read_text() == content


@pytest.mark.workflow
def test_evaluation_into_a_folder_with_other_metrics_csv_is_refused(hippocampus_dir, tmp_path, tiny_ckpt):
    from bundle_runs import error_text

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "metrics.csv").write_text("the user's table")
    workflow = _tiny_evaluation(hippocampus_dir, tmp_path / "results", tiny_ckpt)
    with pytest.raises(Exception) as err:
        workflow.initialize()
    assert f"'{tmp_path / 'results' / 'metrics.csv'}'" in error_text(err.value)
    assert (tmp_path / "results" / "metrics.csv").read_text() == "the user's table"


def test_an_extension_in_mixed_case_that_nibabel_cannot_read_says_so(tmp_path):
    from scripts.checks import check_images

    (tmp_path / "Scan.Nii.Gz").write_bytes(Path(_image(tmp_path / "gz" / "scan.nii.gz")).read_bytes())
    with pytest.raises(ValueError, match="Scan.Nii.Gz': nibabel cannot read an extension in mixed case"):
        check_images(image_datalist(tmp_path))


@pytest.mark.workflow
def test_monai_bundle_run_refuses_the_labels_folder_with_a_message_and_leaves_it(tiny_ckpt, hippocampus_dir, tmp_path):
    """The same refusal from the command line users run."""
    import subprocess
    import sys

    from conftest import BUNDLE_ROOT, msd_subset_folder

    task = msd_subset_folder(tmp_path / "Task", hippocampus_dir, ["hippocampus_001", "hippocampus_019"])
    before = {p.name: os.readlink(p) for p in (task / "labelsTr").iterdir()}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/inference.json",
            "--meta_file",
            "configs/metadata.json",
            "--bundle_root",
            str(BUNDLE_ROOT),
            "--ckpt_dir",
            str(tiny_ckpt),
            "--dataset_dir",
            str(task / "imagesTr"),
            "--output_dir",
            str(task / "labelsTr"),
            "--device",
            "cpu",
            "--network_options",
            json.dumps(TINY_NET),
        ],
        cwd=BUNDLE_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 0
    assert f"config id 'output_dir' is '{task / 'labelsTr'}', which lies inside the dataset '{task}'" in done.stderr
    assert {p.name: os.readlink(p) for p in (task / "labelsTr").iterdir()} == before


def test_inference_post_processing_builds_before_any_input_exists(tmp_path):
    """MONAI Label's BundleInferTask builds inference.json's post-processing (then drops SaveImaged) in a bundle whose
    dataset_dir does not exist: the prediction names are planned on first use, not when SaveImaged is built."""
    from monai.bundle import ConfigParser

    from conftest import BUNDLE_ROOT, INFER

    parser = ConfigParser()
    parser.read_config(INFER)
    parser["bundle_root"] = str(BUNDLE_ROOT)
    parser["dataset_dir"] = str(tmp_path / "no_such_folder")
    post = parser.get_parsed_content("postprocessing", instantiate=True)
    assert [type(t).__name__ for t in post.transforms][-1] == "SaveImaged"
    with pytest.raises(FileNotFoundError, match="dataset_dir"):
        parser.get_parsed_content("prediction_names").names
