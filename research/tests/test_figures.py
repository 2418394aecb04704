"""The studies' pictures: collected result files, bars and curves from them, overlays from trained weights."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from research import figures
from research.lgg import SLICES_CSV
from scripts.networks import create_network

LGG_SUBSET = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lgg_kaggle_3m_subset" / "kaggle_3m"


def _log(runs: Path, dices: list[float], steps_per_epoch: int = 2) -> None:
    writer = SummaryWriter(str(runs))
    for epoch, value in enumerate(dices, 1):
        for i in range(steps_per_epoch):
            writer.add_scalar("train_loss", 1.0 - value + i, (epoch - 1) * steps_per_epoch + i + 1)
        writer.add_scalar("train_mean_dice", value, epoch)
    writer.close()


def _lgg_run(split: Path, network: str, fold: int, seed: int, patients: dict[str, tuple[int, int, int]]) -> None:
    run = split / f"{network}_f{fold}_s{seed}"
    (run / "eval").mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"network": network, "fold": fold, "seed": seed}))
    with open(run / "eval" / SLICES_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["patient", "slice", "file", "tp", "fp", "fn", "pixels"])
        for patient, (tp, fp, fn) in patients.items():
            writer.writerow([patient, 1, f"{patient}_1.png", tp, fp, fn, 64])
    _log(run / "runs", [0.2, 0.4 + 0.1 * seed])
    (run / "models").mkdir()
    (run / "models" / "model.pt").write_bytes(b"weights are not collected")


def test_collect_copies_results_and_curves_but_no_weights(tmp_path):
    study = tmp_path / "study"
    split = study / "lgg" / "patient_split"
    _lgg_run(split, "xunet", 0, 0, {"A": (8, 2, 2)})
    _lgg_run(split, "basicunet", 0, 0, {"A": (6, 2, 4)})
    (split / "settings.json").write_text("{}")
    screen = study / "hippocampus"
    (screen / "results").mkdir(parents=True)
    (screen / "results" / "xunet_s1_f0.csv").write_text("filename,class0,class1,mean\ncase_1.nii.gz,0.8,0.6,0.7\n")
    _log(screen / "xunet_s1_f0" / "runs", [0.5, 0.6, 0.7])
    out = tmp_path / "results"
    figures.collect(str(study), str(out))
    copied = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert copied == [
        "curves.csv",
        "family_cpu/xunet_s1_f0.csv",
        "lgg_cpu/patient_split/basicunet_f0_s0/eval/lgg_slices.csv",
        "lgg_cpu/patient_split/basicunet_f0_s0/result.json",
        "lgg_cpu/patient_split/settings.json",
        "lgg_cpu/patient_split/xunet_f0_s0/eval/lgg_slices.csv",
        "lgg_cpu/patient_split/xunet_f0_s0/result.json",
    ]
    with open(out / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    hippocampus = [r for r in rows if r["dataset"] == "hippocampus"]
    assert [(r["network"], r["seed"], r["epoch"], r["train_dice"]) for r in hippocampus] == [
        ("xunet", "1", "1", "0.500000"),
        ("xunet", "1", "2", "0.600000"),
        ("xunet", "1", "3", "0.700000"),
    ]
    # the loss is the mean of each epoch's steps: (1 - 0.5) and (1 - 0.5 + 1)
    assert float(hippocampus[0]["train_loss"]) == pytest.approx(1.0)


def test_bars_average_seeds_and_curves_are_drawn(tmp_path):
    lgg = tmp_path / "lgg_cpu" / "patient_split"
    lgg.mkdir(parents=True)
    with open(lgg / "per_patient.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["network", "seed", "patient", "dice"])
        writer.writerows([["xunet", 0, "A", 0.5], ["xunet", 0, "B", 0.7], ["xunet", 1, "A", 0.8]])
        writer.writerows([["basicunet", 0, "A", 0.4], ["basicunet", 1, "A", 0.6]])
    assert figures.lgg_seed_means(lgg / "per_patient.csv") == {
        "xunet": {0: pytest.approx(0.6), 1: pytest.approx(0.8)},
        "basicunet": {0: pytest.approx(0.4), 1: pytest.approx(0.6)},
    }
    hippocampus = tmp_path / "family_cpu"
    hippocampus.mkdir()
    for name, value in (("unet_s0_f0", 0.7), ("unet_s1_f0", 0.8), ("unet_s0_f1", 0.1)):
        (hippocampus / f"{name}.csv").write_text(f"filename,class0,class1,mean\nc.nii.gz,{value},{value},{value}\n")
    assert figures.hippocampus_seed_means(hippocampus) == {"unet": {0: 0.7, 1: 0.8}}
    with open(tmp_path / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "network", "seed", "fold", "epoch", "train_loss", "train_dice"])
        writer.writerows([["lgg", "xunet", s, 0, e, 1.0 / e, 0.1 * e + s] for s in (0, 1) for e in (1, 2, 3)])
    written = figures.plot(str(tmp_path))
    assert sorted(Path(p).name for p in written) == [
        "hippocampus_family_dice.png",
        "lgg_dice.png",
        "lgg_training_curves.png",
    ]
    for path in written:
        assert Image.open(path).size[0] > 300


@pytest.mark.workflow
def test_overlays_of_held_out_slices_from_saved_weights(tmp_path, hippocampus_dir):
    """Overlays load each network's weights as the study saved them and draw held-out slices of both data sets."""
    if not LGG_SUBSET.is_dir():
        pytest.fail(f"the LGG subset is missing: {LGG_SUBSET}")
    study = tmp_path / "study"
    lgg = study / "lgg" / "patient_split"
    features = [4, 4, 8, 8, 16, 4]
    lgg.mkdir(parents=True)
    settings = {"num_folds": 2, "lgg_split_by": "patient", "features": features, "patch_size": [64, 64]}
    (lgg / "settings.json").write_text(json.dumps({**settings, "data_limit": 4, "train#trainer#max_epochs": 1}))
    for name in ("xunet", "basicunet"):
        torch.manual_seed(0)
        net = create_network(
            name, spatial_dims=2, in_channels=1, out_channels=2, network_options={name: {"features": features}}
        )
        (lgg / f"{name}_f0_s0" / "models").mkdir(parents=True)
        torch.save(net.state_dict(), lgg / f"{name}_f0_s0" / "models" / "model.pt")
        options = {name: {"features": [16, 16, 32, 64, 128, 16]}}  # research/configs/screens/family_cpu.json
        net = create_network(name, spatial_dims=3, in_channels=1, out_channels=3, network_options=options)
        (study / "hippocampus" / f"{name}_s0_f0" / "models").mkdir(parents=True)
        torch.save(net.state_dict(), study / "hippocampus" / f"{name}_s0_f0" / "models" / "model.pt")
    written = figures.overlays(
        str(study), str(LGG_SUBSET), str(hippocampus_dir), str(tmp_path / "figures"), seed=0, cases=2
    )
    assert [Path(p).name for p in written] == ["lgg_overlays.png", "hippocampus_overlays.png"]
    for path in written:
        image = np.asarray(Image.open(path))
        assert image.shape[0] > 300 and image.std() > 0


