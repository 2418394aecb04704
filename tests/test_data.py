"""Data lists: the patient-level split and the messages for missing data."""

import pytest

from scripts.data import image_datalist, msd_datalist, split_cases


def test_split_is_deterministic_disjoint_and_complete(hippocampus_dir):
    train = msd_datalist(hippocampus_dir, "training", fold=0, download=False)
    val = msd_datalist(hippocampus_dir, "validation", fold=0, download=False)
    assert msd_datalist(hippocampus_dir, "validation", fold=0, download=False) == val
    train_cases = {i["case"] for i in train}
    val_cases = {i["case"] for i in val}
    assert not train_cases & val_cases
    assert len(train_cases | val_cases) == 208
    assert 41 <= len(val_cases) <= 42


def test_folds_partition_the_cases():
    names = [f"case_{i:03d}" for i in range(23)]
    seen = []
    for fold in range(5):
        train, val = split_cases(names, fold, 5, seed=7)
        assert sorted(train + val) == names
        seen += val
    assert sorted(seen) == names
    with pytest.raises(ValueError, match="fold=5 is out of range"):
        split_cases(names, 5, 5, seed=7)


def test_missing_dataset_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset.json.*--dataset_dir"):
        msd_datalist(tmp_path / "Task04_Hippocampus", download=False)
    # automatic download is only attempted into a folder named after the task
    with pytest.raises(FileNotFoundError, match="Task04_Hippocampus"):
        msd_datalist(tmp_path / "elsewhere", download=True)


def test_listed_but_missing_file_is_named(tmp_path):
    (tmp_path / "dataset.json").write_text('{"training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]}')
    with pytest.raises(FileNotFoundError, match="a.nii.gz"):
        msd_datalist(tmp_path, download=False)


def test_inference_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset_dir"):
        image_datalist(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no .nii"):
        image_datalist(tmp_path)
    (tmp_path / "b.nii.gz").write_bytes(b"")
    (tmp_path / "a.nii").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert [d["image"] for d in image_datalist(tmp_path)] == [str(tmp_path / "a.nii"), str(tmp_path / "b.nii.gz")]
