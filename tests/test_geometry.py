"""Geometry is data: image and label must share a voxel grid, headers must place voxels plausibly, and intensities
must survive float32 (scripts.geometry, through scripts.checks.check_images)."""

import nibabel as nib
import numpy as np
import pytest

from scripts.checks import case_problems, check_images
from scripts.geometry import geometry_difference, header_problem, intensity_problem


def _save(path, data, affine=None, dtype=np.float32):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=dtype), np.eye(4) if affine is None else affine), str(path))
    return str(path)


def _case(tmp_path, label_affine=None, image_affine=None, label=None, name="case"):
    rng = np.random.default_rng(0)
    image = _save(tmp_path / f"{name}_image.nii.gz", rng.random((9, 10, 11)), image_affine)
    data = np.zeros((9, 10, 11)) if label is None else label
    label_file = _save(
        tmp_path / f"{name}_label.nii.gz",
        data,
        (np.eye(4) if image_affine is None else image_affine) if label_affine is None else label_affine,
        dtype=np.float32 if label is not None else np.uint8,
    )
    return {"image": image, "label": label_file}


def _affine(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), flip=()):
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    for axis in flip:
        affine[axis, axis] *= -1
    return affine


@pytest.mark.parametrize(
    "label_affine, expected",
    [
        (_affine(flip=(0,)), "orientation LAS against the image's RAS"),
        (_affine(flip=(1, 2)), "orientation RPI against the image's RAS"),
        (_affine(origin=(0, 0, 5)), "shifted by (0, 0, 5) mm"),
        (_affine(spacing=(1.0, 1.0, 2.0)), "voxel size (1, 1, 2) mm against the image's (1, 1, 1) mm"),
        (_affine(spacing=(0.5, 0.5, 0.5), origin=(1, 1, 1)), "voxel size (0.5, 0.5, 0.5) mm"),
    ],
)
def test_a_label_off_its_image_grid_is_named_with_both_files_and_the_difference(tmp_path, label_affine, expected):
    case = _case(tmp_path, label_affine)
    [problem] = case_problems(case)
    assert problem.startswith(f"'{case['label']}': label map does not lie on the grid of its image '{case['image']}'")
    assert expected in problem and "resample or re-save the label map" in problem
    with pytest.raises(ValueError, match="does not lie on the grid"):
        check_images([case], label_values=[0, 1, 2])


def test_a_label_on_the_image_grid_within_the_tolerance_passes(tmp_path):
    nudged = _affine(origin=(1e-4, 0, -1e-4))
    assert case_problems(_case(tmp_path, nudged)) == []
    oblique = np.eye(4)
    oblique[:3, :3] = nib.eulerangles.euler2mat(0.3, 0.1, 0.0)
    assert case_problems(_case(tmp_path, image_affine=oblique, name="oblique")) == []


def test_the_difference_lists_every_way_the_grids_differ():
    image = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), _affine())
    label = nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), _affine(spacing=(2, 1, 1), origin=(3, 0, 0), flip=(1,)))
    difference = geometry_difference(image, label)
    assert "voxel size (2, 1, 1)" in difference and "orientation RPS" in difference
    assert "shifted by (3, 0, 0)" in difference
    assert geometry_difference(image, nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), _affine())) is None


@pytest.mark.parametrize(
    "affine, expected",
    [
        (_affine(spacing=(0.001, 0.001, 0.001)), "voxel size (0.001, 0.001, 0.001) mm"),
        (_affine(spacing=(1, 1, 50)), "outside 0.1 to 10 mm"),
        (np.diag([1.0, 1.0, 0.0, 1.0]), "voxel size (1, 1, 0) mm"),
        (None, "NaN or infinite"),
        (np.array([[1.0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]]), "(nearly) parallel"),
        (np.array([[1.0, 0.9999999, 0, 0], [0, 0.0004, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]]), "(nearly) parallel"),
    ],
)
def test_an_implausible_header_is_named(tmp_path, affine, expected):
    # the affine goes to the sform only: nibabel cannot write a singular one as a qform
    image = nib.Nifti1Image(np.random.default_rng(0).random((9, 10, 11)).astype(np.float32), None)
    image.set_qform(None, code=0)
    image.set_sform(np.eye(4) if affine is None else affine, code=2)
    path = tmp_path / "odd.nii"
    nib.save(image, str(path))
    if affine is None:  # nibabel refuses to write NaN into a header; a corrupt file has them anyway (srow_x, byte 280)
        with open(path, "r+b") as file:
            file.seek(280)
            file.write(np.full(4, np.nan, dtype="<f4").tobytes())
    assert expected in header_problem(nib.load(path))
    with pytest.raises(ValueError) as err:
        check_images([{"image": str(path)}])
    assert f"'{path}': " in str(err.value)


