"""research/screen_recipes.py: variants file checks, the bundle commands it builds, the paired comparison, the
scheduler (failures, budget) and one real two-variant screen on 4 shared cases."""

import importlib
import inspect
import json
import pydoc
import re
import sys
from pathlib import Path

import pytest
from monai.bundle.config_item import ComponentLocator

from conftest import BUNDLE_ROOT, TINY_NET
from research import screen_recipes
from research.screen_recipes import Variant, commands, compare, load_variants, run_screen


def write_variants(tmp_path: Path, entries) -> Path:
    path = tmp_path / "variants.json"
    path.write_text(json.dumps(entries))
    return path


def write_per_case(path: Path, rows: dict) -> None:
    path.write_text(
        "filename,class0,class1,mean\n"
        + "".join(f"/data/imagesTr/{name},{a},{b},{(a + b) / 2}\n" for name, (a, b) in rows.items())
    )


SCREENS = sorted((BUNDLE_ROOT / "research" / "configs" / "screens").glob("*.json"))


@pytest.mark.parametrize("screen", SCREENS, ids=lambda p: p.stem)
def test_every_committed_screen_overrides_ids_the_bundle_has(screen):
    """A misspelt override would be added to the config as a new, unused id, and the variant would silently be
    the reference: each id must exist in train.json + evaluate.json + the variant's overlays, or name an argument
    of the component it sets (``loss#batch``: DiceCELoss's ``batch``)."""
    from monai.bundle import ConfigParser

    for variant in load_variants(screen):
        files = [str(BUNDLE_ROOT / f) for f in ["configs/train.json", "configs/evaluate.json", *variant.config_files]]
        ids = ConfigParser(ConfigParser.load_config_files(files))
        for key in variant.overrides:
            if key in ids:
                continue
            parent, argument = key.rsplit("#", 1) if "#" in key else ("", key)
            component = ids.get(parent) if parent else None
            assert (
                isinstance(component, dict) and "_target_" in component
            ), f"{screen.name}, variant {variant.name}: no config id '{key}'"
            target = ComponentLocator().get_component_module_name(component["_target_"])
            target = (
                getattr(importlib.import_module(target), component["_target_"])
                if target
                else (pydoc.locate(component["_target_"]))
            )
            assert (
                argument in inspect.signature(target).parameters
            ), f"{screen.name}, variant {variant.name}: '{component['_target_']}' has no argument '{argument}'"


def test_the_committed_recipe_screen_starts_with_the_old_recipe():
    variants = load_variants(BUNDLE_ROOT / "research" / "configs" / "screens" / "recipe_screen.json")
    assert variants[0].name == "wd1e-5" and variants[0].overrides == {"weight_decay": 1e-05}
    assert {"wd1e-2": {}} == {v.name: v.overrides for v in variants if v.name == "wd1e-2"}  # train.json as it is


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"name": "a"}, "JSON list"),
        ([], "JSON list"),
        ([{"overrides": {}}], "give 'name'"),
        ([{"name": "a", "override": {}}], "unknown keys: ['override']"),
        ([{"name": "a/b"}], "only letters"),
        ([{"name": "a"}, {"name": "a"}], "used twice"),
    ],
)
def test_a_bad_variants_file_is_named_with_the_fix(tmp_path, entries, message):
    path = write_variants(tmp_path, entries)
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        load_variants(path)
    assert str(path) in str(err.value)