def test_family_table_marks_differences_beyond_twice_the_seed_spread(tmp_path):
    lgg = tmp_path / "lgg_cpu" / "patient_split"
    lgg.mkdir(parents=True)
    (lgg / "settings.json").write_text(json.dumps({"features": [4, 4, 8, 8, 16, 4], "patch_size": [32, 32]}))
    with open(lgg / "family_per_patient.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["network", "seed", "patient", "dice"])
        writer.writerows([["basicunet", 0, "A", 0.50], ["basicunet", 1, "A", 0.52]])
        writer.writerows([["unet", 0, "A", 0.70], ["unet", 1, "A", 0.72], ["xunet", 0, "A", 0.51]])
    (tmp_path / "family_cpu").mkdir()
    for name, value in (("basicunet_s0_f0", 0.7), ("basicunet_s1_f0", 0.9), ("unet_s0_f0", 0.85), ("unet_s1_f0", 0.8)):
        (tmp_path / "family_cpu" / f"{name}.csv").write_text(f"filename,class0,class1,mean\nc.nii.gz,0,0,{value}\n")
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in figures.family_table(str(tmp_path)).splitlines()}
    assert rows["basicunet"][1] == "0.510 ± 0.014 (2)" and rows["xunet"][1] == "0.510 (1)"
    assert rows["unet"][2] == "+0.200, exceeds seed noise"  # 0.2 > 2 x 0.014
    assert rows["unet"][5] == "+0.025, within seed noise"  # 0.025 < 2 x 0.141
    assert rows["xunet"][4] == "not run"
    assert re.fullmatch(r"\d+\.\d\d M, \d+\.\d\d", rows["unet"][3])  # parameters, GFLOPs per slice
