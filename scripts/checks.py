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


def _image_problem(path: str, spatial_dims: int, in_channels: int) -> str | None:
    """Why the network cannot segment the NIfTI image at ``path`` (None when it can)."""
    try:
        image = nib.load(path)
        shape = tuple(image.shape)
    except Exception as err:  # not NIfTI, truncated header, not gzip: nibabel says which
        return f"not a readable NIfTI image ({err})"
    if len(shape) < spatial_dims:
        return f"a {len(shape)}-D image of shape {shape}; the network segments {spatial_dims}-D volumes"
    channels = int(np.prod(shape[spatial_dims:], dtype=np.int64))
    if channels != in_channels:
        return (f"shape {shape} holds {channels} volumes (channels); the network takes {in_channels}: give each "
                "volume as its own file")
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # header fine, data cut short
        return f"its voxel data cannot be read ({err})"
    if not np.isfinite(data).all():
        return (f"{int(data.size - np.isfinite(data).sum())} voxels are NaN or infinite, which would make the whole "
                "normalised volume NaN: replace them (e.g. with the image's minimum)")
    return None


def check_images(datalist: Sequence[Mapping[str, str]], spatial_dims: int = 3, in_channels: int = 1,
                 max_listed: int = 20) -> Sequence[Mapping[str, str]]:
    """Stop before any work when an input image cannot be segmented, naming every such file and why.

    Reads each ``image`` of ``datalist`` once: a file nibabel cannot read, an image with fewer than ``spatial_dims``
    dimensions or other than ``in_channels`` volumes, or voxels that are NaN or infinite (they would silently give
    an empty segmentation) is reported; all problems are listed in one message, so one run finds them all.

    Returns:
        ``datalist``, unchanged.

    Raises:
        ValueError: listing the files (up to ``max_listed``) with the problem of each and the fix.
    """
    problems = [f"'{item['image']}': {problem}" for item in datalist
                if (problem := _image_problem(str(item["image"]), spatial_dims, in_channels))]
    if problems:
        more = f"\n  ... and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
        raise ValueError(
            f"{len(problems)} of {len(datalist)} input images (config id 'dataset_dir') cannot be segmented by "
            f"the bundle's network ({spatial_dims}-D, {in_channels} channel):\n  " + "\n  ".join(problems[:max_listed])
            + more + "\nFix or remove these files, or point --dataset_dir at the images to segment; nothing was "
            "written."
        )
    return datalist