def test_commands_are_the_bundles_own_with_the_overrides_as_python_literals(tmp_path):
    overlay = "research/configs/experiments/foreground_dice.json"
    variant = Variant("v", [overlay], {"loss#batch": True, "patch_size": [40, 56, 40]})
    train, evaluate = commands(variant, 2, "/data", tmp_path / "v_f2", {"num_workers": 1})
    assert train[1:5] == ["-m", "monai.bundle", "run", "training"]
    assert evaluate[1:5] == ["-m", "monai.bundle", "run", "evaluating"]
    assert train[train.index("--config_file") + 1] == repr(["configs/train.json", overlay])
    eval_files = ["configs/train.json", "configs/evaluate.json", overlay]
    assert evaluate[evaluate.index("--config_file") + 1] == repr(eval_files)
    assert train[train.index("--val_interval") + 1] == "0"  # last epoch's weights, no choice on held-out cases
    for cmd in (train, evaluate):
        assert cmd[cmd.index("--fold") + 1] == "2"
        assert cmd[cmd.index("--ckpt_dir") + 1] == str(tmp_path / "v_f2" / "models")
        # fire reads Python literals: True, not JSON's true
        assert "--loss#batch=True" in cmd and "--patch_size=[40, 56, 40]" in cmd and "--num_workers=1" in cmd
    assert evaluate[evaluate.index("--output_dir") + 1] == str(tmp_path / "v_f2" / "eval")


def test_a_variant_can_evaluate_weights_its_run_saves_beside_model_pt(tmp_path):
    """research/configs/experiments/weight_averaging.json saves averaged weights to <ckpt_dir>/ema_fast/model.pt: a variant
    with evaluate_weights "ema_fast" trains into the run's ckpt_dir and evaluates that file."""
    path = write_variants(
        tmp_path,
        [
            {"name": "last"},
            {
                "name": "ema",
                "evaluate_weights": "ema_fast",
                "config_files": ["research/configs/experiments/weight_averaging.json"],
            },
        ],
    )
    variant = load_variants(path)[1]
    assert variant.evaluate_weights == "ema_fast"
    train, evaluate = commands(variant, 1, "/data", tmp_path / "ema_f1", {})
    assert train.count("--ckpt_dir") == evaluate.count("--ckpt_dir") == 1
    assert train[train.index("--ckpt_dir") + 1] == str(tmp_path / "ema_f1" / "models")
    assert evaluate[evaluate.index("--ckpt_dir") + 1] == str(tmp_path / "ema_f1" / "models" / "ema_fast")
    with pytest.raises(ValueError, match="evaluate_weights '../x' must name one sub-folder"):
        load_variants(write_variants(tmp_path, [{"name": "a", "evaluate_weights": "../x"}]))


def test_compare_pairs_cases_with_the_reference(tmp_path):
    write_per_case(tmp_path / "ref_f0.csv", {"c1.nii.gz": (0.8, 0.8), "c2.nii.gz": (0.9, 0.7)})
    write_per_case(tmp_path / "ref_f1.csv", {"c3.nii.gz": (0.6, 0.6)})
    write_per_case(tmp_path / "new_f0.csv", {"c1.nii.gz": (0.9, 0.9), "c2.nii.gz": (0.8, 0.8)})
    write_per_case(tmp_path / "new_f1.csv", {"c3.nii.gz": (0.7, 0.7)})
    variants = [Variant("ref"), Variant("new"), Variant("missing")]
    table = compare(tmp_path, variants, [0, 1], "ref", class_names=["anterior", "posterior"])
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert rows["ref"][1:6] == ["0,1", "3", "0.7667", "0.7000", "0.7333"]
    # per-case differences +0.1, +0.0, +0.1: mean +0.0667, standard error 0.0333, 2 of 3 better
    assert rows["new"][1:9] == ["0,1", "3", "0.8000", "0.8000", "0.8000", "+0.0667", "0.0333", "2 of 3"]
    assert rows["missing"][1:3] == ["none", "0"]
    assert "anterior | posterior" in table


def fake_commands(script: str):
    """A stand-in for the bundle commands: one step running ``script`` with the run folder as argv[1]."""

    def build(variant, fold, dataset_dir, run_dir, extra):
        return [[sys.executable, "-c", script, str(run_dir), variant.name]]

    return build


