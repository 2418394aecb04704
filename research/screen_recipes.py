"""Screen variants of the training recipe: train and evaluate every (variant, fold) pair as its own bundle run,
many at a time, and compare each variant per case with a reference variant on the same held-out cases.

Made for a machine with many cores and a GPU, where one small 3D training run uses a fraction of either. On one
H100 with 16 cores, 6 runs at a time took 8.4 minutes for the 80 epochs of train.json (about 5 s an epoch each,
with CUDA MPS on: ``nvidia-cuda-mps-control -d``); 16 at a time without MPS managed only 20 s an epoch each.
Each pair runs the bundle's own commands, so a variant is only an overlay and/or config overrides::

    python -m monai.bundle run training --config_file "['configs/train.json', *overlays]" --fold k \
        --val_interval 0 --ckpt_dir <work>/<variant>_f<k>/models ...
    python -m monai.bundle run evaluating --config_file "['configs/train.json','configs/evaluate.json', *overlays]" ...

The variants file is a JSON list of ``{"name": ..., "config_files": [overlay, ...], "overrides": {id: value}}``
(the first entry is the reference unless ``--reference`` names another); ``"evaluate_weights": "ema_fast"``
evaluates ``<ckpt_dir>/ema_fast/model.pt`` instead of ``<ckpt_dir>/model.pt``, for overlays that save other
weights beside the run's own (``research/configs/experiments/weight_averaging.json``). Usage::

    python -m research.screen_recipes research/configs/screens/recipe_screen.json --folds "[0,1,2]" \
        --dataset_dir ../shared/data/Task04_Hippocampus --work_dir /tmp/screen --max_parallel 6 --num_workers 2

Every finished evaluation leaves ``<work_dir>/results/<variant>_f<k>.csv`` (the per-case CSV of
``run evaluating``); ``<work_dir>/results/summary.md`` holds the comparison table, which is also printed.
``--compare_only True --results_dir research/results/recipe_screen`` remakes the table of the committed screen without
training.
A pair still running when ``budget_s`` is spent is stopped and reported as unfinished, never as a result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from research.cross_validation import mean_se, pool_folds

BUNDLE_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Variant:
    """One recipe: overlays on train.json and config overrides, applied to both training and evaluation."""

    name: str
    config_files: list[str] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)
    evaluate_weights: str = ""  # a sub-folder of the run's ckpt_dir whose model.pt is evaluated; "" for model.pt


def _names_a_folder(text: str) -> bool:
    # letters, digits, '_' and '-': safe as one folder or file name on any system
    return bool(text) and all(c.isalnum() or c in "_-" for c in text)


def load_variants(path: str | os.PathLike) -> list[Variant]:
    """The variants of a screen file, checked: unique names of letters, digits, '_' and '-'; known keys."""
    entries = json.loads(Path(path).read_text())
    if not isinstance(entries, list) or not entries:
        raise ValueError(
            f"'{path}' must hold a JSON list of variants: "
            '[{"name": "baseline"}, {"name": "lr1e-3", "overrides": {"learning_rate": 0.001}}]'
        )
    variants = []
    for i, entry in enumerate(entries):
        unknown = set(entry) - {"name", "config_files", "overrides", "evaluate_weights", "comment"}
        if "name" not in entry or unknown:
            raise ValueError(
                f"'{path}', variant {i}: give 'name' and optionally 'config_files', 'overrides', "
                f"'evaluate_weights', 'comment' (unknown keys: {sorted(unknown)})."
            )
        name = str(entry["name"])
        if not _names_a_folder(name):
            raise ValueError(
                f"'{path}', variant {i}: name '{name}' may hold only letters, digits, '_' and '-' "
                "(it names folders and files)."
            )
        if any(v.name == name for v in variants):
            raise ValueError(f"'{path}': variant name '{name}' is used twice.")
        weights = str(entry.get("evaluate_weights", ""))
        if weights and not _names_a_folder(weights):
            raise ValueError(
                f"'{path}', variant {i}: evaluate_weights '{weights}' must name one sub-folder of the "
                "run's ckpt_dir (letters, digits, '_' and '-'), e.g. \"ema_fast\"."
            )
        variants.append(Variant(name, list(entry.get("config_files", [])), dict(entry.get("overrides", {})), weights))
    return variants


def pair_name(variant_name: str, fold: int) -> str:
    """The name of one (variant, fold) pair: its run folder, and ``<name>.csv`` its per-case results."""
    return f"{variant_name}_f{fold}"


def _cli_args(overrides: dict) -> list[str]:
    # monai.bundle's command line goes through fire, which reads Python literals: repr, not JSON (true != True)
    return [
        f"--{key}={value!r}" if not isinstance(value, str) else f"--{key}={value}" for key, value in overrides.items()
    ]


def commands(variant: Variant, fold: int, dataset_dir: str, run_dir: Path, extra: dict) -> list[list[str]]:
    """The training and the evaluation command of one (variant, fold) pair, run from the bundle root."""
    common = [
        "--meta_file",
        "configs/metadata.json",
        "--dataset_dir",
        dataset_dir,
        "--fold",
        str(fold),
        *_cli_args({**extra, **variant.overrides}),
    ]
    evaluated = run_dir / "models" / variant.evaluate_weights if variant.evaluate_weights else run_dir / "models"
    train_files = ["configs/train.json", *variant.config_files]
    eval_files = ["configs/train.json", "configs/evaluate.json", *variant.config_files]
    train = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        repr(train_files),
        "--val_interval",
        "0",
        "--tensorboard_dir",
        str(run_dir / "runs"),
        "--ckpt_dir",
        str(run_dir / "models"),
        *common,
    ]
    evaluate = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "evaluating",
        "--config_file",
        repr(eval_files),
        "--output_dir",
        str(run_dir / "eval"),
        "--ckpt_dir",
        str(evaluated),
        *common,
    ]
    return [train, evaluate]


@dataclass
class Job:
    """One (variant, fold) pair: its commands, run one after the other in their own process group."""

    variant: Variant
    fold: int
    run_dir: Path
    steps: list[list[str]]
    process: subprocess.Popen | None = None
    step: int = 0
    started: float = 0.0
    seconds: float = 0.0
    state: str = "waiting"  # waiting, running, done, failed, stopped

    @property
    def key(self) -> str:
        return pair_name(self.variant.name, self.fold)

    def start_step(self, env: dict) -> None:
        with open(self.run_dir / f"step{self.step}.log", "w") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                self.steps[self.step],
                cwd=BUNDLE_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def run_screen(
    variants: list[Variant],
    folds: list[int],
    dataset_dir: str,
    work_dir: str | os.PathLike,
    max_parallel: int = 8,
    budget_s: float = 3600.0,
    extra: dict | None = None,
    threads_per_job: int = 1,
    results_dir: str | os.PathLike | None = None,
) -> list[Job]:
    """Run every (variant, fold) pair, at most ``max_parallel`` at once, variants in the given order; stop what
    still runs after ``budget_s`` seconds. Each finished pair's per-case CSV is copied to ``results_dir``
    (default ``<work_dir>/results``) as ``<variant>_f<fold>.csv``. Returns the jobs with their final state."""
    work = Path(work_dir)
    results = Path(results_dir) if results_dir else work / "results"
    results.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads_per_job),
        "MKL_NUM_THREADS": str(threads_per_job),
        "PYTHONUNBUFFERED": "1",
    }
    jobs = []
    for variant in variants:
        for fold in folds:
            run_dir = work / pair_name(variant.name, fold)
            jobs.append(Job(variant, fold, run_dir, commands(variant, fold, dataset_dir, run_dir, extra or {})))
    earlier = [f"{j.key}.csv" for j in jobs if (results / f"{j.key}.csv").exists()]
    if earlier:  # a pair that fails now must not be reported with an earlier run's result
        raise FileExistsError(
            f"'{results}' already holds results of these pairs ({', '.join(earlier)}): give "
            "another --work_dir or --results_dir, or move those files away."
        )
    for job in jobs:
        job.run_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + budget_s
    while any(j.state in ("waiting", "running") for j in jobs):
        for job in jobs:
            if job.state == "running" and job.process.poll() is not None:
                if job.process.returncode != 0:
                    job.state = "failed"
                    print(
                        f"[screen] {job.key} failed in step {job.step}: see {job.run_dir}/step{job.step}.log",
                        flush=True,
                    )
                elif job.step + 1 < len(job.steps):
                    job.step += 1
                    job.start_step(env)
                else:
                    job.state, job.seconds = "done", time.monotonic() - job.started
                    shutil.copy(job.run_dir / "eval" / "val_mean_dice_raw.csv", results / f"{job.key}.csv")
                    print(f"[screen] {job.key} done in {job.seconds:.0f} s", flush=True)
        running = sum(j.state == "running" for j in jobs)
        for job in jobs:
            if running >= max_parallel:
                break
            if job.state == "waiting":
                job.state, job.started = "running", time.monotonic()
                job.start_step(env)
                running += 1
        if time.monotonic() > deadline:
            for job in jobs:
                if job.state == "running":
                    os.killpg(job.process.pid, 9)
                    job.state = "stopped"
                elif job.state == "waiting":
                    job.state = "stopped"
            print(f"[screen] budget of {budget_s:.0f} s spent; unfinished pairs stopped", flush=True)
            break
        time.sleep(2)
    return jobs


def compare(
    results_dir: str | os.PathLike,
    variants: list[Variant],
    folds: list[int],
    reference: str,
    jobs: list[Job] | None = None,
    class_names: list[str] | None = None,
) -> str:
    """A markdown table: per variant, the mean Dice of each class and of their mean over the cases of its
    finished folds, and the per-case difference of the mean from the reference's on the cases both have (mean,
    standard error, cases better)."""
    results = Path(results_dir)

    def cases_of(name: str) -> tuple[list[int], dict[str, list[float]]]:
        done = [fold for fold in folds if (results / f"{pair_name(name, fold)}.csv").exists()]
        if not done:
            return done, {}
        # the folds of one variant hold disjoint cases with the same columns; pool_folds checks both
        per_fold = pool_folds([results / f"{pair_name(name, fold)}.csv" for fold in done])[1]
        return done, {case: row for cases in per_fold.values() for case, row in cases.items()}

    ref = cases_of(reference)[1]
    n_classes = len(next(iter(ref.values()))) - 1 if ref else 0
    names = list(class_names or [f"class{i}" for i in range(n_classes)])
    seconds = {j.key: j.seconds for j in jobs or [] if j.state == "done"}
    header = [
        "variant",
        "folds done",
        "cases",
        *names,
        "mean Dice",
        "vs reference",
        "standard error",
        "cases better",
        "minutes per run",
    ]
    lines = [
        f"Reference: {reference}. Difference: per case, mean Dice of the variant minus the reference's, on "
        "the cases both have.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|" + "---:|" * (len(header) - 2),
    ]
    for variant in variants:
        done, cases = cases_of(variant.name)
        if not cases:
            lines.append(f"| {variant.name} | none | 0 |" + " |" * (len(header) - 3))
            continue
        means = [mean_se([row[i] for row in cases.values()])[0] for i in range(len(names) + 1)]
        times = [seconds[key] for key in (pair_name(variant.name, f) for f in done) if key in seconds]
        cells = [variant.name, ",".join(map(str, done)), str(len(cases)), *(f"{m:.4f}" for m in means)]
        diffs = [cases[c][-1] - ref[c][-1] for c in sorted(set(cases) & set(ref))]
        if variant.name != reference and len(diffs) > 1:
            d, se = mean_se(diffs)
            cells += [f"{d:+.4f}", f"{se:.4f}", f"{sum(x > 0 for x in diffs)} of {len(diffs)}"]
        else:
            cells += ["", "", ""]
        cells.append(f"{sum(times) / len(times) / 60:.1f}" if times else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(
    variants_file: str,
    folds: list[int] = (0, 1),
    dataset_dir: str = "../shared/data/Task04_Hippocampus",
    work_dir: str = "/tmp/screen",
    max_parallel: int = 8,
    budget_s: float = 3600.0,
    reference: str | None = None,
    threads_per_job: int = 1,
    results_dir: str | None = None,
    compare_only: bool = False,
    class_names: list[str] | None = None,
    only: list[str] | None = None,
    **extra,
) -> None:
    """Run the screen and print (and write ``<results_dir>/summary.md``) the comparison table.

    ``results_dir`` defaults to ``<work_dir>/results``. With ``compare_only`` nothing is trained: the table is
    made from the per-case CSVs already in ``results_dir`` (``research/results/recipe_screen`` holds a committed screen).
    ``only`` names the variants to run (the others' finished results still enter the table), so one screen can be
    shared out over several commands. Further ``--id value`` options are config overrides for every run
    (``--num_workers 1``)."""
    variants = load_variants(variants_file)
    if isinstance(only, str):  # the command line gives a single name as a string
        only = [only]
    unknown = sorted(set(only or []) - {v.name for v in variants})
    if unknown:
        raise ValueError(f"--only names {unknown}, which are not variants in '{variants_file}'.")
    folds = [int(f) for f in folds]
    reference = reference or variants[0].name
    if reference not in {v.name for v in variants}:
        raise ValueError(f"--reference '{reference}' is none of the variants in '{variants_file}'.")
    results = Path(results_dir) if results_dir else Path(work_dir) / "results"
    jobs = None
    if not compare_only:
        chosen = [v for v in variants if only is None or v.name in only]
        jobs = run_screen(chosen, folds, dataset_dir, work_dir, max_parallel, budget_s, extra, threads_per_job, results)
    elif not results.is_dir():
        raise FileNotFoundError(
            f"--results_dir '{results}' does not exist: give the folder that holds the "
            "<variant>_f<fold>.csv files of a screen."
        )
    table = compare(results, variants, folds, reference, jobs, class_names)
    unfinished = [j.key + f" ({j.state})" for j in jobs or [] if j.state != "done"]
    if unfinished:
        table += "\nUnfinished: " + ", ".join(unfinished) + "\n"
    (results / "summary.md").write_text(table)
    print(table)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
