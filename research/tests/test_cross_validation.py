"""research.cross_validation: pooling the per-case Dice of several folds."""

import json
import math

import pytest

from conftest import BUNDLE_ROOT
from research.cross_validation import main, pool_folds, read_per_case, summarize
from scripts.data import split_cases


def _fold(tmp_path, name, rows, sep=","):
    path = tmp_path / name
    lines = [sep.join(["filename", "class0", "class1", "mean"])]
    lines += [sep.join([f"/data/imagesTr/{case}", *(str(v) for v in values)]) for case, values in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pools_disjoint_folds_case_by_case(tmp_path):
    fold0 = _fold(tmp_path, "f0.csv", {"a.nii.gz": [0.9, 0.8, 0.85], "b.nii.gz": [0.7, 0.6, 0.65]})
    fold1 = _fold(tmp_path, "f1.csv", {"c.nii.gz": [0.8, 0.8, 0.8]}, sep="\t")
    _, folds = pool_folds([fold0, fold1])
    assert sorted(name for cases in folds.values() for name in cases) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    assert read_per_case(fold1)[1] == {"c.nii.gz": [0.8, 0.8, 0.8]}
    table = summarize([fold0, fold1], ["anterior", "posterior"])
    # pooled over the 3 cases, not the mean of the two fold means (0.75 and 0.8)
    mean, sd = 0.7666666, math.sqrt(((0.85 - 0.7666666) ** 2 + (0.65 - 0.7666666) ** 2 + (0.8 - 0.7666666) ** 2) / 2)
    assert f"| **all folds** | 3 | 0.8000 | 0.7333 | **{mean:.4f}** |" in table
    assert f"standard error {sd / math.sqrt(3):.4f}" in table
    assert "| f0.csv | 2 | 0.8000 | 0.7000 | 0.7500 |" in table


def test_writes_the_table(tmp_path, capsys):
    fold0 = _fold(tmp_path, "f0.csv", {"a.nii.gz": [0.9, 0.8, 0.85], "b.nii.gz": [0.7, 0.6, 0.65]})
    main(str(fold0), out=str(tmp_path / "cv.md"))
    assert (tmp_path / "cv.md").read_text() == capsys.readouterr().out.rstrip("\n") + "\n"


def test_a_case_in_two_folds_names_both_files(tmp_path):
    fold0 = _fold(tmp_path, "f0.csv", {"a.nii.gz": [0.9, 0.8, 0.85]})
    fold1 = _fold(tmp_path, "f1.csv", {"a.nii.gz": [0.9, 0.8, 0.85]})
    with pytest.raises(ValueError, match="f0.csv.*f1.csv"):
        summarize([fold0, fold1])


def test_a_file_that_is_not_a_per_case_csv_is_named(tmp_path):
    other = tmp_path / "val_mean_dice.csv"
    other.write_text("mean\t0.88\n")
    with pytest.raises(ValueError, match="val_mean_dice.csv.*val_mean_dice_raw.csv"):
        read_per_case(other)


def test_class_names_must_match_the_columns(tmp_path):
    fold0 = _fold(tmp_path, "f0.csv", {"a.nii.gz": [0.9, 0.8, 0.85]})
    with pytest.raises(ValueError, match="class_names"):
        summarize([fold0], ["anterior"])


DOCS = BUNDLE_ROOT / "research" / "results"
# the committed cross-validations: per recipe, the per-case CSV of each fold (index = fold) and the table made of them
COMMITTED_CROSS_VALIDATIONS = {
    "0.3.0": ([DOCS / f"eval_fold{k}_per_case.csv" for k in range(3)], DOCS / "cross_validation.md"),
    "0.4.0": (
        [DOCS / "recipe_screen" / f"wd1e-2_f{k}.csv" for k in range(3)]
        + [DOCS / "cross_validation_0.4.0" / f"wd1e-2_f{k}.csv" for k in (3, 4)],
        DOCS / "cross_validation_0.4.0" / "cross_validation.md",
    ),
}


@pytest.mark.parametrize("recipe", sorted(COMMITTED_CROSS_VALIDATIONS))
def test_committed_cross_validation_holds_each_folds_own_cases(recipe):
    """Each committed per-case CSV holds exactly the held-out cases of its fold in the bundle's split (train.json's
    num_folds and split_seed over the 208 cases of research/results/training_cases.txt: a changed split makes them stale), and
    the committed table is what summarize makes of them (regenerate with `python -m research.cross_validation <the
    CSVs> --class_names "['anterior','posterior']" --out <the table>`)."""
    csvs, table = COMMITTED_CROSS_VALIDATIONS[recipe]
    train = json.loads((BUNDLE_ROOT / "configs" / "train.json").read_text())
    cases = (DOCS / "training_cases.txt").read_text().split()
    assert len(cases) == 208 and len(csvs) <= train["num_folds"] == 5
    for fold, path in enumerate(csvs):
        held_out = split_cases(cases, fold, num_folds=train["num_folds"], seed=train["split_seed"])[1]
        assert sorted(read_per_case(path)[1]) == [f"{name}.nii.gz" for name in held_out], path
    assert table.read_text() == summarize(csvs, ["anterior", "posterior"])