def test_a_header_in_metres_names_its_unit(tmp_path):
    image = nib.Nifti1Image(np.ones((9, 10, 11), np.float32), _affine(spacing=(0.001, 0.001, 0.001)))
    image.header.set_xyzt_units("meter")
    assert "the header's unit is 'meter'" in header_problem(image)


@pytest.mark.parametrize(
    "data, expected",
    [
        (np.array([0.0, 1e30]), "overflow the float32"),
        (np.array([-3e20, 5.0]), "overflow the float32"),
        (np.array([1e9, 1e9 + 1]), "less than float32 can tell apart"),
    ],
)
def test_intensities_float32_cannot_hold_are_named(data, expected):
    assert expected in intensity_problem(data)


@pytest.mark.parametrize(
    "data",
    [np.array([0, 4095], np.int16), np.array([-1024.0, 3071.0]), np.array([0.0, 1e-6]), np.array([1e6, 1e6 + 100])],
)
def test_usual_intensity_ranges_pass(data):
    assert intensity_problem(data) is None


def test_an_image_float32_cannot_hold_is_named_before_work(tmp_path):
    data = np.random.default_rng(0).random((9, 10, 11)) * 1e25
    path = _save(tmp_path / "huge.nii.gz", data, dtype=np.float64)
    with pytest.raises(ValueError, match="huge.nii.gz': intensities from .* overflow the float32"):
        check_images([{"image": path}])


@pytest.mark.parametrize(
    "values, shown",
    [
        ([0.0, 0.99999994, 2.0000002], "label values [0.99999994, 2.00000024] are " "not whole numbers"),
        ([0.0, 1.5], "label values [1.5] are not whole numbers"),
    ],
)
def test_label_values_near_whole_numbers_are_shown_as_they_are(tmp_path, values, shown):
    label = np.zeros((9, 10, 11), np.float32)
    label.flat[: len(values)] = values
    [problem] = case_problems(_case(tmp_path, label=label), label_values=[0, 1, 2])
    assert shown in problem and "[1, 2]" not in problem


def _manifest(tmp_path, entries):
    import json

    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / sub).mkdir(exist_ok=True)
    for name in {e[k] for e in entries for k in ("image", "label")}:
        if not (tmp_path / name).exists():
            _save(tmp_path / name, np.random.default_rng(0).random((9, 10, 11)) > 0.5, dtype=np.uint8)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "a"}, "training": entries}))


@pytest.mark.parametrize(
    "entries, repeated",
    [
        ([{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}] * 2, "image '"),
        (
            [
                {"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"},
                {"image": "./imagesTr/../imagesTr/a.nii.gz", "label": "labelsTr/b.nii.gz"},
            ],
            "in entries 0, 1",
        ),
        (
            [
                {"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"},
                {"image": "imagesTr/b.nii.gz", "label": "labelsTr/a.nii.gz"},
            ],
            "label map '",
        ),
        (
            [
                {"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"},
                {"image": "imagesTr/a.nii", "label": "labelsTr/b.nii.gz"},
            ],
            "case name 'a' in entries 0, 1",
        ),
    ],
)
def test_a_dataset_json_listing_a_case_twice_is_refused(tmp_path, entries, repeated):
    from scripts.data import msd_datalist

    _manifest(tmp_path, entries)
    with pytest.raises(ValueError) as err:
        msd_datalist(tmp_path, split="all", download=False)
    message = str(err.value)
    assert f"'{tmp_path / 'dataset.json'}' lists a case more than once" in message and repeated in message


# --- through train.json / evaluate.json (ConfigWorkflow) ---


def _task_with_moved_label(tmp_path, hippocampus_dir, affine_change):
    """An MSD subset of 4 shared cases whose hippocampus_019 label is re-saved with ``affine_change`` applied."""
    from conftest import msd_subset_folder

    cases = ["hippocampus_001", "hippocampus_019", "hippocampus_033", "hippocampus_037"]
    task = msd_subset_folder(tmp_path / "Task", hippocampus_dir, cases)
    moved = task / "labelsTr" / "hippocampus_019.nii.gz"
    label = nib.load(moved)
    data = np.asanyarray(label.dataobj)
    moved.unlink()
    nib.save(nib.Nifti1Image(data, affine_change(label.affine.copy())), str(moved))
    return task, moved


