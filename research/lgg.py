"""The LGG brain MRI data set (Buda et al. 2019; Kaggle "lgg-mri-segmentation", ``kaggle_3m``) for the 2-D overlay
``research/configs/lgg.json``: the patient-level data list, the transforms that read its slices, and its metrics.

Layout, as distributed: ``kaggle_3m/<patient>/<patient>_<n>.tif`` (256 x 256 RGB: R pre-contrast, G FLAIR, B
post-contrast) beside ``<patient>_<n>_mask.tif`` (values 0 and 255); a lossless PNG conversion with the same stems
reads the same. A patient's slices are strongly correlated, so the folds split patients, never slices, unless
``split_by="slice"`` asks for the leaky slice-level split the seed's comparison used (to reproduce it).

Metrics, as the field reports them and as the seed did, all from one set of per-slice pixel counts:

- **per-patient Dice** (Buda et al. 2019: mean 82 %, median 85 %): a patient's slices stacked into a volume, Dice
  of the abnormality over that volume;
- **per-slice Dice**: mean over the slices whose mask holds abnormality (MONAI's ``ignore_empty``), and over all
  slices (an empty slice predicted empty counts 1, predicted with any abnormality 0);
- **seed-style Dice**: Dice pooled over the pixels of a batch of slices, for background and abnormality, averaged
  over the two classes and then over the batches. The background class, about 99 % of every slice, lifts it far
  above the other two; it is what the seed's 0.770 and 0.792 were.

``python -m research.lgg score <eval dir or lgg_slices.csv>`` recomputes ``lgg_patients.csv`` and
``lgg_summary.json`` from the per-slice counts that evaluation writes (:class:`LGGResultsWriter`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import statistics
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.config import KeysCollection
from monai.transforms import MapTransform

from scripts.checks import is_whole_number
from scripts.data import split_cases

logger = logging.getLogger(__name__)

SUFFIXES = (".tif", ".tiff", ".png")  # the originals first: where both are present the original is read
CHANNELS = {"flair": 1, "gray": 1, "all": 3}
SLICES_CSV, PATIENTS_CSV, SUMMARY_JSON = "lgg_slices.csv", "lgg_patients.csv", "lgg_summary.json"
_SLICE = re.compile(r"^(?P<patient>.+)_(?P<slice>\d+)$")


def channel_count(lgg_channels: str) -> int:
    """The network's input channels for config id ``lgg_channels``: ``"flair"`` (the G channel alone, the FLAIR
    sequence the masks were drawn on), ``"gray"`` (the RGB slice as one luminance image, as an image viewer's
    grayscale conversion gives) or ``"all"`` (pre-contrast, FLAIR, post-contrast)."""
    if lgg_channels not in CHANNELS:
        raise ValueError(
            f"config id 'lgg_channels' is {lgg_channels!r}: set it to 'flair' (FLAIR only, one channel), "
            "'gray' (the RGB slice as one grayscale channel) or 'all' (the three sequences)."
        )
    return CHANNELS[lgg_channels]


def _patients_root(dataset_dir: str | os.PathLike) -> Path:
    """The folder holding the patient folders: ``dataset_dir`` itself, or its ``kaggle_3m`` (or
    ``lgg-mri-segmentation/kaggle_3m``) sub-folder, so the download's top folder works as well."""
    root = Path(dataset_dir).expanduser()
    for candidate in (root, root / "kaggle_3m", root / "lgg-mri-segmentation" / "kaggle_3m"):
        # a few folders suffice to tell patient folders (the download also holds README.md and data.csv)
        folders = sorted(p for p in candidate.iterdir() if p.is_dir()) if candidate.is_dir() else []
        if any(_slices_of(p) for p in folders[:3]):
            return candidate
    raise FileNotFoundError(
        f"no LGG patient folders at dataset_dir='{root}': expected '<dataset_dir>/<patient>/<patient>_<n>.tif' (or "
        ".png) beside '<patient>_<n>_mask.tif', as in the Kaggle data set's kaggle_3m folder. Pass --dataset_dir "
        "pointing at kaggle_3m."
    )


