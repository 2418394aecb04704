"""research/lgg.py, research/configs/lgg.json and research/lgg_study.py: the LGG slices' patient-level folds, their
loading from .tif and .png, the masks' scaling, the per-patient scores, a training and an evaluation of the overlay,
and the study's resume."""

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.transforms import Compose
from PIL import Image

from conftest import BUNDLE_ROOT, EVALUATE, META, SHARED_DATA, TRAIN, exception_chain
from research import lgg_study
from research.lgg import (
    SLICES_CSV,
    MaskToLabeld,
    lgg_datalist,
    paired,
    per_patient,
    read_slices,
    score,
    seed_style_dice,
    summarize,
    wilcoxon_signed_rank,
)

OVERLAY = str(BUNDLE_ROOT / "research" / "configs" / "lgg.json")
LGG_DIR = SHARED_DATA / "lgg_kaggle_3m_subset" / "kaggle_3m"
TINY = {"xunet": {"features": [4, 4, 8, 8, 16, 4]}, "basicunet": {"features": [4, 4, 8, 8, 16, 4]}}


def fake_kaggle(folder: Path, patients: int = 7, slices: int = 3, suffix: str = ".png", size: int = 8) -> Path:
    """A kaggle_3m-layout folder of random RGB slices and 0/255 masks."""
    rng = np.random.default_rng(0)
    for p in range(patients):
        patient = folder / f"TCGA_XX_{p:04d}_20000101"
        patient.mkdir(parents=True)
        for n in range(1, slices + 1):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                patient / f"{patient.name}_{n}{suffix}"
            )
            mask = (rng.random((size, size)) > 0.7).astype(np.uint8) * 255
            Image.fromarray(mask).save(patient / f"{patient.name}_{n}_mask{suffix}")
    return folder


def loading(lgg_channels: str = "flair", patch_size: tuple[int, int] = (8, 8)) -> Compose:
    parser = ConfigParser()
    parser.read_config([TRAIN, OVERLAY])
    parser["lgg_channels"] = lgg_channels
    parser["patch_size"] = list(patch_size)
    return parser.get_parsed_content("validate#preprocessing")


def test_folds_split_patients_and_hold_out_each_once(tmp_path):
    """Every fold's training and validation slices come from disjoint patients, and every patient is validated in
    exactly one fold, with all its slices; the leaky split holds out every slice once."""
    root = fake_kaggle(tmp_path / "kaggle_3m")
    everything = lgg_datalist(root, "all")
    assert len(everything) == 21 and everything[0]["slice"] == 1
    held_out = []
    for fold in range(3):
        training = lgg_datalist(root, "training", fold=fold, num_folds=3)
        validation = lgg_datalist(root, "validation", fold=fold, num_folds=3)
        assert not {i["patient"] for i in training} & {i["patient"] for i in validation}
        assert len(training) + len(validation) == 21
        held_out += [i["patient"] for i in validation]
    assert sorted(held_out) == sorted(i["patient"] for i in everything)  # each patient's 3 slices, once
    slices = [
        (i["patient"], i["slice"])
        for f in range(3)
        for i in lgg_datalist(root, "validation", fold=f, num_folds=3, split_by="slice")
    ]
    assert sorted(slices) == sorted((i["patient"], i["slice"]) for i in everything)
    assert len({i["patient"] for i in lgg_datalist(root, "validation", num_folds=3, limit=1)}) == 1
    assert lgg_datalist(tmp_path, "all") == everything  # the folder holding kaggle_3m works too


def test_datalist_names_the_setting_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset_dir"):
        lgg_datalist(tmp_path)
    root = fake_kaggle(tmp_path / "kaggle_3m", patients=2)
    with pytest.raises(ValueError, match="lgg_split_by"):
        lgg_datalist(root, split_by="slices")
    with pytest.raises(ValueError, match="data_limit"):
        lgg_datalist(root, limit=0)
    next(root.glob("*/*_1_mask.png")).unlink()
    with pytest.raises(FileNotFoundError, match="no mask"):
        lgg_datalist(root)


def test_masks_are_scaled_to_0_and_1_and_odd_values_refused():
    scale = MaskToLabeld(keys="label")
    assert torch.equal(scale({"label": torch.tensor([[0.0, 255.0]])})["label"], torch.tensor([[0.0, 1.0]]))
    assert torch.equal(scale({"label": torch.tensor([[0.0, 1.0]])})["label"], torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="0 and 255"):
        scale({"label": torch.tensor([[0.0, 128.0, 255.0]])})


