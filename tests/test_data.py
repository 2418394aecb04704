"""Data lists: the patient-level split and the messages for missing data."""

import json

import pytest

from conftest import msd_subset_folder
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


def test_the_images_folder_of_a_task_points_at_the_task(tmp_path):
    """Two easy slips: training given the task's imagesTr, inference given the task folder itself."""
    task = tmp_path / "Task04_Hippocampus"
    (task / "imagesTr").mkdir(parents=True)
    (task / "imagesTs").mkdir()
    (task / "dataset.json").write_text('{"training": []}')
    with pytest.raises(FileNotFoundError, match=f"'{task}' holds a dataset.json: did you mean --dataset_dir {task}\\?"):
        msd_datalist(task / "imagesTr", download=False)
    with pytest.raises(
        FileNotFoundError,
        match=f"It is an MSD task folder: its images are in {task / 'imagesTr'} and {task / 'imagesTs'}",
    ):
        image_datalist(task)


def test_listed_but_missing_file_is_named(tmp_path):
    (tmp_path / "dataset.json").write_text(
        '{"training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]}'
    )
    with pytest.raises(FileNotFoundError, match="a.nii.gz"):
        msd_datalist(tmp_path, download=False)


@pytest.mark.parametrize(
    "manifest, expected",
    [
        ("{not json", "is not valid JSON \\(.*line 1 column 2"),
        ('["a", "b"]', "must be a JSON object whose 'training' is a list"),
        ('{"training": {"image": "a.nii.gz"}}', "must be a JSON object whose 'training' is a list"),
        (
            '{"training": [{"image": "./imagesTr/a.nii.gz"}]}',
            "entry 0 of 'training' is \\{'image': './imagesTr/a.nii.gz'\\}; each must name an 'image' and its 'label'",
        ),
        ('{"training": ["./imagesTr/a.nii.gz"]}', "entry 0 of 'training' is './imagesTr/a.nii.gz'"),
        ('{"labels": {"0": "background"}}', "lists no labelled cases under 'training': list the cases there"),
    ],
)
def test_a_malformed_dataset_json_is_named_with_what_is_wrong(tmp_path, manifest, expected):
    (tmp_path / "dataset.json").write_text(manifest)
    with pytest.raises(ValueError, match=f"'{tmp_path / 'dataset.json'}'.*{expected}"):
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


def test_unknown_split_names_the_setting_before_reading_data(tmp_path):
    with pytest.raises(ValueError, match="eval_split"):
        msd_datalist(tmp_path / "not_there", split="test", download=False)


def test_all_split_lists_every_case_and_an_empty_fold_is_an_error(tmp_path, hippocampus_dir):
    folder = msd_subset_folder(tmp_path, hippocampus_dir, ["hippocampus_001", "hippocampus_003"])
    assert [i["case"] for i in msd_datalist(folder, "all", download=False)] == ["hippocampus_001", "hippocampus_003"]
    # 2 cases in 5 folds: some fold validates none of them
    empty = [k for k in range(5) if not split_cases(["hippocampus_001", "hippocampus_003"], k, 5, 12345)[1]]
    with pytest.raises(ValueError, match=r"no validation case.*eval_split 'all'"):
        msd_datalist(folder, "validation", fold=empty[0], download=False)


def test_a_case_that_does_not_fit_dataset_json_is_named_before_training(tmp_path, hippocampus_dir):
    folder = msd_subset_folder(tmp_path, hippocampus_dir, ["hippocampus_001", "hippocampus_003"])
    manifest = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**manifest, "modality": {"0": "T1", "1": "T2"}}))
    expected = (
        r"hippocampus_001.nii.gz': shape \(\d+, \d+, \d+\) holds 1 volumes \(channels\) where 2 are expected "
        r"\(the modalities listed in dataset.json\)"
    )
    with pytest.raises(ValueError, match=expected):
        msd_datalist(folder, "all", download=False)


def test_labels_named_other_than_by_number_are_not_checked(tmp_path, hippocampus_dir):
    folder = msd_subset_folder(tmp_path, hippocampus_dir, ["hippocampus_001"])
    manifest = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**manifest, "labels": {"background": 0, "hippocampus": 1}}))
    assert [i["case"] for i in msd_datalist(folder, "all", download=False)] == ["hippocampus_001"]
    (folder / "dataset.json").write_text(json.dumps({**manifest, "labels": {"0": "background", "1": "hippocampus"}}))
    with pytest.raises(ValueError, match=r"label values \[2\] are not among the labels \[0, 1\]"):
        msd_datalist(folder, "all", download=False)


def test_fewer_classes_than_dataset_json_has_labels_names_num_classes(tmp_path, hippocampus_dir):
    """--num_classes 2 on the 3-label task used to fail after caching, in the one-hot of the loss ('index 2 is out of
    bounds'); more classes than labels is allowed (an output that is never the target)."""
    folder = msd_subset_folder(tmp_path, hippocampus_dir, ["hippocampus_001"])
    manifest = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(
        json.dumps({**manifest, "labels": {"0": "background", "1": "Anterior", "2": "Posterior"}})
    )
    with pytest.raises(
        ValueError,
        match=r"lists the labels 0 background, 1 Anterior, 2 Posterior, but config id "
        r"'num_classes' is 2: .* Set --num_classes 3\.",
    ):
        msd_datalist(folder, "all", download=False, num_classes=2)
    for num_classes in (3, 4, None):
        assert len(msd_datalist(folder, "all", download=False, num_classes=num_classes)) == 1


@pytest.mark.parametrize("limit", [0, -1, True, 2.5, "3"])
def test_a_data_limit_that_is_no_number_of_cases_is_named(tmp_path, limit):
    """data_limit 0 used to keep every case, as null does."""
    with pytest.raises(ValueError, match="config id 'data_limit' must be a number of cases, 1 or more, or null"):
        msd_datalist(tmp_path, "all", limit=limit, download=False)


@pytest.mark.parametrize("num_folds", [0, -3])
def test_a_number_of_folds_below_1_names_the_setting(num_folds):
    with pytest.raises(
        ValueError, match=f"num_folds={num_folds}: set config id 'num_folds' to the number of folds, 2 or more"
    ):
        split_cases(["a", "b", "c"], 0, num_folds, 12345)
