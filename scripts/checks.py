"""Checks run by the configs' ``initialize`` step, so a user's mistake stops the run with a message that
names the setting and the fix, before any work is done and before anything is written."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

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
