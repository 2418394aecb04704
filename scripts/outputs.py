"""Where the bundle writes, checked so that no write destroys data the user did not ask to replace.

Inference writes one prediction per input into ``output_dir``. Each input gets a name of its own
(:class:`PredictionNames`): two inputs never map to one file. Before any work, :func:`check_output_dir` refuses an
``output_dir`` inside the data being read (an MSD task, or a folder of inputs), and any prediction path that already
holds a file which is not this bundle's earlier prediction of the same input: which file is which, a record in
``output_dir`` (:data:`RECORD_NAME`) says, written as each prediction is saved. Training and evaluation write into
their own folders (``ckpt_dir``, ``state_dir``, ``output_dir``, ``tensorboard_dir``): :func:`check_outside_dataset`
refuses any of them inside the dataset they read, and :func:`check_report_files` any evaluation report that would
replace a file other than an earlier evaluation's report.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .checks import check_writable_dir
from .data import image_stem

logger = logging.getLogger(__name__)

# In output_dir: which input each prediction there was made from ({"predictions": {file name: input path}}).
RECORD_NAME = "predictions.json"
RECORD_KIND = "xunet_hippocampus predictions"
PREDICTION_SUFFIX = ".nii.gz"


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def prediction_names(inputs: Sequence[str]) -> dict[str, str]:
    """A prediction file name (``<name>.nii.gz``) for each input image, unique among ``inputs``.

    An input is named after its file (``case.nii`` -> ``case.nii.gz``). Inputs whose file names are the same in
    different folders (``a/scan.nii.gz``, ``b/scan.nii.gz``) are named after the folders that tell them apart
    (``a_scan.nii.gz``, ``b_scan.nii.gz``). Two inputs in one folder whose names differ only in their extension
    (``case.nii``, ``case.nii.gz``) are most likely two copies of one case: they are refused, naming both.

    Raises:
        ValueError: two inputs would be written to one file; naming both and the fix.
    """
    by_stem: dict[str, list[str]] = {}
    for path in inputs:
        by_stem.setdefault(image_stem(path).lower(), []).append(str(path))  # case-insensitive file systems
    names = {}
    for paths in by_stem.values():
        unique = list(dict.fromkeys(paths))
        if len(unique) == 1:
            names[unique[0]] = image_stem(unique[0]) + PREDICTION_SUFFIX
            continue
        folders = [Path(os.path.abspath(p)).parent.parts for p in unique]
        common = len(os.path.commonprefix(folders))
        for path, parts in zip(unique, folders):
            names[path] = "_".join([*parts[common:], image_stem(path)]) + PREDICTION_SUFFIX
    clashes: dict[str, list[str]] = {}
    for path, name in names.items():
        clashes.setdefault(name.lower(), []).append(path)
    clashing = [paths for paths in clashes.values() if len(paths) > 1]
    if clashing:
        listed = "\n  ".join(" and ".join(f"'{p}'" for p in paths) for paths in clashing[:10])
        raise ValueError(
            f"{len(clashing)} pair(s) of inputs (config id 'dataset_dir') would be saved as one prediction, one "
            f"overwriting the other:\n  {listed}\nTheir names differ only in the extension: remove one of each pair "
            "(if they are copies of one case) or rename it."
        )
    return names


class PredictionNames:
    """The ``output_name_formatter`` of inference's ``SaveImaged``: each prediction is saved under the name
    :func:`prediction_names` gave its input, and :data:`RECORD_NAME` in ``output_dir`` records which input it was made
    from, before it is written (so a later run knows the file as a prediction it may replace).

    The inputs are listed on first use, not when the formatter is built: MONAI Label builds inference's
    post-processing (and then drops ``SaveImaged``) in a bundle whose ``dataset_dir`` does not exist.

    Args:
        datalist: the inference inputs (``{"image": path}`` items), or a function returning them (config id
            ``list_inputs``).
        output_dir: the folder predictions are written to (config id ``output_dir``).
    """

    def __init__(
        self,
        datalist: Sequence[Mapping[str, str]] | Callable[[], Sequence[Mapping[str, str]]],
        output_dir: str | os.PathLike,
    ) -> None:
        self.output_dir = Path(output_dir).expanduser().absolute()
        self._datalist = datalist

    @functools.cached_property
    def names(self) -> dict[str, str]:
        """{input path: prediction file name} for every input."""
        items = self._datalist() if callable(self._datalist) else self._datalist
        return prediction_names([str(item["image"]) for item in items])

    @functools.cached_property
    def _resolved(self) -> dict[str, str]:
        return {os.path.realpath(path): name for path, name in self.names.items()}

    def name_of(self, input_path: str | os.PathLike) -> str:
        """The prediction file name of the input at ``input_path``."""
        name = self.names.get(str(input_path)) or self._resolved.get(os.path.realpath(input_path))
        if name is None:  # an input the datalist did not list: the bundle never writes under a name it did not plan
            raise ValueError(
                f"'{input_path}' is not among the inputs listed by config id 'datalist': no prediction "
                "name was planned for it."
            )
        return name

    def __call__(self, metadict: Mapping[str, Any], saver: Any = None) -> dict:
        source = str(metadict["filename_or_obj"])
        name = self.name_of(source)
        record_prediction(self.output_dir, name, source)
        # FolderLayout strips the subject's extension (".nii.gz" as two steps), then adds output_ext
        return {"subject": name, "idx": None}


def read_record(output_dir: Path) -> dict[str, str] | None:
    """The predictions recorded in ``output_dir`` ({file name: input path}); None when ``output_dir`` holds a file
    of the record's name that this bundle did not write."""
    path = output_dir / RECORD_NAME
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(record, dict)
        or record.get("kind") != RECORD_KIND
        or not isinstance(record.get("predictions"), dict)
    ):
        return None
    return record["predictions"]


