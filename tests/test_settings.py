"""Mistyped settings and unusual voxel types are named before any work (scripts.checks.check_settings and the image
checks), unit tests and train.json / evaluate.json through ConfigWorkflow."""

import nibabel as nib
import numpy as np
import pytest

from scripts.checks import check_images, check_settings


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"flags": {"resume": "false"}}, "config id 'resume' must be True or False, got 'false'"),
        ({"flags": {"download": 1}}, "config id 'download' must be True or False, got 1"),
        (
            {"whole_numbers": {"seed": "42"}},
            "config id 'seed' must be a whole number of 0 or more and below 2**32, got '42'",
        ),
        ({"whole_numbers": {"seed": -1}}, "config id 'seed' must be a whole number"),
        ({"whole_numbers": {"seed": 2**32}}, "below 2**32"),
        (
            {"whole_numbers": {"num_classes": "3"}},
            "config id 'num_classes' must be a whole number of 1 or more, got '3'",
        ),
        ({"whole_numbers": {"num_classes": 0}}, "config id 'num_classes' must be a whole number of 1 or more, got 0"),
        ({"whole_numbers": {"fold": 1.0}}, "config id 'fold' must be a whole number of 0 or more, got 1.0"),
        ({"fractions": {"cache_rate": "1"}}, "config id 'cache_rate' must be a number from 0 to 1, got '1'"),
        ({"fractions": {"cache_rate": 1.5}}, "config id 'cache_rate' must be a number from 0 to 1, got 1.5"),
        ({"fractions": {"cache_rate": True}}, "config id 'cache_rate' must be a number from 0 to 1, got True"),
    ],
)
def test_a_mistyped_setting_is_named_with_its_value(kwargs, message):
    with pytest.raises(ValueError) as err:
        check_settings(**kwargs)
    assert message in str(err.value)


def test_settings_of_their_type_pass():
    check_settings(
        flags={"resume": False, "download": True},
        whole_numbers={"seed": 0, "num_classes": 3, "fold": 4},
        fractions={"cache_rate": 0, "other": 0.5},
    )


def test_complex_voxels_are_named(tmp_path):
    path = tmp_path / "odd.nii"
    nib.save(nib.Nifti1Image(np.ones((9, 10, 11), np.complex64), np.eye(4)), str(path))
    with pytest.raises(ValueError, match="odd.nii': its voxels are of type complex64, not grey values"):
        check_images([{"image": str(path)}])


def test_rgb_voxels_are_named(tmp_path):
    path = tmp_path / "rgb.nii"
    rgb = np.zeros((9, 10, 11), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    with pytest.raises(ValueError, match="rgb.nii': its voxels are of type .*not grey values"):
        check_images([{"image": str(path)}])


@pytest.mark.workflow
@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("resume", "false", "config id 'resume' must be True or False, got 'false'"),
        ("seed", "x", "config id 'seed' must be a whole number"),
        ("fold", "1", "config id 'fold' must be a whole number of 0 or more, got '1'"),
        ("cache_rate", "1", "config id 'cache_rate' must be a number from 0 to 1, got '1'"),
    ],
)
def test_training_names_a_mistyped_setting_in_initialize(hippocampus_dir, tmp_path, setting, value, message):
    from bundle_runs import error_text, training

    workflow = training(tmp_path, hippocampus_dir, **{setting: value})
    with pytest.raises(Exception) as err:
        workflow.initialize()
    assert message in error_text(err.value)
    assert not (tmp_path / "models").exists() and not (tmp_path / "models_state").exists()


@pytest.mark.workflow
def test_inference_names_a_mistyped_num_classes_before_building_the_network(tmp_path):
    from bundle_runs import CONFIGS, META, error_text
    from monai.bundle import ConfigWorkflow

    from conftest import BUNDLE_ROOT

    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        meta_file=META,
        workflow_type="infer",
        bundle_root=str(BUNDLE_ROOT),
        dataset_dir=str(tmp_path),
        output_dir=str(tmp_path / "out"),
        device="cpu",
        num_classes="3",
    )
    with pytest.raises(Exception) as err:
        workflow.initialize()
    assert "config id 'num_classes' must be a whole number of 1 or more, got '3'" in error_text(err.value)
