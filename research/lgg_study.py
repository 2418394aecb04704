"""XUNet against BasicUNet on the LGG slices (issue #23), done as the field does it: folds of patients, several
seeds, per-patient Dice, a paired test across patients.

Every (network, fold, seed) run is the bundle's own two commands with ``research/configs/lgg.json``::

    python -m monai.bundle run training --config_file "['configs/train.json','research/configs/lgg.json']" \
        --fold k --seed s --val_interval 0 --network_name <net> --ckpt_dir <run>/models ...
    python -m monai.bundle run evaluating \
        --config_file "['configs/train.json','configs/evaluate.json','research/configs/lgg.json']" ... --output_dir <run>/eval

so every network gets one recipe and one budget (``max_epochs``, the last epoch's weights; no model selection on the
held-out fold). Only the network and its ``features`` (the same for all) differ. The folds are fixed by
``split_seed``; the seeds vary initialisation, augmentation and order. A finished run leaves ``<run>/result.json``
and is skipped when the study is called again, so an interrupted study goes on where it stopped (a run trained but
not evaluated is only evaluated).

``compare`` pools each (network, seed)'s folds: every patient is held out once, and its per-patient Dice is
computed from its slices' counts (in the leaky mode a patient's slices are spread over the folds and pooled back).
It reports, per network, the mean over seeds ± their SD of the mean per-patient Dice, with the per-slice and the
seed-style Dice beside it, training minutes per run and inference seconds per patient; and, per network against
the reference, the per-patient difference (each patient's Dice averaged over the seeds both have), how many
patients are better, and an exact two-sided Wilcoxon signed-rank p-value.

``--leaky True`` runs the same study with folds of single slices (``lgg_split_by slice``): the seed's split, in
which slices of every test patient are also in training. Usage (smoke size; the full study: research/README.md)::

    python -m research.lgg_study run --dataset_dir ../shared/data/lgg_kaggle_3m_subset/kaggle_3m \
        --work_dir /tmp/lgg_smoke --folds "[0]" --seeds "[0]" --max_epochs 1 --data_limit 2 \
        --features "[4, 4, 8, 8, 16, 4]" --num_workers 0
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research.lgg import SLICES_CSV, SUMMARY_JSON, paired, per_patient, read_slices, summarize

BUNDLE_ROOT = Path(__file__).resolve().parent.parent
OVERLAY = "research/configs/lgg.json"


def _cli_args(overrides: dict) -> list[str]:
    # monai.bundle's command line goes through fire, which reads Python literals: repr, not JSON (true != True)
    return [
        f"--{key}={value!r}" if not isinstance(value, str) else f"--{key}={value}" for key, value in overrides.items()
    ]


def split_name(leaky: bool) -> str:
    """The sub-folder of ``work_dir`` of one kind of split, so the leaky runs never mix with the sound ones."""
    return "slice_split" if leaky else "patient_split"


def run_name(network: str, fold: int, seed: int) -> str:
    """The folder of one (network, fold, seed) run."""
    return f"{network}_f{fold}_s{seed}"


def commands(network: str, fold: int, seed: int, run_dir: Path, dataset_dir: str, overrides: dict) -> list[list[str]]:
    """The training and the evaluation command of one run, to be run from the bundle root."""
    common = [
        "--meta_file",
        "configs/metadata.json",
        "--dataset_dir",
        str(dataset_dir),
        "--fold",
        str(fold),
        "--seed",
        str(seed),
        "--network_name",
        network,
        *_cli_args(overrides),
    ]
    train = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        repr(["configs/train.json", OVERLAY]),
        "--val_interval",
        "0",
        "--ckpt_dir",
        str(run_dir / "models"),
        "--tensorboard_dir",
        str(run_dir / "runs"),
        "--output_dir",
        str(run_dir / "train_eval"),
        *common,
    ]
    evaluate = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "evaluating",
        "--config_file",
        repr(["configs/train.json", "configs/evaluate.json", OVERLAY]),
        "--ckpt_dir",
        str(run_dir / "models"),
        "--output_dir",
        str(run_dir / "eval"),
        "--eval_split",
        "validation",
        *common,
    ]
    return [train, evaluate]


def _call(command: list[str], log: Path) -> float:
    """Run ``command`` from the bundle root with its output in ``log``; its wall-clock seconds. A failure raises,
    naming the log."""
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(command, cwd=BUNDLE_ROOT, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"'{' '.join(command[1:6])} ...' failed (exit code {code}): see {log}")
    return time.perf_counter() - started


def run(
    dataset_dir: str,
    work_dir: str = "/tmp/lgg_study",
    networks: Sequence[str] = ("xunet", "basicunet"),
    features: Sequence[int] = (16, 16, 32, 64, 128, 16),
    folds: Sequence[int] = (0, 1, 2, 3, 4),
    seeds: Sequence[int] = (0, 1, 2),
    num_folds: int = 5,
    max_epochs: int = 50,
    leaky: bool = False,
    reference: str = "basicunet",
    **overrides: Any,
) -> str:
    """Train and evaluate every (network, fold, seed) run not done yet, then :func:`compare` them.

    Args:
        dataset_dir: the ``kaggle_3m`` folder (``.tif`` as distributed, or the ``.png`` conversion).
        work_dir: where the runs go: ``<work_dir>/patient_split/<network>_f<fold>_s<seed>/`` (``slice_split``
            with ``leaky``).
        networks: registered network names (``scripts.networks.list_networks()``).
        features: the ``features`` every network is built with (config id ``network_options``).
        folds: the folds to run, of ``num_folds``.
        seeds: the training seeds (config id ``seed``); the folds stay those of ``split_seed``.
        num_folds: number of folds.
        max_epochs: epochs of every run (config id ``train#trainer#max_epochs``).
        leaky: folds of single slices instead of patients (the seed's leaky split), to reproduce its figure.
        reference: the network the others are compared with (its runs may come from another call).
        overrides: further config overrides for every run, e.g. ``--data_limit 2 --num_workers 0
            --lgg_channels all``.

    Returns:
        the comparison table (also written to ``<work_dir>/<split>/summary.md``).
    """
    study = Path(work_dir) / split_name(leaky)
    # the recipe, the same for every network: a study's networks may be run by several commands at once
    settings = {
        "num_folds": int(num_folds),
        "train#trainer#max_epochs": int(max_epochs),
        "lgg_split_by": "slice" if leaky else "patient",
        "features": [int(f) for f in features],
        **overrides,
    }
    recorded = study / "settings.json"
    if recorded.is_file() and json.loads(recorded.read_text()) != json.loads(json.dumps(settings)):
        # a resumed study must be one recipe: runs of other settings would be pooled as if they were the same
        raise ValueError(
            f"'{study}' holds runs made with other settings ({recorded}): give another --work_dir, or "
            "the settings recorded there."
        )
    study.mkdir(parents=True, exist_ok=True)
    if not recorded.is_file():
        _write_atomically(recorded, json.dumps(settings, indent=2) + "\n")
    # seeds outermost, networks innermost: a study stopped early still holds both networks of each (fold, seed)
    for seed in seeds:
        for fold in folds:
            for network in networks:
                run_one(network, int(fold), int(seed), study, dataset_dir, settings)
    return compare(work_dir, networks, leaky, reference)


def _write_atomically(path: Path, text: str) -> None:
    # several commands may run one study: a file another one reads is never seen half written
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def run_one(network: str, fold: int, seed: int, study: Path, dataset_dir: str, settings: dict) -> dict | None:
    """One run's training and evaluation, each skipped when its result exists; returns the run's result."""
    run_dir = study / run_name(network, fold, seed)
    result_file = run_dir / "result.json"
    if result_file.is_file():
        print(f"[lgg_study] {run_dir.name}: done before, skipped", flush=True)
        return json.loads(result_file.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe = {key: value for key, value in settings.items() if key != "features"}
    recipe["network_options"] = {network: {"features": settings["features"]}}
    train, evaluate = commands(network, fold, seed, run_dir, dataset_dir, recipe)
    trained = run_dir / "trained.json"
    if not trained.is_file():
        print(f"[lgg_study] {run_dir.name}: training", flush=True)
        trained.write_text(json.dumps({"train_seconds": _call(train, run_dir / "train.log")}) + "\n")
    print(f"[lgg_study] {run_dir.name}: evaluating", flush=True)
    eval_seconds = _call(evaluate, run_dir / "eval.log")
    summary = json.loads((run_dir / "eval" / SUMMARY_JSON).read_text())
    result = {
        "network": network,
        "fold": fold,
        "seed": seed,
        **json.loads(trained.read_text()),
        "eval_command_seconds": eval_seconds,
        **summary,
    }
    _write_atomically(result_file, json.dumps(result, indent=2) + "\n")
    return result


def _mean_sd(values: Sequence[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return ""
    sd = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.4f}{sd}"


def compare(
    work_dir: str = "/tmp/lgg_study",
    networks: Sequence[str] | None = None,
    leaky: bool = False,
    reference: str = "basicunet",
    seed_batch_size: int = 16,
    folds: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    out_name: str = "summary",
) -> str:
    """The study's tables from its finished runs; writes ``summary.md`` and ``per_patient.csv`` into
    ``<work_dir>/<split>/`` and returns the tables.

    Per (network, seed), the folds' per-slice counts are pooled, so each patient's Dice is over all its held-out
    slices. Seeds are compared only on what both networks finished. ``folds`` and ``seeds`` keep only those runs (e.g. a
    family screened on fold 0 with 2 seeds beside a reference run on every fold with 3); ``out_name`` names the written files
    (``<out_name>.md``, ``<out_name>_per_patient.csv``; ``summary.md`` and ``per_patient.csv`` by default).
    """
    study = Path(work_dir) / split_name(leaky)
    results = [json.loads(p.read_text()) for p in sorted(study.glob("*/result.json"))]
    if folds is not None:  # the command line gives a single fold as a number
        results = [r for r in results if r["fold"] in {int(f) for f in ([folds] if isinstance(folds, int) else folds)}]
    if seeds is not None:
        results = [r for r in results if r["seed"] in {int(s) for s in ([seeds] if isinstance(seeds, int) else seeds)}]
    if not results:
        raise FileNotFoundError(
            f"no finished runs under '{study}': run the study first (python -m research.lgg_study "
            "run ...), or give its --work_dir (and --leaky True for the slice-level runs)."
        )
    networks = list(networks or dict.fromkeys(r["network"] for r in results))
    rows: dict[tuple[str, int], list[dict]] = {}
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        key = (r["network"], r["seed"])
        rows.setdefault(key, []).extend(
            read_slices(study / run_name(r["network"], r["fold"], r["seed"]) / "eval" / SLICES_CSV)
        )
        runs.setdefault(key, []).append(r)
    patient_dice = {
        key: {p: v["dice"] for p, v in per_patient(r).items() if not math.isnan(v["dice"])} for key, r in rows.items()
    }
    summaries = {key: summarize(r, seed_batch_size) for key, r in rows.items()}
    header = [
        "network",
        "seeds",
        "runs",
        "patients",
        "per-patient Dice, mean over seeds ± SD",
        "median",
        "per-slice Dice (slices with abnormality)",
        "seed-style Dice",
        "training minutes per run",
        "inference seconds per patient",
    ]
    split = "single slices (leaky: the seed's split)" if leaky else "patients"
    lines = [
        f"Folds of {split}. Each seed's folds pooled; mean ± SD over seeds. Per-patient Dice: a patient's "
        "slices as one volume (Buda et al. 2019). Seed-style: background and abnormality Dice pooled per batch "
        f"of {seed_batch_size} slices, averaged (the seed's kind of figure). Training minutes: the training command's "
        "wall time (start-up and caching included); inference: the evaluator's seconds (flip averaging and scoring "
        "included) per patient.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for network in networks:
        seeds = sorted(s for n, s in rows if n == network)
        if not seeds:
            continue
        of = [summaries[(network, s)] for s in seeds]
        done = [r for s in seeds for r in runs[(network, s)]]
        lines.append(
            "| "
            + " | ".join(
                [
                    network,
                    ",".join(map(str, seeds)),
                    str(len(done)),
                    str(max(o["patients"] for o in of)),
                    _mean_sd([o["patient_dice_mean"] for o in of]),
                    _mean_sd([o["patient_dice_median"] for o in of]),
                    _mean_sd([o["slice_dice_abnormal"] for o in of]),
                    _mean_sd([o["seed_style_dice"] for o in of]),
                    f"{statistics.fmean(r['train_seconds'] for r in done) / 60:.1f}",
                    f"{statistics.fmean(r['seconds_per_patient'] for r in done):.2f}",
                ]
            )
            + " |"
        )
    if not any(n == reference for n, _ in rows):
        lines += ["", f"No finished run of the reference '{reference}' here: no paired comparison (--reference)."]
    lines += [
        "",
        f"Paired, per patient, against {reference} (each patient's Dice averaged over the seeds both "
        "networks finished; Wilcoxon signed-rank, exact, two-sided):",
        "",
        "| network | seeds | patients | mean difference | median difference | better | worse | p |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for network in networks:
        if network == reference:
            continue
        seeds = sorted(s for n, s in rows if n == network and (reference, s) in rows)
        if not seeds:
            continue

        def averaged(name: str, seeds: list[int] = seeds) -> dict[str, float]:
            patients = set.intersection(*(set(patient_dice[(name, s)]) for s in seeds))
            return {p: statistics.fmean(patient_dice[(name, s)][p] for s in seeds) for p in patients}

        test = paired(averaged(network), averaged(reference))
        lines.append(
            f"| {network} | {','.join(map(str, seeds))} | {test['n']} | {test['mean_difference']:+.4f} | "
            f"{test['median_difference']:+.4f} | {test['better']} | {test['worse']} | "
            f"{test['wilcoxon_p']:.4f} |"
        )
    table = "\n".join(lines) + "\n"
    (study / f"{out_name}.md").write_text(table)
    per_patient_csv = "per_patient.csv" if out_name == "summary" else f"{out_name}_per_patient.csv"
    with open(study / per_patient_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["network", "seed", "patient", "dice"])
        for (network, seed), dices in sorted(patient_dice.items()):
            writer.writerows([network, seed, p, f"{d:.6f}"] for p, d in sorted(dices.items()))
    return table  # the command line prints it


if __name__ == "__main__":
    import fire

    fire.Fire({"run": run, "compare": compare})