def _flip(affine):
    return affine @ np.diag([-1.0, 1.0, 1.0, 1.0])


def _coarser(affine):  # the image's shape, another spacing: failed with tensor-size errors deep in MONAI
    return affine @ np.diag([1.0, 1.0, 1.3, 1.0])


def _shifted(affine):
    affine[:3, 3] += (0.0, 3.0, 0.0)
    return affine


@pytest.mark.workflow
@pytest.mark.parametrize(
    "change, difference",
    [
        (_flip, "orientation LAS against the image's RAS"),
        (_coarser, "voxel size (1, 1, 1.3) mm"),
        (_shifted, "shifted by (0, 3, 0) mm"),
    ],
    ids=["flip", "spacing", "shift"],
)
def test_evaluation_and_training_name_a_label_off_its_image_grid(hippocampus_dir, tmp_path, change, difference):
    from bundle_runs import CONFIGS, META, TINY_NET, error_text, training
    from monai.bundle import ConfigWorkflow

    from conftest import BUNDLE_ROOT

    task, moved = _task_with_moved_label(tmp_path, hippocampus_dir, change)
    image = task / "imagesTr" / "hippocampus_019.nii.gz"
    expected = f"'{moved}': label map does not lie on the grid of its image '{image}': "
    workflow = training(tmp_path / "train", task, data_limit=None, num_folds=2)
    workflow.initialize()
    with pytest.raises(Exception) as err:
        workflow.run()
    assert expected in error_text(err.value) and difference in error_text(err.value)
    assert not (tmp_path / "train" / "models" / "model.pt").exists()
    # evaluation of every case: the model is never read past its check, a tiny random one will do
    import torch

    from scripts.networks import create_network

    (tmp_path / "models").mkdir()
    torch.save(create_network("xunet", 3, 1, 3, TINY_NET).state_dict(), tmp_path / "models" / "model.pt")
    evaluation = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        meta_file=META,
        workflow_type="eval",
        bundle_root=str(BUNDLE_ROOT),
        dataset_dir=str(task),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
        network_options=TINY_NET,
        patch_size=[32, 32, 32],
        download=False,
        device="cpu",
        num_workers=0,
        eval_split="all",
    )
    evaluation.initialize()
    with pytest.raises(Exception) as err:
        evaluation.run()
    assert expected in error_text(err.value) and difference in error_text(err.value)
    assert not (tmp_path / "eval").exists() or not any((tmp_path / "eval").iterdir())


@pytest.mark.workflow
def test_inference_names_implausible_headers_and_intensities_before_writing_anything(hippocampus_dir, tmp_path):
    import torch
    from bundle_runs import CONFIGS, META, TINY_NET, error_text
    from monai.bundle import ConfigWorkflow

    from conftest import BUNDLE_ROOT
    from scripts.networks import create_network

    original = nib.load(hippocampus_dir / "imagesTr" / "hippocampus_001.nii.gz")
    data = np.asanyarray(original.dataobj).astype(np.float32)
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(original, str(inputs / "fine.nii.gz"))
    metres = nib.Nifti1Image(data, original.affine @ np.diag([0.001, 0.001, 0.001, 1.0]))
    metres.header.set_xyzt_units("meter")
    nib.save(metres, str(inputs / "metres.nii.gz"))
    nib.save(nib.Nifti1Image(data.astype(np.float64) * 1e30, original.affine), str(inputs / "huge.nii.gz"))
    (tmp_path / "models").mkdir()
    torch.save(create_network("xunet", 3, 1, 3, TINY_NET).state_dict(), tmp_path / "models" / "model.pt")
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        meta_file=META,
        workflow_type="infer",
        bundle_root=str(BUNDLE_ROOT),
        ckpt_dir=str(tmp_path / "models"),
        dataset_dir=str(inputs),
        output_dir=str(tmp_path / "out"),
        network_options=TINY_NET,
        patch_size=[32, 32, 32],
        device="cpu",
    )
    with pytest.raises(Exception) as err:
        workflow.initialize()
    message = error_text(err.value)
    assert "2 of 3 cases (config id 'dataset_dir')" in message
    assert (
        f"'{inputs / 'metres.nii.gz'}': voxel size (0.001, 0.001, 0.001) mm (the header's unit is 'meter')" in message
    )
    assert f"'{inputs / 'huge.nii.gz'}': intensities from " in message and "fine.nii.gz" not in message
    assert not (tmp_path / "out").exists()