def record_prediction(output_dir: Path, name: str, source: str) -> None:
    """Add ``name`` (a prediction of ``source``) to the record in ``output_dir``, atomically."""
    record = read_record(output_dir) or {}
    record[name] = os.path.realpath(source)
    output_dir.mkdir(parents=True, exist_ok=True)
    partial = output_dir / f".{RECORD_NAME}.{socket.gethostname()}.{os.getpid()}.partial"
    partial.write_text(json.dumps({"kind": RECORD_KIND, "predictions": record}, indent=1, sort_keys=True))
    os.replace(partial, output_dir / RECORD_NAME)


def dataset_roots(dataset_dir: Any) -> list[Path]:
    """The folders that make up the data read from ``dataset_dir`` (a folder, a file, or a list of them), each as
    given and with links resolved: a folder given, and the MSD task around a folder or file (the folder holding
    ``dataset.json``, e.g. the task of an ``imagesTr`` folder). A single file outside any task makes no folder data:
    its folder may hold outputs elsewhere, only not the file itself (see :func:`check_outside_dataset`)."""
    entries = dataset_dir if isinstance(dataset_dir, (list, tuple)) else [dataset_dir]
    roots: list[Path] = []
    for entry in entries:
        if entry is None:
            continue
        path = Path(str(entry)).expanduser().absolute()
        is_file = path.is_file()
        # a file's folder as given and the folder it really lies in (a link into a task is data of that task)
        real = Path(os.path.realpath(path))
        folders = (path.parent, real.parent) if is_file else (path, real)
        for folder in folders:
            task = next((f for f in (folder, folder.parent) if (f / "dataset.json").is_file()), None)
            if not is_file:
                roots.append(folder)  # a folder given, or one still to be downloaded
            if task is not None:
                roots.append(task)
    return list(dict.fromkeys(roots))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_outside_dataset(
    dataset_dir: Any, datalist: Iterable[Mapping[str, Any]] | None = None, **folders: Any
) -> dict[str, Path]:
    """Refuse any folder the run writes into (each named by its config id, e.g. ``ckpt_dir=...``) that lies inside
    the dataset being read (:func:`dataset_roots`), or that directly holds one of its files (``datalist``'s images
    and labels): a write there could replace the user's images or ground-truth labels.

    Returns:
        ``folders``, each absolute.

    Raises:
        ValueError: naming the setting, the folder, the dataset and the fix.
    """
    roots = dataset_roots(dataset_dir)
    files = {os.path.realpath(v) for item in (datalist or []) for v in item.values() if isinstance(v, (str, Path))}
    checked = {}
    for setting, value in folders.items():
        if value is None:
            continue
        folder = Path(str(value)).expanduser().absolute()
        candidates = {folder, Path(os.path.realpath(folder))}
        inside = next((root for root in roots for f in candidates if _inside(f, root)), None)
        held = next((name for name in files if any(Path(name).parent == f for f in candidates)), None)
        if inside is not None or held is not None:
            where = (
                f"lies inside the dataset '{inside}'" if inside is not None else f"holds the dataset's file '{held}'"
            )
            raise ValueError(
                f"config id '{setting}' is '{folder}', which {where} (config id 'dataset_dir'): the run's files "
                f"would be written among the data it reads and could replace images or labels. Pass a --{setting} "
                "outside the dataset (e.g. a new folder beside it)."
            )
        checked[setting] = folder
    return checked


def _is_prediction_of(target: Path, source: str) -> bool:
    """Whether ``target`` still looks like what inference saved for ``source``: a uint8 NIfTI label map on the
    input's voxel grid (shape and affine). A file the user put there since, under the same name, does not."""
    try:
        prediction, image = nib.load(target), nib.load(source)
        return (
            prediction.get_data_dtype() == np.uint8
            and prediction.shape[:3] == image.shape[:3]
            and np.allclose(prediction.affine, image.affine, atol=1e-3)
        )
    except Exception:  # unreadable: not a prediction
        return False


def _listed(items: Sequence[str], max_listed: int) -> str:
    """``items`` one per indented line, the first ``max_listed`` of them, then how many more there are."""
    more = f"\n  ... and {len(items) - max_listed} more" if len(items) > max_listed else ""
    return "\n  " + "\n  ".join(items[:max_listed]) + more