WRITE_CSV = """
import sys, pathlib
out = pathlib.Path(sys.argv[1]) / "eval"; out.mkdir(parents=True, exist_ok=True)
if sys.argv[2] == "broken":
    sys.exit(3)
if sys.argv[2] == "slow":
    import time; time.sleep(60)
(out / "val_mean_dice_raw.csv").write_text("filename,class0,mean\\nc1.nii.gz,0.5,0.5\\n")
"""


def test_failed_and_overrun_pairs_are_reported_never_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(screen_recipes, "commands", fake_commands(WRITE_CSV))
    variants = [Variant("good"), Variant("broken"), Variant("slow")]
    jobs = run_screen(variants, [0], "/data", tmp_path, max_parallel=3, budget_s=8)
    states = {job.key: job.state for job in jobs}
    assert states == {"good_f0": "done", "broken_f0": "failed", "slow_f0": "stopped"}
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["good_f0.csv"]


def test_results_of_an_earlier_screen_are_never_mixed_in(tmp_path, monkeypatch):
    monkeypatch.setattr(screen_recipes, "commands", fake_commands(WRITE_CSV))
    (tmp_path / "results").mkdir()
    earlier = tmp_path / "results" / "good_f0.csv"
    earlier.write_text("filename,class0,mean\nc1.nii.gz,0.9,0.9\n")
    with pytest.raises(FileExistsError, match="good_f0.csv") as err:
        run_screen([Variant("good")], [0], "/data", tmp_path, budget_s=30)
    assert "--work_dir or --results_dir" in str(err.value)
    assert earlier.read_text().endswith("0.9,0.9\n")  # left as it was


def test_a_real_screen_trains_and_evaluates_each_variant(tmp_path, hippocampus_dir):
    """Two variants, fold 0, 4 cases, 1 epoch of a tiny net: both pairs go through run training and run evaluating,
    and each variant's override reaches its runs."""
    variants_file = write_variants(tmp_path, [{"name": "ref"}, {"name": "wd0", "overrides": {"weight_decay": 0.0}}])
    screen_recipes.main(
        str(variants_file),
        folds=[0],
        dataset_dir=str(hippocampus_dir),
        work_dir=str(tmp_path / "w"),
        max_parallel=2,
        budget_s=600,
        data_limit=4,
        num_workers=0,
        download=False,
        network_options=TINY_NET,
        **{"train#trainer#max_epochs": 1},
    )
    results = tmp_path / "w" / "results"
    for name in ("ref", "wd0"):
        lines = (results / f"{name}_f0.csv").read_text().splitlines()
        assert lines[0].split(",")[0] == "filename" and len(lines) == 1 + 4  # the 4 held-out cases of the limit
    assert "> weight_decay: 0.0" in (tmp_path / "w" / "wd0_f0" / "step0.log").read_text()
    summary = (results / "summary.md").read_text()
    assert "| wd0 | 0 | 4 |" in summary and "Unfinished" not in summary


# the committed screens, each research/configs/screens/<name>.json with its results in research/results/<name>/:
# folds, one row of the table
COMMITTED_SCREENS = {
    "recipe_screen": ([0, 1, 2], "| wd1e-2 | 0,1,2 | 126 | 0.8972 | 0.8768 | 0.8870 | +0.0019 | 0.0008 | 72 of 126 |"),
    "weight_decay_cpu": ([3], "| wd1e-1 | 3 | 41 | 0.9006 | 0.8835 | 0.8921 | -0.0013 | 0.0014 | 20 of 41 |"),
    "seeds_lr_dropout": (
        [0, 1, 2],
        "| wd1e-2_seed2 | 0,1,2 | 126 | 0.8969 | 0.8778 | 0.8873 | +0.0003 | 0.0009 | 71 of 126 |",
    ),
    "float32_cpu": ([2], "| wd1e-2_float32 | 2 | 42 | 0.8983 | 0.8832 | 0.8908 | -0.0002 | 0.0017 | 22 of 42 |"),
    "weight_averaging_cpu": ([2], "| ema_fast | 2 | 42 | 0.8985 | 0.8839 | 0.8912 | +0.0004 | 0.0004 | 21 of 42 |"),
    "basicunet_cpu": ([2, 3], "| basicunet | 2,3 | 83 | 0.9008 | 0.8864 | 0.8936 | +0.0015 | 0.0011 | 47 of 83 |"),
    "family_cpu": ([0], "| xunet_s0 | 0 | 24 | 0.7817 | 0.7372 | 0.7595 | +0.0220 | 0.0062 | 20 of 24 |"),
}


