"""Pool per-case Dice of several folds into one cross-validated estimate of a training recipe.

Each fold's model is evaluated on its own held-out cases (``run evaluating --fold k --ckpt_dir <fold k model>``
writes ``val_mean_dice_raw.csv``: one row per case, one column per class, and ``mean``). The folds' cases are
disjoint, so the pooled rows are cases that no model saw while training; their mean estimates what the recipe
reaches on new cases, and the spread over cases gives its standard error::

    python -m research.cross_validation research/results/eval_fold0_per_case.csv research/results/eval_fold1_per_case.csv \
        --class_names "['anterior','posterior']" --out research/results/cross_validation.md
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path


def read_per_case(path: str | os.PathLike) -> tuple[list[str], dict[str, list[float]]]:
    """The header and ``{case file name: [class Dice..., mean]}`` of one MetricsSaver per-case CSV (comma or tab
    separated)."""
    path = Path(path)
    lines = path.read_text().splitlines()
    rows = [r for r in csv.reader(lines, delimiter="\t" if lines and "\t" in lines[0] else ",") if r]
    if not rows or rows[0][0] != "filename" or rows[0][-1] != "mean" or len(rows[0]) < 3:
        raise ValueError(
            f"'{path}' is not a per-case Dice CSV (header 'filename, class0, ..., mean'): pass the "
            "val_mean_dice_raw.csv that run evaluating writes into output_dir."
        )
    cases = {}
    for row in rows[1:]:
        name = os.path.basename(row[0])
        if name in cases:
            raise ValueError(f"'{path}' lists case '{name}' twice.")
        cases[name] = [float(v) for v in row[1:]]
    return rows[0], cases


def pool_folds(paths: Sequence[str | os.PathLike]) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    """The CSVs' header and the per-case rows of each fold's CSV, keyed by file. Stops if a case is in two files
    (the folds of one cross-validation hold disjoint cases) or if the files have different columns."""
    folds: dict[str, dict[str, list[float]]] = {}
    seen: dict[str, str] = {}
    first_header = None
    for path in paths:
        header, cases = read_per_case(path)
        if first_header is None:
            first_header = header
        elif header != first_header:
            raise ValueError(f"'{path}' has other columns than '{paths[0]}': {header} vs {first_header}.")
        for name in cases:
            if name in seen:
                raise ValueError(
                    f"case '{name}' is in both '{seen[name]}' and '{path}': the folds of a "
                    "cross-validation hold disjoint cases; pass one CSV per fold."
                )
            seen[name] = str(path)
        folds[str(path)] = cases
    return first_header, folds


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """The mean of ``values`` and its standard error (sample standard deviation over the square root of n)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd / math.sqrt(n)


def summarize(paths: Sequence[str | os.PathLike], class_names: Sequence[str] | None = None) -> str:
    """A markdown table: per fold and pooled, the cases, the mean Dice of each class and of their mean, and the
    pooled mean's standard error and 95 % interval (normal approximation over cases)."""
    if not paths:
        raise ValueError("pass the per-case CSVs of the folds, one per fold.")
    csv_header, folds = pool_folds(paths)
    n_columns = len(csv_header) - 1  # the classes and their mean
    names = list(class_names) if class_names else [f"class{i}" for i in range(n_columns - 1)]
    if len(names) != n_columns - 1:
        raise ValueError(f"class_names has {len(names)} names but the CSVs have {n_columns - 1} classes.")
    header = ["cases", "n", *names, "mean"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]

    def row(label: str, rows: list[list[float]], bold_mean: bool = False) -> tuple[float, float]:
        cols = [mean_se([r[i] for r in rows]) for i in range(n_columns)]
        cells = [f"{m:.4f}" for m, _ in cols]
        if bold_mean:
            cells[-1] = f"**{cells[-1]}**"
        lines.append(f"| {label} | {len(rows)} | " + " | ".join(cells) + " |")
        return cols[-1]

    pooled: list[list[float]] = []
    for path, cases in folds.items():
        row(Path(path).name, list(cases.values()))
        pooled += cases.values()
    mean, se = row("**all folds**", pooled, bold_mean=True)
    lines += [
        "",
        f"Mean Dice over {len(pooled)} held-out cases: {mean:.4f}, standard error {se:.4f} "
        f"(95 %: {mean - 1.96 * se:.4f} to {mean + 1.96 * se:.4f}).",
    ]
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