def _slices_of(folder: Path) -> list[dict[str, Any]]:
    """The ``{"image", "label", "patient", "slice"}`` items of one patient folder, in slice order; one item per
    stem, the original ``.tif`` where a ``.png`` conversion lies beside it."""
    items: dict[int, dict[str, Any]] = {}
    for suffix in SUFFIXES:
        for image in folder.glob(f"*{suffix}"):
            match = _SLICE.match(image.stem)
            if image.stem.endswith("_mask") or not match:
                continue
            number = int(match["slice"])
            if number in items:
                continue
            label = image.with_name(f"{image.stem}_mask{suffix}")
            if not label.is_file():
                raise FileNotFoundError(
                    f"'{image}' has no mask '{label.name}' beside it (config id 'dataset_dir'): "
                    "restore the mask, or remove the slice."
                )
            items[number] = {"image": str(image), "label": str(label), "patient": folder.name, "slice": number}
    return [items[n] for n in sorted(items)]


def split_slices(
    items: Sequence[Mapping[str, Any]], fold: int, num_folds: int, seed: int, split_by: str = "patient"
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(training items, validation items) of ``fold``: patients (``split_by="patient"``) or single slices
    (``"slice"``, the leaky split) cut into ``num_folds`` folds by the bundle's seeded permutation
    (:func:`scripts.data.split_cases`)."""
    if split_by not in ("patient", "slice"):
        raise ValueError(
            f"config id 'lgg_split_by' is {split_by!r}: set it to 'patient' (folds of patients, the sound "
            "split) or 'slice' (folds of single slices, leaky: only to reproduce the seed's split)."
        )

    def unit(item: Mapping[str, Any]) -> str:
        return item["patient"] if split_by == "patient" else f"{item['patient']}_{item['slice']}"

    _, validation = split_cases([unit(i) for i in items], fold, num_folds, seed)
    held_out = set(validation)
    return [i for i in items if unit(i) not in held_out], [i for i in items if unit(i) in held_out]


def lgg_datalist(
    dataset_dir: str | os.PathLike,
    split: str = "training",
    fold: int = 0,
    num_folds: int = 5,
    seed: int = 12345,
    limit: int | None = None,
    split_by: str = "patient",
) -> list[dict[str, Any]]:
    """The slice items of one side of the split of an LGG ``kaggle_3m`` folder.

    Args:
        dataset_dir: the ``kaggle_3m`` folder (or the folder holding it): one folder per patient.
        split: ``"training"`` (the other folds), ``"validation"`` (fold ``fold``) or ``"all"``.
        fold: which fold validates, ``0 .. num_folds - 1``.
        num_folds: number of folds.
        seed: seed of the permutation (config id ``split_seed``).
        limit: keep only the first ``limit`` patients (in sorted order) of the chosen side (config id
            ``data_limit``); None keeps all.
        split_by: ``"patient"`` or ``"slice"`` (config id ``lgg_split_by``), see :func:`split_slices`.

    Returns:
        ``{"image", "label", "patient", "slice"}`` dicts, sorted by patient and slice number.
    """
    if split not in ("training", "validation", "all"):
        raise ValueError(
            f"split must be 'training', 'validation' or 'all', got '{split}': set the config id "
            "eval_split (evaluate.json) to one of them."
        )
    if limit is not None and (not is_whole_number(limit) or limit < 1):
        raise ValueError(
            f"config id 'data_limit' must be a number of patients, 1 or more, or null for every patient; "
            f"got {limit!r}."
        )
    root = _patients_root(dataset_dir)
    items = [item for folder in sorted(p for p in root.iterdir() if p.is_dir()) for item in _slices_of(folder)]
    chosen = items if split == "all" else split_slices(items, fold, num_folds, seed, split_by)[split == "validation"]
    if not chosen:
        raise ValueError(
            f"fold {fold} of num_folds={num_folds} leaves no {split} slice among the {len(items)} of "
            f"'{root}': lower num_folds, or evaluate every slice with eval_split 'all'."
        )
    if limit:
        kept = sorted({i["patient"] for i in chosen})[:limit]
        chosen = [i for i in chosen if i["patient"] in kept]
    return chosen


class SelectChannelsd(MapTransform):
    """The input channels config id ``lgg_channels`` asks for, from a ``(3, H, W)`` RGB slice: ``"flair"`` keeps
    channel 1, ``"gray"`` takes ITU-R 601 luminance (``0.299 R + 0.587 G + 0.114 B``, PIL's ``convert("L")``),
    ``"all"`` keeps the three."""

    def __init__(self, keys: KeysCollection, channels: str = "flair", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        channel_count(channels)
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if image.shape[0] != 3:
                raise ValueError(
                    f"'{getattr(image, 'meta', {}).get('filename_or_obj', key)}' has {image.shape[0]} "
                    "channels; the LGG slices are RGB (pre-contrast, FLAIR, post-contrast): check "
                    "--dataset_dir."
                )
            if self.channels == "flair":
                d[key] = image[1:2]
            elif self.channels == "gray":
                weights = torch.as_tensor([0.299, 0.587, 0.114], dtype=image.dtype).reshape(3, *[1] * (image.ndim - 1))
                d[key] = (image * weights).sum(0, keepdim=True)
        return d


class MaskToLabeld(MapTransform):
    """A mask of 0 and 255 (the data set's) or of 0 and 1 as the label map 0 (background), 1 (abnormality).

    Any other value stops the run naming the file: a mask saved with smoothing or by a lossy format would otherwise
    be thresholded into a silently different ground truth."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            values = set(torch.unique(torch.as_tensor(mask)).tolist())
            if not values <= {0, 255} and not values <= {0, 1}:
                shown = sorted(values)[:8]
                raise ValueError(
                    f"mask '{getattr(mask, 'meta', {}).get('filename_or_obj', key)}' holds the values "
                    f"{shown}; LGG masks hold 0 and 255 (or 0 and 1): restore the original mask file."
                )
            d[key] = (mask > 0).to(mask.dtype)
        return d


def _patient_and_slice(path: str) -> tuple[str, int]:
    stem = Path(path).stem
    match = _SLICE.match(stem)
    return Path(path).parent.name, int(match["slice"]) if match else -1


def slice_counts(pred: torch.Tensor, label: torch.Tensor) -> dict[str, int]:
    """Pixel counts of the abnormality (class 1) of one slice, from one-hot ``(C, H, W)`` maps (or ``(1, H, W)``
    class maps): true positives, false positives, false negatives, all pixels."""
    p = pred[1] > 0.5 if pred.shape[0] > 1 else pred[0] > 0.5
    y = label[1] > 0.5 if label.shape[0] > 1 else label[0] > 0.5
    return {"tp": int((p & y).sum()), "fp": int((p & ~y).sum()), "fn": int((~p & y).sum()), "pixels": int(p.numel())}


def dice(tp: float, fp: float, fn: float) -> float:
    """``2 TP / (2 TP + FP + FN)``; NaN when the mask and the prediction are both empty."""
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else math.nan


def read_slices(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of an ``lgg_slices.csv``, numbers as ints."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("slice", "tp", "fp", "fn", "pixels"):
            row[key] = int(row[key])
    return rows


def per_patient(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per patient: its slices' counts summed, as if the slices were stacked into a volume, and the Dice of that
    volume (Buda et al. 2019's per-patient Dice)."""
    patients: dict[str, dict[str, Any]] = {}
    for row in rows:
        total = patients.setdefault(row["patient"], {"slices": 0, "tp": 0, "fp": 0, "fn": 0, "pixels": 0})
        total["slices"] += 1
        for key in ("tp", "fp", "fn", "pixels"):
            total[key] += row[key]
    for total in patients.values():
        total["dice"] = dice(total["tp"], total["fp"], total["fn"])
    return dict(sorted(patients.items()))


def seed_style_dice(rows: Sequence[Mapping[str, Any]], batch_size: int = 16) -> float:
    """The seed's kind of figure: per batch of ``batch_size`` consecutive slices, Dice pooled over the batch's
    pixels for background and for abnormality, averaged over the two classes, then over the batches. A batch with no
    abnormality in its masks nor in the prediction scores 1 for it (nothing to find, nothing found)."""
    scores = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        tp, fp, fn = (sum(r[k] for r in batch) for k in ("tp", "fp", "fn"))
        tn = sum(r["pixels"] for r in batch) - tp - fp - fn
        foreground = dice(tp, fp, fn)
        scores.append((dice(tn, fn, fp) + (1.0 if math.isnan(foreground) else foreground)) / 2)
    return float(np.mean(scores)) if scores else math.nan


def summarize(rows: Sequence[Mapping[str, Any]], seed_batch_size: int = 16) -> dict[str, Any]:
    """The figures of one evaluation: per-patient Dice (mean, median, SD), per-slice Dice (slices with abnormality,
    all slices) and the seed-style Dice, side by side."""
    patients = [p["dice"] for p in per_patient(rows).values() if not math.isnan(p["dice"])]
    slices = [dice(r["tp"], r["fp"], r["fn"]) for r in rows]
    with_abnormality = [s for r, s in zip(rows, slices) if r["tp"] + r["fn"] > 0]
    return {
        "patients": len(patients),
        "slices": len(rows),
        "patient_dice_mean": float(np.mean(patients)) if patients else math.nan,
        "patient_dice_median": float(np.median(patients)) if patients else math.nan,
        "patient_dice_sd": float(np.std(patients, ddof=1)) if len(patients) > 1 else math.nan,
        "slice_dice_abnormal": float(np.mean(with_abnormality)) if with_abnormality else math.nan,
        "slice_dice_all": float(np.mean([1.0 if math.isnan(s) else s for s in slices])) if slices else math.nan,
        "seed_style_dice": seed_style_dice(rows, seed_batch_size),
        "seed_batch_size": seed_batch_size,
    }


def write_results(
    rows: Sequence[Mapping[str, Any]],
    output_dir: str | os.PathLike,
    seed_batch_size: int = 16,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``lgg_patients.csv`` (one row per patient) and ``lgg_summary.json`` (:func:`summarize` and ``extra``)
    into ``output_dir``; returns the summary."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / PATIENTS_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["patient", "slices", "tp", "fp", "fn", "pixels", "dice"])
        for name, p in per_patient(rows).items():
            writer.writerow([name, p["slices"], p["tp"], p["fp"], p["fn"], p["pixels"], f"{p['dice']:.6f}"])
    summary = {**summarize(rows, seed_batch_size), **(extra or {})}
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


class LGGResultsWriter:
    """Evaluator handler: per-slice pixel counts of every evaluated slice into ``<output_dir>/lgg_slices.csv``, then
    the per-patient results and the summary (:func:`write_results`) when the evaluation completes, with the
    evaluation's seconds and seconds per patient (inference and scoring; the data are cached before it starts).

    Attached to the validation evaluator by ``research/configs/lgg.json``, so training's validations write them too
    (the last validation's files remain).

    Args:
        output_dir: folder of the files (config id ``output_dir``).
        seed_batch_size: slices per batch of the seed-style Dice.
    """

    def __init__(self, output_dir: str | os.PathLike, seed_batch_size: int = 16) -> None:
        self.output_dir = Path(output_dir)
        self.seed_batch_size = seed_batch_size
        self.rows: list[dict[str, Any]] = []
        self.started = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._count)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _start(self, engine: Engine) -> None:
        self.rows, self.started = [], time.perf_counter()

    def _count(self, engine: Engine) -> None:
        for item in engine.state.output:
            path = str(item["image"].meta["filename_or_obj"])
            patient, number = _patient_and_slice(path)
            self.rows.append(
                {"patient": patient, "slice": number, "file": path, **slice_counts(item["pred"], item["label"])}
            )

    def _write(self, engine: Engine) -> None:
        seconds = time.perf_counter() - self.started
        rows = sorted(self.rows, key=lambda r: (r["patient"], r["slice"]))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / SLICES_CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["patient", "slice", "file", "tp", "fp", "fn", "pixels"])
            writer.writeheader()
            writer.writerows(rows)
        patients = len({r["patient"] for r in rows})
        summary = write_results(
            rows,
            self.output_dir,
            self.seed_batch_size,
            {"eval_seconds": seconds, "seconds_per_patient": seconds / max(patients, 1)},
        )
        engine.logger.info(
            "LGG: per-patient Dice %.4f (median %.4f) over %d patients; per-slice %.4f (slices with abnormality); "
            "seed-style %.4f; %s",
            summary["patient_dice_mean"],
            summary["patient_dice_median"],
            summary["patients"],
            summary["slice_dice_abnormal"],
            summary["seed_style_dice"],
            self.output_dir / PATIENTS_CSV,
        )


def score(results: str, seed_batch_size: int = 16, output_dir: str | None = None) -> dict[str, Any]:
    """Command line: the per-patient results and summary from an evaluation's per-slice counts.

    Args:
        results: an evaluation's ``output_dir`` or its ``lgg_slices.csv``.
        seed_batch_size: slices per batch of the seed-style Dice.
        output_dir: where to write ``lgg_patients.csv`` and ``lgg_summary.json`` (default: beside the CSV).
    """
    path = Path(results)
    path = path / SLICES_CSV if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(
            f"'{path}' does not exist: give the output_dir of an evaluation with "
            "research/configs/lgg.json, or its lgg_slices.csv."
        )
    summary = write_results(read_slices(path), output_dir or path.parent, seed_batch_size)
    return summary


def wilcoxon_signed_rank(differences: Sequence[float]) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired differences (zeros dropped, ties given average ranks): the
    statistic W+ and its exact p-value, from the null distribution of the sum of positive (doubled, so whole)
    ranks, computed by dynamic programming (no SciPy in the bundle's environment)."""
    d = [x for x in differences if x != 0 and not math.isnan(x)]
    n = len(d)
    if n == 0:
        return math.nan, 1.0
    order = sorted(range(n), key=lambda i: abs(d[i]))
    ranks2 = [0] * n  # twice the average rank: whole numbers even with ties
    i = 0
    while i < n:
        j = i
        while j + 1 < n and abs(d[order[j + 1]]) == abs(d[order[i]]):
            j += 1
        for k in range(i, j + 1):
            ranks2[order[k]] = i + j + 2
        i = j + 1
    total = sum(ranks2)
    counts = [0] * (total + 1)  # ways to reach each sum of positive doubled ranks, every sign pattern equally likely
    counts[0] = 1
    for r in ranks2:
        for s in range(total, r - 1, -1):
            counts[s] += counts[s - r]
    w2 = sum(r for r, x in zip(ranks2, d) if x > 0)
    tail = min(sum(counts[: w2 + 1]), sum(counts[w2:]))
    return w2 / 2, min(1.0, 2 * tail / 2**n)


def paired(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, Any]:
    """``a - b`` on the keys both hold (patients): mean and median difference, how many better, Wilcoxon p."""
    keys = sorted(set(a) & set(b))
    diffs = [a[k] - b[k] for k in keys]
    w, p = wilcoxon_signed_rank(diffs)
    return {
        "n": len(diffs),
        "mean_difference": statistics.fmean(diffs) if diffs else math.nan,
        "median_difference": statistics.median(diffs) if diffs else math.nan,
        "better": sum(x > 0 for x in diffs),
        "worse": sum(x < 0 for x in diffs),
        "wilcoxon_w": w,
        "wilcoxon_p": p,
    }


if __name__ == "__main__":
    import fire

    fire.Fire({"score": score})