def test_overlay_reads_tif_and_png_alike(tmp_path):
    """The overlay's loading reads a .tif and its lossless .png conversion to the same tensors: FLAIR (channel 1)
    scaled to 0..1, masks 0/1; ``lgg_channels all`` keeps the three sequences."""
    png = lgg_datalist(fake_kaggle(tmp_path / "png", patients=1, slices=2), "all")
    tif = lgg_datalist(fake_kaggle(tmp_path / "tif", patients=1, slices=2, suffix=".tif"), "all")
    assert tif[0]["image"].endswith(".tif")
    flair = loading("flair")
    for a, b in zip(png, tif):
        x, y = flair(a), flair(b)
        assert x["image"].shape == (1, 8, 8) and torch.equal(x["image"], y["image"])
        assert torch.equal(x["label"], y["label"]) and set(x["label"].unique().tolist()) <= {0.0, 1.0}
        rgb = np.asarray(Image.open(a["image"]))
        assert torch.allclose(x["image"][0], torch.as_tensor(rgb[..., 1].T / 255.0, dtype=torch.float32))
    assert loading("all")(png[0])["image"].shape == (3, 8, 8)
    # a smaller patch_size resamples the slice (area) and its mask (nearest: still 0/1)
    small = loading("flair", (4, 4))(png[0])
    assert small["image"].shape == small["label"].shape == (1, 4, 4)
    assert torch.allclose(small["image"], torch.nn.functional.avg_pool2d(flair(png[0])["image"][None], 2)[0])
    assert set(small["label"].unique().tolist()) <= {0.0, 1.0}
    assert loading("gray")(png[0])["image"].shape == (1, 8, 8)
    with pytest.raises(RuntimeError) as error:  # monai.bundle wraps the error of the component it builds
        loading("rgb")
    assert any("config id 'lgg_channels'" in str(e) for e in exception_chain(error.value))


def test_overlay_overrides_only_ids_the_bundle_has():
    """A misspelt id would be added as a new, unused one: every id of the overlay exists in train.json +
    evaluate.json, names an argument of the component it sets, or is the overlay's own and used there."""
    base = ConfigParser(ConfigParser.load_config_files(EVALUATE))
    text = Path(OVERLAY).read_text()
    own = {"lgg_channels", "lgg_split_by", "seed_batch_size", "lgg_results"}
    for key in json.loads(text):
        if not key.startswith("_") and key not in own:
            assert key in base or key == "loss#batch", key
    assert all(f"@{key}" in text for key in own)


def counts(patient: str, number: int, tp: int, fp: int, fn: int, pixels: int = 100) -> dict:
    return {"patient": patient, "slice": number, "tp": tp, "fp": fp, "fn": fn, "pixels": pixels}


