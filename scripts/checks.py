"""Checks run by the configs' ``initialize`` step, so a user's mistake stops the run with a message that
names the setting and the fix, before any work is done and before anything is written."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from scripts.distributed import is_main_process

logger = logging.getLogger(__name__)


def require_file(path: str | os.PathLike, setting: str, fix: str) -> Path:
    """Stop with a FileNotFoundError naming ``setting`` and ``fix`` unless ``path`` is a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' does not exist (config id '{setting}'): {fix}.")
    return path


def check_output_dir(output_dir: str | os.PathLike, datalist: Iterable[Mapping[str, str]]) -> Path:
    """Refuse an ``output_dir`` that holds the input images: predictions keep the input's file name, so writing
    there would overwrite the user's images."""
    out = Path(output_dir).expanduser().absolute()
    for item in datalist:
        for value in item.values():
            if not isinstance(value, (str, os.PathLike)):
                continue
            target = out / Path(value).name
            if target.exists() and os.path.samefile(target, value):
                raise ValueError(
                    f"output_dir '{out}' holds the input image '{value}': predictions are saved under the input's "
                    "file name and would overwrite it. Pass another --output_dir."
                )
    return out


def keep_existing_checkpoint(ckpt_dir: str | os.PathLike, filename: str = "model.pt") -> Path | None:
    """Copy a ``model.pt`` already in ``ckpt_dir`` aside before training writes a new one there.

    Training saves to ``ckpt_dir/model.pt``. From the bundle root with the default ``ckpt_dir`` that is the shipped
    model, elsewhere perhaps an earlier run's model: the copy ``model_<its modification time>.pt`` keeps it. Only
    one process copies (rank 0 under torchrun). Returns the copy's path, or None when there was nothing to keep.
    """
    if not is_main_process():
        return None
    existing = Path(ckpt_dir) / filename
    if not existing.is_file():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(existing.stat().st_mtime))
    kept = existing.with_name(f"{existing.stem}_{stamp}{existing.suffix}")
    if not kept.exists():
        shutil.copy2(existing, kept)
    logger.warning(
        "ckpt_dir '%s' already holds %s: kept a copy as '%s' before training replaces it.", existing.parent, filename,
        kept.name)
    return kept


def _image_problem(path: str, spatial_dims: int, in_channels: int,
                   channels_from: str) -> tuple[str | None, tuple[int, ...]]:
    """Why the network cannot take the NIfTI image at ``path`` (None when it can), and the image's shape."""
    try:
        image = nib.load(path)
        shape = tuple(image.shape)
    except Exception as err:  # not NIfTI, truncated header, not gzip: nibabel says which
        return f"not a readable NIfTI image ({err})", ()
    if len(shape) < spatial_dims:
        return f"a {len(shape)}-D image of shape {shape}; the network segments {spatial_dims}-D volumes", shape
    channels = int(np.prod(shape[spatial_dims:], dtype=np.int64))
    if channels != in_channels:
        return (f"shape {shape} holds {channels} volumes (channels) where {in_channels} are expected "
                f"({channels_from})"), shape
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # header fine, data cut short
        return f"its voxel data cannot be read ({err})", shape
    finite = np.isfinite(data)
    if not finite.all():
        return (f"{data.size - np.count_nonzero(finite)} voxels are NaN or infinite, which would make the whole "
                "normalised volume NaN: replace them (e.g. with the image's minimum)"), shape
    return None, shape


def _label_problem(path: str, image_shape: tuple[int, ...], spatial_dims: int,
                   label_values: set[int] | None) -> str | None:
    """Why the label map at ``path`` does not fit its image (None when it does)."""
    try:
        label = nib.load(path)
        data = np.asanyarray(label.dataobj)
    except Exception as err:
        return f"not a readable NIfTI label map ({err})"
    if data.shape[:spatial_dims] != image_shape[:spatial_dims] or any(n != 1 for n in data.shape[spatial_dims:]):
        return (f"label map of shape {tuple(data.shape)} for an image of shape {image_shape}: they must match voxel "
                "for voxel")
    if label_values is not None:
        unknown = sorted(set(np.unique(data).tolist()) - set(label_values))
        if unknown:
            shown = ", ".join(f"{v:g}" for v in unknown[:10])
            return (f"label values [{shown}] are not among the labels {sorted(label_values)} of dataset.json: "
                    "correct the label map or dataset.json's 'labels'")
    return None


def check_images(datalist: Sequence[Mapping[str, str]], spatial_dims: int = 3, in_channels: int = 1,
                 label_values: Iterable[int] | None = None, channels_from: str = "the network's in_channels",
                 max_listed: int = 20) -> Sequence[Mapping[str, str]]:
    """Stop before any work when a case cannot be used, naming every such file and why.

    Reads each ``image`` of ``datalist`` once: a file nibabel cannot read, an image with fewer than ``spatial_dims``
    dimensions or other than ``in_channels`` volumes, or voxels that are NaN or infinite (they would silently give
    an empty segmentation) is reported. Where an item has a ``label``, the label map must have the image's spatial
    shape and, given ``label_values``, hold no other value. All problems are listed in one message, so one run
    finds them all. ``channels_from`` says where ``in_channels`` comes from, for the message.

    Returns:
        ``datalist``, unchanged.

    Raises:
        ValueError: listing the files (up to ``max_listed``) with the problem of each and the fix.
    """
    values = None if label_values is None else {int(v) for v in label_values}
    problems = []
    for item in datalist:
        problem, shape = _image_problem(str(item["image"]), spatial_dims, in_channels, channels_from)
        if problem:
            problems.append(f"'{item['image']}': {problem}")
        elif "label" in item and (problem := _label_problem(str(item["label"]), shape, spatial_dims, values)):
            problems.append(f"'{item['label']}': {problem}")
    if problems:
        more = f"\n  ... and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
        raise ValueError(
            f"{len(problems)} of {len(datalist)} cases (config id 'dataset_dir') cannot be used by the bundle's "
            f"network ({spatial_dims}-D, {in_channels} channel):\n  " + "\n  ".join(problems[:max_listed])
            + more + "\nFix or remove these files, or point --dataset_dir at other data."
        )
    return datalist