def check_output_dir(
    output_dir: str | os.PathLike, names: PredictionNames, dataset_dir: Any = None, max_listed: int = 10
) -> Path:
    """Inference's ``initialize`` check of where predictions go, before any work.

    Refused: an ``output_dir`` that cannot be a writable folder (:func:`scripts.checks.check_writable_dir`), that lies
    inside the data read or holds one of the inputs (:func:`check_outside_dataset`), and any prediction path that
    already holds a file which is not this bundle's earlier prediction of the same input (the record in
    ``output_dir`` says which input a file was predicted from; the file must still be a uint8 label map on that
    input's grid), e.g. ground-truth labels named like the images.

    Args:
        output_dir: config id ``output_dir``.
        names: the run's :class:`PredictionNames` (config id ``prediction_names``).
        dataset_dir: config id ``dataset_dir``, the inputs' folder(s) or file(s).
        max_listed: how many files a message lists.

    Returns:
        ``output_dir``, absolute.
    """
    out = check_writable_dir(output_dir, "output_dir")
    inputs = [{"image": path} for path in names.names]
    given = list(dataset_dir) if isinstance(dataset_dir, (list, tuple)) else [dataset_dir]
    check_outside_dataset([*given, *names.names], inputs, output_dir=out)  # the inputs' own folders are data too
    record = read_record(out)
    if record is None:
        raise ValueError(
            f"output_dir '{out}' holds a '{RECORD_NAME}' that this bundle did not write (it records "
            "which input each prediction was made from, and would replace that file). Pass another "
            "--output_dir."
        )
    taken = []
    for source, name in names.names.items():
        target = out / name
        if not os.path.lexists(target):
            continue
        if _same_file(target, source):
            taken.append(f"'{target}' is the input image itself")
        elif record.get(name) != os.path.realpath(source):
            made_from = f"a prediction of '{record[name]}'" if name in record else "not a prediction of this bundle"
            taken.append(f"'{target}' exists and is {made_from}, not of the input '{source}'")
        elif not _is_prediction_of(target, source):  # recorded, but replaced since by something else
            taken.append(
                f"'{target}' exists and is no longer the prediction of '{source}' that was saved there (not "
                "a label map on that image's grid)"
            )
    if taken:
        raise ValueError(
            f"output_dir '{out}' already holds {len(taken)} file(s) that the predictions of this run would "
            "overwrite:" + _listed(taken, max_listed) + "\nNothing was written. Pass an empty or new --output_dir "
            "(predictions of the same inputs in it may be replaced), or move these files away."
        )
    return out


def _is_metrics_report(path: Path, kind: str, delimiter: str) -> bool:
    """Whether ``path`` looks like a report MONAI's MetricsSaver wrote with ``delimiter``: ``"metrics"``, one
    ``name<delimiter>value`` line per metric; ``"raw"``, a ``filename`` header; ``"summary"``, a ``class`` header."""
    try:
        if path.stat().st_size > 64 * 2**20:  # per-case reports of a few thousand cases stay far below this
            return False
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    if kind == "raw":
        return bool(lines) and lines[0].split(delimiter)[0] == "filename"
    if kind == "summary":
        return bool(lines) and lines[0].split(delimiter)[0] == "class"
    for line in lines:
        fields = line.split(delimiter)
        if len(fields) != 2:
            return False
        try:
            float(fields[1])
        except ValueError:
            return False
    return True


def check_report_files(handlers: Sequence[Any], max_listed: int = 10) -> None:
    """Evaluation's ``initialize`` check of the reports its MetricsSaver handlers will write (``metrics.csv``,
    ``<metric>_raw.csv``, ``<metric>_summary.csv`` in their ``save_dir``, config id ``output_dir``), before any work.

    MetricsSaver replaces files of those names. Refused: any that already exists and is not such a report (an
    earlier evaluation's reports are replaced, as a rerun expects).

    Args:
        handlers: the evaluator's handlers (config id ``validate#handlers``); those that are not MetricsSaver are
            ignored.
        max_listed: how many files a message lists.
    """
    from monai.handlers import MetricsSaver

    taken = []
    for handler in handlers:
        if not isinstance(handler, MetricsSaver):
            continue
        folder = Path(handler.save_dir)
        reports = [("metrics.csv", "metrics")] if handler.metrics else []
        for name in handler.metric_details or ():
            reports.append((f"{name}_raw.csv", "raw"))
            if handler.summary_ops:
                reports.append((f"{name}_summary.csv", "summary"))
        for file_name, kind in reports:
            path = folder / file_name
            if os.path.lexists(path) and not _is_metrics_report(path, kind, handler.deli):
                taken.append(f"'{path}'")
    if taken:
        raise ValueError(
            f"evaluation would overwrite {len(taken)} file(s) that are not metric reports of an earlier "
            "evaluation:" + _listed(taken, max_listed) + "\nNothing was written. Pass an empty or new --output_dir "
            "(reports of an earlier evaluation in it are replaced), or move these files away."
        )