def test_per_patient_dice_is_over_the_stacked_slices():
    rows = [counts("a", 1, 10, 0, 0), counts("a", 2, 0, 10, 10), counts("a", 3, 0, 0, 0), counts("b", 1, 5, 5, 0)]
    patients = per_patient(rows)
    assert patients["a"]["dice"] == pytest.approx(20 / 40) and patients["b"]["dice"] == pytest.approx(10 / 15)
    summary = summarize(rows, seed_batch_size=2)
    assert summary["patient_dice_mean"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert summary["slice_dice_abnormal"] == pytest.approx((1 + 0 + 2 / 3) / 3)  # slices with abnormality
    assert summary["slice_dice_all"] == pytest.approx((1 + 0 + 1 + 2 / 3) / 4)  # empty predicted empty: 1
    # batch 1: tp 10, fp 10, fn 10, tn 170; batch 2: tp 5, fp 5, fn 0, tn 190 (background included)
    first = (2 * 170 / (2 * 170 + 20) + 20 / 40) / 2
    second = (2 * 190 / (2 * 190 + 5) + 10 / 15) / 2
    assert seed_style_dice(rows, 2) == pytest.approx((first + second) / 2)


def test_wilcoxon_signed_rank_exact():
    # five positive differences: W+ = 15, the largest of 2^5 sign patterns, two-sided p = 2/32
    assert wilcoxon_signed_rank([0.1, 0.2, 0.3, 0.4, 0.5]) == (15.0, pytest.approx(0.0625))
    # symmetric differences: p = 1
    assert wilcoxon_signed_rank([-1, 1, -2, 2])[1] == pytest.approx(1.0)
    # W- = 4; sign patterns with W- <= 4: {}, {1}, {2}, {3}, {4}, {1, 2}, {1, 3}: p = 2 * 7 / 2^8
    assert wilcoxon_signed_rank([1, 2, 3, -4, 5, 6, 7, 8]) == (32.0, pytest.approx(14 / 256))
    # ties share their average rank (1.5, 1.5, 3): W+ = 4.5; patterns with W+ >= 4.5: {1.5, 3} twice, all three
    assert wilcoxon_signed_rank([1, -1, 2]) == (4.5, pytest.approx(2 * 3 / 8))
    result = paired({"a": 0.9, "b": 0.8, "c": 0.5}, {"a": 0.8, "b": 0.8, "c": 0.6, "d": 0.1})
    assert result["n"] == 3 and result["better"] == 1 and result["worse"] == 1


def fake_call(calls: list):
    """Stands in for the study's subprocess: a training writes model.pt, an evaluation the per-slice counts of
    two patients (XUNet one pixel better on patient b) and their summary."""

    def call(command: list, log: Path) -> float:
        calls.append(command[4])
        out = Path(command[command.index("--output_dir") + 1])
        if command[4] == "training":
            (Path(command[command.index("--ckpt_dir") + 1]) / "model.pt").parent.mkdir(parents=True, exist_ok=True)
            return 1.0
        better = int(command[command.index("--network_name") + 1] == "xunet")
        fold = int(command[command.index("--fold") + 1])
        rows = [counts(f"p{fold}a", 1, 8, 2, 2), counts(f"p{fold}b", 1, 6 + better, 2, 4 - better)]
        out.mkdir(parents=True, exist_ok=True)
        with open(out / SLICES_CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["patient", "slice", "tp", "fp", "fn", "pixels"])
            writer.writeheader()
            writer.writerows(rows)
        (out / "lgg_summary.json").write_text(json.dumps({**summarize(rows), "seconds_per_patient": 0.5}))
        return 2.0

    return call


def test_study_resumes_without_training_again(tmp_path, monkeypatch):
    """A second call of the study trains and evaluates nothing; a run trained but not evaluated is only
    evaluated; the comparison pools the folds per seed and pairs patients."""
    calls = []
    monkeypatch.setattr(lgg_study, "_call", fake_call(calls))
    arguments = {"dataset_dir": "/data", "work_dir": str(tmp_path), "folds": [0, 1], "seeds": [0, 1], "max_epochs": 1}
    table = lgg_study.run(**arguments)
    assert calls.count("training") == 8 and calls.count("evaluating") == 8
    calls.clear()
    assert lgg_study.run(**arguments) == table and calls == []
    (tmp_path / "patient_split" / "xunet_f1_s1" / "result.json").unlink()
    lgg_study.run(**arguments)
    assert calls == ["evaluating"]
    assert "| xunet | 0,1 | 4 | 4 |" in table and "| xunet | 0,1 | 4 | +0.0" in table
    with pytest.raises(ValueError, match="other settings"):
        lgg_study.run(**{**arguments, "max_epochs": 2})


def test_a_family_run_by_another_command_joins_the_study_and_compares_on_its_folds_and_seeds(tmp_path, monkeypatch):
    """Networks of one recipe may be run by separate commands into one study; compare then selects the runs of
    given folds and seeds, so a family screened on fold 0 meets the reference's fold-0 runs of the same seeds."""
    monkeypatch.setattr(lgg_study, "_call", fake_call([]))
    arguments = {"dataset_dir": "/data", "work_dir": str(tmp_path), "max_epochs": 1}
    lgg_study.run(**arguments, networks=["xunet", "basicunet"], folds=[0, 1], seeds=[0, 1, 2])
    lgg_study.run(**arguments, networks=["unet"], folds=[0], seeds=[0, 1])
    table = lgg_study.compare(str(tmp_path), folds=[0], seeds=[0, 1], out_name="family")
    assert "| basicunet | 0,1 | 2 | 2 |" in table and "| xunet | 0,1 | 2 | 2 |" in table
    assert "| unet | 0,1 | 2 | 2 |" in table
    assert (tmp_path / "patient_split" / "family.md").read_text() == table
    assert (tmp_path / "patient_split" / "family_per_patient.csv").is_file()
    every_run = lgg_study.compare(str(tmp_path))
    assert "| xunet | 0,1,2 | 6 | 4 |" in every_run and "| unet | 0,1 | 2 | 2 |" in every_run


def test_study_commands_are_the_bundle_s_with_the_overlay(tmp_path):
    train, evaluate = lgg_study.commands("basicunet", 2, 1, tmp_path, "/data", {"lgg_split_by": "slice"})
    assert train[3:5] == ["run", "training"] and evaluate[3:5] == ["run", "evaluating"]
    assert "research/configs/lgg.json" in train[6] and "configs/evaluate.json" in evaluate[6]
    for command in (train, evaluate):
        assert command[command.index("--seed") + 1] == "1" and "--lgg_split_by=slice" in command


@pytest.fixture(scope="module")
def lgg_dir():
    if not LGG_DIR.is_dir():
        pytest.fail(f"LGG subset not found at {LGG_DIR}: put ../shared beside the repo or set XUNET_SHARED_DATA.")
    return LGG_DIR


def tif_copies(folder: Path, lgg_dir: Path, patients: int, slices: int | None = None) -> Path:
    """The first ``patients`` shared patients as .tif, as the data set is distributed (PIL, lossless); with
    ``slices``, only that many slices each, those with the most abnormality first."""
    for patient in sorted(p for p in lgg_dir.iterdir() if p.is_dir())[:patients]:
        items = [i for i in lgg_datalist(lgg_dir, "all") if i["patient"] == patient.name]
        if slices:
            items = sorted(items, key=lambda i: -np.count_nonzero(np.asarray(Image.open(i["label"]))))[:slices]
        (folder / patient.name).mkdir(parents=True)
        for item in items:
            for key in ("image", "label"):
                Image.open(item[key]).save(folder / patient.name / Path(item[key]).with_suffix(".tif").name)
    return folder


@pytest.mark.workflow
def test_shared_patients_read_the_same_from_tif_and_png(tmp_path, lgg_dir):
    tif = lgg_datalist(tif_copies(tmp_path / "kaggle_3m", lgg_dir, 2), "all")
    png = [i for i in lgg_datalist(lgg_dir, "all") if i["patient"] in {t["patient"] for t in tif}]
    assert len(tif) == len(png) > 20 and [t["slice"] for t in tif] == [p["slice"] for p in png]
    transform = loading("all", (256, 256))  # as distributed: no resampling
    for a, b in zip(tif[::5], png[::5]):
        x, y = transform(a), transform(b)
        assert x["image"].shape == (3, 256, 256) and torch.equal(x["image"], y["image"])
        assert torch.equal(x["label"], y["label"]) and set(x["label"].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.workflow
def test_training_then_evaluation_scores_per_patient(tmp_path, lgg_dir):
    """``run training`` of the overlay for one epoch on 3 patients (.tif, 4 slices each: 2 train, 1 validates),
    then ``run evaluating``: per-slice counts and per-patient Dice, whose per-slice mean agrees with MONAI's."""
    data = tif_copies(tmp_path / "kaggle_3m", lgg_dir, 3, slices=4)
    overrides = {
        "bundle_root": str(BUNDLE_ROOT),
        "dataset_dir": str(data),
        "num_folds": 3,
        "num_workers": 0,
        "network_options": TINY,
        "ckpt_dir": str(tmp_path / "models"),
        "tensorboard_dir": str(tmp_path / "runs"),
        "output_dir": str(tmp_path / "eval"),
        "val_interval": 0,
        "train#trainer#max_epochs": 1,
    }
    train = ConfigWorkflow(config_file=[TRAIN, OVERLAY], meta_file=META, workflow_type="train", **overrides)
    train.initialize()
    train.run()
    assert train.trainer.state.epoch == 1 and math.isfinite(float(train.trainer.state.output[0]["loss"]))
    train.finalize()
    evaluate = ConfigWorkflow(config_file=[*EVALUATE, OVERLAY], meta_file=META, workflow_type="eval", **overrides)
    evaluate.initialize()
    evaluate.run()
    evaluate.finalize()
    out = tmp_path / "eval"
    rows = read_slices(out / SLICES_CSV)
    assert len(rows) == 4 and len({r["patient"] for r in rows}) == 1 and all(r["pixels"] == 256 * 256 for r in rows)
    summary = json.loads((out / "lgg_summary.json").read_text())
    assert summary["patients"] == 1 and 0 <= summary["patient_dice_mean"] <= 1
    with open(out / "val_mean_dice_raw.csv") as f:  # MONAI's per-slice Dice: NaN where the mask is empty
        monai_dice = [float(r["mean"]) for r in csv.DictReader(f) if r["mean"] != "nan"]
    assert summary["slice_dice_abnormal"] == pytest.approx(np.mean(monai_dice), abs=1e-4)
    assert score(str(out), output_dir=str(tmp_path / "rescored"))["patient_dice_mean"] == summary["patient_dice_mean"]


COMMITTED_STUDY = BUNDLE_ROOT / "research" / "results" / "lgg_cpu"
# committed table -> the compare call that makes it
COMMITTED_TABLES = {
    "patient_split/summary.md": {},
    "patient_split/family.md": {"folds": [0], "seeds": [0, 1], "out_name": "family"},
    "slice_split/summary.md": {"leaky": True},
}


@pytest.mark.parametrize("table", sorted(COMMITTED_TABLES))
def test_the_committed_study_tables_are_made_from_the_committed_runs(table, tmp_path):
    """research/results/lgg_cpu/<split>/*.md is what compare makes of the committed runs (result.json and the
    per-slice counts of each evaluation); remade in a copy, as compare writes beside the runs."""
    shutil.copytree(COMMITTED_STUDY, tmp_path / "lgg_cpu")
    made = lgg_study.compare(str(tmp_path / "lgg_cpu"), **COMMITTED_TABLES[table])
    assert (COMMITTED_STUDY / table).read_text() == made
    assert "| xunet |" in made and "| basicunet |" in made
