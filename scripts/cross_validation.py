"""Pool per-case Dice of several folds into one cross-validated estimate of a training recipe.

Each fold's model is evaluated on its own held-out cases (``run evaluating --fold k --ckpt_dir <fold k model>``
writes ``val_mean_dice_raw.csv``: one row per case, one column per class, and ``mean``). The folds' cases are
disjoint, so the pooled rows are cases that no model saw while training; their mean estimates what the recipe
reaches on new cases, and the spread over cases gives its standard error::

    python -m scripts.cross_validation docs/eval_fold0_per_case.csv docs/eval_fold1_per_case.csv \
        --class_names "['anterior','posterior']" --out docs/cross_validation.md
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path


def read_per_case(path: str | os.PathLike) -> dict[str, list[float]]:
    """``{case file name: [class Dice..., mean]}`` of one MetricsSaver per-case CSV (comma or tab separated)."""
    path = Path(path)
    text = path.read_text()
    rows = list(csv.reader(text.splitlines(), delimiter="\t" if "\t" in text.splitlines()[0] else ","))
    header, body = rows[0], [r for r in rows[1:] if r]
    if header[0] != "filename" or header[-1] != "mean" or len(header) < 3:
        raise ValueError(f"'{path}' is not a per-case Dice CSV (header 'filename, class0, ..., mean'): pass the "
                         "val_mean_dice_raw.csv that run evaluating writes into output_dir.")
    cases = {}
    for row in body:
        name = os.path.basename(row[0])
        if name in cases:
            raise ValueError(f"'{path}' lists case '{name}' twice.")
        cases[name] = [float(v) for v in row[1:]]
    return cases


def pool_folds(paths: Sequence[str | os.PathLike]) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    """The sorted case names and the per-case rows of each fold's CSV, keyed by file. Stops if a case is in two
    files: the folds of one cross-validation hold disjoint cases, so such files are not one cross-validation."""
    folds, seen = {}, {}
    columns = None
    for path in paths:
        cases = read_per_case(path)
        for name in cases:
            if name in seen:
                raise ValueError(f"case '{name}' is in both '{seen[name]}' and '{path}': the folds of a "
                                 "cross-validation hold disjoint cases; pass one CSV per fold.")
            seen[name] = str(path)
        width = {len(v) for v in cases.values()}
        if columns is None:
            columns = width
        elif width != columns:
            raise ValueError(f"'{path}' has another number of classes than '{paths[0]}'.")
        folds[str(path)] = cases
    return sorted(seen), folds


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd / math.sqrt(n)


def summarize(paths: Sequence[str | os.PathLike], class_names: Sequence[str] | None = None) -> str:
    """A markdown table: per fold and pooled, the cases, the mean Dice of each class and of their mean, and the
    pooled mean's standard error and 95 % interval (normal approximation over cases)."""
    if not paths:
        raise ValueError("pass the per-case CSVs of the folds, one per fold.")
    _, folds = pool_folds(paths)
    n_classes = len(next(iter(next(iter(folds.values())).values()))) - 1
    names = list(class_names) if class_names else [f"class{i}" for i in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(f"class_names has {len(names)} names but the CSVs have {n_classes} classes.")
    header = ["cases", "n", *names, "mean"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    pooled: list[list[float]] = []
    for path, cases in folds.items():
        rows = list(cases.values())
        pooled += rows
        cols = [sum(r[i] for r in rows) / len(rows) for i in range(n_classes + 1)]
        lines.append(f"| {Path(path).name} | {len(rows)} | " + " | ".join(f"{c:.4f}" for c in cols) + " |")
    cols = [_mean_se([r[i] for r in pooled]) for i in range(n_classes + 1)]
    lines.append(f"| **all folds** | {len(pooled)} | " + " | ".join(f"{m:.4f}" for m, _ in cols[:-1])
                 + f" | **{cols[-1][0]:.4f}** |")
    mean, se = cols[-1]
    lines += ["", f"Mean Dice over {len(pooled)} held-out cases: {mean:.4f}, standard error {se:.4f} "
              f"(95 %: {mean - 1.96 * se:.4f} to {mean + 1.96 * se:.4f})."]
    return "\n".join(lines) + "\n"


def main(*csv_files: str, class_names: Sequence[str] | None = None, out: str | None = None) -> None:
    """Print (and with ``out`` write) the pooled table of the given per-case CSVs, one per fold."""
    table = summarize(csv_files, class_names)
    print(table)
    if out:
        Path(out).write_text(table)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
