"""Data lists for the bundle: MSD Task04 Hippocampus (or any MSD-layout task) with a patient-level split.

The configs call :func:`msd_datalist` for the training and validation lists. Each MSD case is one patient,
so splitting cases is splitting patients. The split is a seeded permutation of the sorted case names cut into
``num_folds`` folds: the same folder, fold and seed always give the same split, on any machine.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

from .checks import check_images, is_whole_number

logger = logging.getLogger(__name__)

MSD_TASK = "Task04_Hippocampus"


IMAGE_SUFFIXES = (".nii.gz", ".nii")


def image_stem(path: str | os.PathLike) -> str:
    """The file name of ``path`` without its NIfTI extension, in any case (``case.NII.GZ`` -> ``case``): a case's
    name in dataset.json, and the name of an input's prediction."""
    name = os.path.basename(str(path))
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def ensure_msd_dataset(dataset_dir: str | os.PathLike, task: str = MSD_TASK, download: bool = True) -> Path:
    """Make sure ``dataset_dir`` holds an MSD task (``dataset.json``, ``imagesTr``, ``labelsTr``).

    If it does not and ``download`` is true, fetch the task with MONAI's Decathlon downloader (checksum
    checked) into ``dataset_dir``'s parent. Otherwise, or if the download fails, stop with an error that says
    where the data must go.
    """
    root = Path(dataset_dir).expanduser()
    if (root / "dataset.json").is_file():
        return root
    hint = (
        f"No MSD dataset at dataset_dir='{root}' (expected '{root / 'dataset.json'}' with imagesTr/ and labelsTr/). "
        f"Download {task}.tar from the Medical Segmentation Decathlon (http://medicaldecathlon.com), extract it so "
        f"that '{root}/dataset.json' exists, or pass --dataset_dir pointing at the extracted '{task}' folder."
    )
    if (root.parent / "dataset.json").is_file():  # the images folder of a task, instead of the task
        hint += f" '{root.parent}' holds a dataset.json: did you mean --dataset_dir {root.parent}?"
    if not download:
        raise FileNotFoundError(hint)
    if root.name != task:
        raise FileNotFoundError(hint + f" (automatic download needs dataset_dir to end with '{task}').")
    from monai.apps import download_and_extract
    from monai.apps.datasets import DecathlonDataset

    url, md5 = DecathlonDataset.resource[task], DecathlonDataset.md5[task]
    root.parent.mkdir(parents=True, exist_ok=True)
    tarfile = root.parent / f"{task}.tar"
    logger.info("dataset_dir '%s' is empty: downloading %s", root, url)
    try:
        download_and_extract(url=url, filepath=str(tarfile), output_dir=str(root.parent), hash_val=md5)
    except Exception as err:  # no network, proxy, checksum: all end in the same instruction
        raise FileNotFoundError(f"{hint} The automatic download failed: {err}") from err
    if not (root / "dataset.json").is_file():
        raise FileNotFoundError(hint + " (the downloaded archive did not contain it).")
    return root