@pytest.mark.parametrize("screen", sorted(COMMITTED_SCREENS))
def test_the_committed_screen_table_is_made_from_the_committed_results(screen):
    """research/results/<screen>/summary.md is what compare makes of the per-case CSVs beside it (regenerate with
    `python -m research.screen_recipes research/configs/screens/<screen>.json --folds <folds>
    --results_dir research/results/<screen>
    --compare_only True --class_names "['anterior','posterior']"`)."""
    folds, row = COMMITTED_SCREENS[screen]
    results = BUNDLE_ROOT / "research" / "results" / screen
    variants = load_variants(BUNDLE_ROOT / "research" / "configs" / "screens" / f"{screen}.json")
    table = compare(results, variants, folds, variants[0].name, class_names=["anterior", "posterior"])
    assert (results / "summary.md").read_text() == table
    assert row in table


# results a screen reuses instead of training again: its file -> the committed file it must be a byte copy of
REUSED_RESULTS = {
    "weight_decay_cpu/wd1e-2_f3.csv": "cross_validation_0.4.0/wd1e-2_f3.csv",
    **{f"seeds_lr_dropout/wd1e-2_f{k}.csv": f"recipe_screen/wd1e-2_f{k}.csv" for k in (0, 1, 2)},
    "float32_cpu/wd1e-2_f2.csv": "recipe_screen/wd1e-2_f2.csv",
    # the weight-averaging run trained the float32 run's trajectory bit for bit: its own weights are that model
    "weight_averaging_cpu/wd1e-2_float32_f2.csv": "float32_cpu/wd1e-2_float32_f2.csv",
    # XUNet against BasicUNet: XUNet's rows are the recipe's earlier runs of those folds
    "basicunet_cpu/xunet_f2.csv": "float32_cpu/wd1e-2_float32_f2.csv",
    "basicunet_cpu/xunet_f3.csv": "cross_validation_0.4.0/wd1e-2_f3.csv",
}


@pytest.mark.parametrize("reused", sorted(REUSED_RESULTS))
def test_a_screen_reference_reuses_the_committed_run_byte_for_byte(reused):
    """A screen's reference rows are an earlier run's results (the cross-validation's fold-3 model, the 0.4.0 screen's
    runs), not a second run: the same bytes."""
    docs = BUNDLE_ROOT / "research" / "results"
    assert (docs / reused).read_bytes() == (docs / REUSED_RESULTS[reused]).read_bytes()


def test_only_runs_the_named_variants_and_the_table_keeps_every_variant(tmp_path, monkeypatch):
    """A screen shared out over several commands: each runs its variants; the table lists them all."""
    monkeypatch.setattr(screen_recipes, "commands", fake_commands(WRITE_CSV))
    variants_file = tmp_path / "screen.json"
    variants_file.write_text(json.dumps([{"name": "good"}, {"name": "other"}]))
    work = tmp_path / "work"
    screen_recipes.main(str(variants_file), folds=[0], work_dir=str(work), budget_s=30, only=["other"])
    assert sorted(p.name for p in (work / "results").glob("*.csv")) == ["other_f0.csv"]
    screen_recipes.main(str(variants_file), folds=[0], work_dir=str(work), budget_s=30, only=["good"])
    table = (work / "results" / "summary.md").read_text()
    assert "| good | 0 | 1 |" in table and "| other | 0 | 1 |" in table
    with pytest.raises(ValueError, match=r"--only names \['bad'\]"):
        screen_recipes.main(str(variants_file), folds=[0], work_dir=str(work), only=["bad"])
