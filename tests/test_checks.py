"""scripts.checks: settings checked before any work, and nothing of the user's lost."""

import os

import nibabel as nib
import numpy as np
import pytest

from scripts.checks import check_images, keep_existing_checkpoint


def test_nothing_to_keep_in_an_empty_or_missing_folder(tmp_path):
    assert keep_existing_checkpoint(tmp_path / "missing") is None
    assert keep_existing_checkpoint(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_an_existing_model_is_copied_under_its_modification_time(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    os.utime(model, (1_700_000_000, 1_700_000_000))
    kept = keep_existing_checkpoint(tmp_path)
    assert kept.parent == tmp_path and kept.name.startswith("model_2023") and kept.suffix == ".pt"
    assert kept.read_bytes() == b"weights" and model.read_bytes() == b"weights"  # the original stays
    # the same model again (a second run that failed before saving): one copy, not two
    assert keep_existing_checkpoint(tmp_path) == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.pt", kept.name])


def _nifti(path, data):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4)), str(path))
    return {"image": str(path)}


def test_images_the_network_can_segment_pass_unchanged(tmp_path):
    datalist = [_nifti(tmp_path / "volume.nii.gz", np.ones((9, 10, 11))),
                _nifti(tmp_path / "one_channel.nii.gz", np.ones((9, 10, 11, 1))),
                _nifti(tmp_path / "tiny.nii", np.zeros((2, 3, 1)))]
    assert check_images(datalist) is datalist


def test_every_image_the_network_cannot_segment_is_named_with_its_problem(tmp_path):
    nan = np.ones((9, 10, 11))
    nan[0, 0, 0], nan[1, 1, 1] = np.nan, np.inf
    (tmp_path / "corrupt.nii.gz").write_bytes(b"not a nifti")
    datalist = [_nifti(tmp_path / "good.nii.gz", np.ones((9, 10, 11))),
                _nifti(tmp_path / "flat.nii.gz", np.ones((9, 10))),
                _nifti(tmp_path / "two_channels.nii.gz", np.ones((9, 10, 11, 2))),
                _nifti(tmp_path / "nan.nii.gz", nan),
                {"image": str(tmp_path / "corrupt.nii.gz")}]
    with pytest.raises(ValueError) as err:
        check_images(datalist)
    message = str(err.value)
    assert message.startswith("4 of 5 cases (config id 'dataset_dir')") and "good.nii.gz" not in message
    for name, problem in [("flat.nii.gz", "a 2-D image of shape (9, 10)"), ("two_channels.nii.gz",
                           "shape (9, 10, 11, 2) holds 2 volumes (channels) where 1 are expected (the network's in_channels)"),
                          ("nan.nii.gz", "2 voxels are NaN or infinite"), ("corrupt.nii.gz", "not a readable NIfTI")]:
        assert f"{tmp_path / name}': {problem}" in message


def test_a_long_list_of_bad_images_is_cut_short(tmp_path):
    datalist = [_nifti(tmp_path / f"flat{i}.nii.gz", np.ones((4, 4))) for i in range(5)]
    with pytest.raises(ValueError, match=r"flat1.nii.gz.*\n.*\.\.\. and 3 more") as err:
        check_images(datalist, max_listed=2)
    assert "flat2.nii.gz" not in str(err.value)


def test_a_label_map_must_fit_its_image_and_the_listed_labels(tmp_path):
    image = _nifti(tmp_path / "image.nii.gz", np.ones((9, 10, 11)))["image"]
    labels = {"fits": np.zeros((9, 10, 11)), "channel": np.zeros((9, 10, 11, 1)), "short": np.zeros((9, 10, 10)),
              "unknown": np.pad(np.full((2, 2, 2), 5.0), ((0, 7), (0, 8), (0, 9)))}
    datalist = [{"image": image, "label": _nifti(tmp_path / f"{name}.nii.gz", data)["image"]}
                for name, data in labels.items()]
    assert check_images(datalist[:2], label_values=[0, 1, 2]) == datalist[:2]
    with pytest.raises(ValueError) as err:
        check_images(datalist, label_values=[0, 1, 2])
    message = str(err.value)
    assert message.startswith("2 of 4 cases") and "fits.nii.gz" not in message and "channel.nii.gz" not in message
    assert "short.nii.gz': label map of shape (9, 10, 10) for an image of shape (9, 10, 11)" in message
    assert "unknown.nii.gz': label values [5] are not among the labels [0, 1, 2] of dataset.json" in message
    assert check_images(datalist[3:]) == datalist[3:]  # no labels given: any value passes