def split_cases(names: list[str], fold: int, num_folds: int, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic K-fold split of case names: returns (training names, validation names) of ``fold``."""
    if not is_whole_number(num_folds) or num_folds < 1:
        raise ValueError(
            f"num_folds={num_folds!r}: set config id 'num_folds' to the number of folds, 2 or more (train.json's "
            "is 5), or evaluate every case with eval_split 'all'."
        )
    if not is_whole_number(fold) or not 0 <= fold < num_folds:
        raise ValueError(
            f"fold={fold!r} is out of range: set config id 'fold' to a whole number 0 .. {num_folds - 1} "
            f"(num_folds={num_folds})."
        )
    if not is_whole_number(seed):  # random.Random takes any hashable: a mistyped "1234" would give another split
        raise ValueError(f"config id 'split_seed' must be a whole number (train.json's is 12345), got {seed!r}.")
    order = sorted(set(names))
    random.Random(seed).shuffle(order)
    val = set(order[fold::num_folds])
    return [n for n in sorted(names) if n not in val], [n for n in sorted(names) if n in val]


def _read_manifest(path: Path) -> dict:
    """``dataset.json``, checked for what :func:`msd_datalist` reads: a JSON object whose ``training`` is a list
    of ``{"image": ..., "label": ...}`` entries (MSD's layout)."""
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"'{path}' (config id 'dataset_dir') is not valid JSON ({err}): fix it, or restore the "
            "dataset.json that came with the data."
        ) from None
    except OSError as err:  # a folder of that name, no permission
        raise ValueError(
            f"'{path}' (config id 'dataset_dir') cannot be read ({err.strerror}): make it a readable "
            "file, or point --dataset_dir at another MSD task folder."
        ) from None
    entries = manifest.get("training", []) if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        raise ValueError(
            f"'{path}' (config id 'dataset_dir') must be a JSON object whose 'training' is a list of "
            '{"image": ..., "label": ...} entries, as in the MSD tasks.'
        )
    for number, entry in enumerate(entries):
        if not (isinstance(entry, dict) and all(isinstance(entry.get(key), str) for key in ("image", "label"))):
            raise ValueError(
                f"'{path}' (config id 'dataset_dir'): entry {number} of 'training' is {entry!r}; each "
                "must name an 'image' and its "
                "'label' file, relative to the folder of dataset.json (e.g. {\"image\": "
                '"./imagesTr/case_001.nii.gz", "label": "./labelsTr/case_001.nii.gz"}).'
            )
    return manifest


def check_unique_entries(items: list[dict[str, str]], manifest: str | os.PathLike) -> list[dict[str, str]]:
    """Refuse a ``dataset.json`` that lists one image, one label map or one case name more than once: that case would
    count several times in training and in the mean Dice, and the patient-level split keys on the case name.

    Raises:
        ValueError: naming the file, each repeated entry with its positions and the fix.
    """
    repeated = []
    for key, what in (("image", "image"), ("label", "label map"), ("case", "case name")):
        seen: dict[str, list[int]] = {}
        for number, item in enumerate(items):
            value = item[key] if key == "case" else os.path.realpath(item[key])  # links to one file are one file
            seen.setdefault(value, []).append(number)
        repeated += [
            f"{what} '{value}' in entries {', '.join(map(str, numbers))}"
            for value, numbers in seen.items()
            if len(numbers) > 1
        ]
    if repeated:
        raise ValueError(
            f"'{manifest}' lists a case more than once under 'training', which would weight it several "
            "times in training and in the mean Dice:\n  "
            + "\n  ".join(repeated[:20])
            + "\nKeep one entry per case (entries are numbered from 0)."
        )
    return items


@dataclass
class MsdTask:
    """What ``dataset.json`` of an MSD task says: its labelled cases (``{"image", "label", "case"}``, files that
    exist), the label values it lists (None when they are not numbered), the image channels (its modalities), and a
    message for each listed file that is missing."""

    items: list[dict[str, str]]
    label_values: list[int] | None
    in_channels: int
    missing: list[str]


def read_task(root: Path, num_classes: int | None = None) -> MsdTask:
    """Read and check ``root/dataset.json`` (:func:`_read_manifest`, :func:`check_unique_entries`, its labels against
    ``num_classes``): the one reading of a task's manifest, for the workflows and ``python -m scripts.check_data``.

    Raises:
        ValueError: dataset.json is malformed, lists a case twice, or more labels than ``num_classes``.
    """
    manifest = _read_manifest(root / "dataset.json")
    labels = manifest.get("labels")
    numbered = isinstance(labels, dict) and all(str(k).isdigit() for k in labels)  # MSD: {"0": "background", ...}
    label_names = {int(k): name for k, name in labels.items()} if numbered else {}
    label_values = sorted(label_names) if numbered else None
    if label_values and num_classes is not None and label_values[-1] >= num_classes:
        listed = ", ".join(f"{k} {label_names[k]}" for k in label_values)
        raise ValueError(
            f"'{root / 'dataset.json'}' lists the labels {listed}, but config id 'num_classes' is {num_classes}: "
            f"the network needs one output per label, background included. Set --num_classes {label_values[-1] + 1}."
        )
    items, missing = [], []
    for entry in manifest.get("training", []):
        image, label = root / entry["image"], root / entry["label"]
        if not image.is_file() or not label.is_file():
            missing.append(
                f"'{root / 'dataset.json'}' lists '{entry['image']}' / '{entry['label']}' but the file is "
                "missing: restore it or remove the entry from dataset.json."
            )
            continue
        items.append({"image": str(image), "label": str(label), "case": image_stem(entry["image"])})
    check_unique_entries(items, root / "dataset.json")
    modalities = manifest.get("modality")
    in_channels = len(modalities) if isinstance(modalities, (dict, list)) and modalities else 1
    return MsdTask(items, label_values, in_channels, missing)


def msd_datalist(
    dataset_dir: str | os.PathLike,
    split: str = "training",
    fold: int = 0,
    num_folds: int = 5,
    seed: int = 12345,
    limit: int | None = None,
    download: bool = True,
    num_classes: int | None = None,
) -> list[dict[str, str]]:
    """The ``{"image", "label"}`` items of one side of the patient-level split of an MSD task.

    Args:
        dataset_dir: the MSD task folder (``dataset.json``, ``imagesTr``, ``labelsTr``).
        split: ``"training"`` (the other folds), ``"validation"`` (fold ``fold``) or ``"all"`` (every labelled
            case, e.g. new cases that evaluate a model trained on all of a task's local cases).
        fold: which fold validates, ``0 .. num_folds - 1``.
        num_folds: number of folds.
        seed: seed of the case permutation.
        limit: keep only the first ``limit`` items (quick runs, tests); None keeps all.
        download: fetch the MSD task when ``dataset_dir`` holds none (see :func:`ensure_msd_dataset`).
        num_classes: the network's outputs (config id ``num_classes``); when given, every label dataset.json lists
            must have one (labels numbered ``0 .. num_classes - 1``).
    """
    if split not in ("training", "validation", "all"):
        raise ValueError(
            f"split must be 'training', 'validation' or 'all', got '{split}': set the config id eval_split "
            "(evaluate.json) to one of them."
        )
    if limit is not None and (not is_whole_number(limit) or limit < 1):
        raise ValueError(
            f"config id 'data_limit' must be a number of cases, 1 or more, or null for every case; got " f"{limit!r}."
        )
    root = ensure_msd_dataset(dataset_dir, download=download)
    task = read_task(root, num_classes)
    if task.missing:
        raise FileNotFoundError(task.missing[0])
    items = task.items
    if not items:
        raise ValueError(
            f"'{root / 'dataset.json'}' lists no labelled cases under 'training': list the cases there "
            "(MSD layout), or point --dataset_dir at a folder whose dataset.json does."
        )
    if split == "all":
        chosen = items
    else:
        train_names, val_names = split_cases([i["case"] for i in items], fold, num_folds, seed)
        keep = set(train_names if split == "training" else val_names)
        chosen = [i for i in items if i["case"] in keep]
        if not chosen:
            raise ValueError(
                f"fold {fold} of num_folds={num_folds} leaves no {split} case among the {len(items)} cases of "
                f"'{root / 'dataset.json'}': lower num_folds, or evaluate every case with eval_split 'all'."
            )
    chosen = chosen[:limit] if limit else chosen
    # dataset.json says how many volumes an image holds and which labels exist: check every chosen case against it
    # now, so a bad file is named before caching and training start
    return check_images(
        chosen,
        spatial_dims=3,
        in_channels=task.in_channels,
        label_values=task.label_values,
        channels_from="the modalities listed in dataset.json",
    )


def image_datalist(inputs: str | os.PathLike | list) -> list[dict[str, str]]:
    """The ``{"image"}`` items for inference from a folder of NIfTI files, one file, or a list of files.

    A folder's ``.nii`` and ``.nii.gz`` files are taken whatever the case of their extension; any other file in it
    (hidden files aside) is named in a warning, never skipped silently.

    Raises:
        FileNotFoundError: naming the config id ``dataset_dir`` when nothing is found.
    """
    paths: list[Path] = []
    skipped: list[Path] = []
    entries = [Path(e).expanduser() for e in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    for entry in entries:
        if entry.is_dir():
            files = sorted(p for p in entry.iterdir() if p.is_file() and not p.name.startswith("."))
            # any case: scanners and Windows tools write CASE.NII.GZ, which nibabel reads like case.nii.gz
            paths += [p for p in files if p.name.lower().endswith(IMAGE_SUFFIXES)]
            skipped += [p for p in files if not p.name.lower().endswith(IMAGE_SUFFIXES)]
        elif entry.is_file():
            paths.append(entry)
        else:
            raise FileNotFoundError(
                f"inference input '{entry}' (config id 'dataset_dir') does not exist: pass --dataset_dir with a "
                "folder of .nii/.nii.gz images or one image file."
            )
    if not paths:
        inside = sorted(f"{d / sub}" for d in entries for sub in ("imagesTs", "imagesTr") if (d / sub).is_dir())
        raise FileNotFoundError(
            f"no .nii or .nii.gz images in {inputs} (config id 'dataset_dir'): pass --dataset_dir with a folder "
            "of NIfTI images (e.g. an MSD imagesTs folder)."
            + (f" It is an MSD task folder: its images are in {' and '.join(inside)}." if inside else "")
        )
    if skipped:  # never skip a file without a word: it may be an image saved under another extension
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        shown = ", ".join(f"'{p.name}'" for p in skipped[:10]) + more
        logger.warning(
            "inference skips %d file(s) in %s (config id 'dataset_dir') that are not .nii or .nii.gz "
            "images: %s. Convert any image among them to NIfTI to segment it.",
            len(skipped),
            ", ".join(f"'{e}'" for e in entries if e.is_dir()),
            shown,
        )
    return [{"image": str(p)} for p in paths]
