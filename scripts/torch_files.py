"""Reading the files the bundle itself reads with ``torch.load`` (checkpoints, the training state), safely and with
messages that are the user's.

Every such file is read with ``weights_only=True``: tensors and plain containers only, never pickled code. torch's
own messages for a refused or damaged file suggest ``weights_only=False``, which would run whatever code the file
holds, and name neither the bundle's setting nor the fix; :func:`load_torch_file` says instead what the file is, that
the bundle refused it for safety where it did, which config id chose it and what to do.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch


class BundleFileError(ValueError):
    """A file the bundle reads itself is missing, damaged, refused for safety or not what the setting needs.

    Args:
        problem: what is wrong with which file, without the fix (for a warning where the file is not needed).
        fix: what to do.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem, fix)  # both, so the error pickles and copies whole (e.g. from a worker)
        self.problem, self.fix = problem, fix

    def __str__(self) -> str:
        return f"{self.problem}: {self.fix}." if self.fix else f"{self.problem}."


def is_torchscript(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript export (what ``ckpt_export`` writes), not a ``torch.save`` file."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def why_unreadable(err: BaseException) -> str:
    """What a ``torch.load(..., weights_only=True)`` failure says about the file, in the user's words."""
    text = str(err)
    # torch 2.6+ words the refusal of code "Unsupported global: GLOBAL ..." or "unsupported GLOBAL ...": match it in
    # any case, and before the generic pickle error it comes wrapped in
    if "unsupported global" in text.lower():
        found = next((line.strip() for line in text.splitlines() if "global" in line.lower()), "")
        named = found.split("GLOBAL", 1)[1].split()[0] if "GLOBAL" in found else ""
        return (
            "holds pickled Python objects or code"
            + (f" ({named})" if named else "")
            + ", which the bundle refuses to unpickle for safety: unpickling can run any code the file carries"
        )
    if isinstance(err, EOFError) or "Ran out of input" in text:
        return "is empty or cut short"
    # anything else torch cannot read (a bad zip directory, an invalid pickle opcode, an OS error on a cut-short
    # archive) is a damaged copy or another format: torch's first line, for whoever digs further
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next(
        (line.split("WeightsUnpickler error:", 1)[1].strip() for line in lines if "WeightsUnpickler error:" in line),
        lines[0] if lines else "no detail",
    )
    # torch's text around it suggests weights_only=False, which would run the file's code: never pass that on
    first = "no detail" if "weights_only" in detail else detail.split("Check the documentation")[0].strip()[:160]
    return f"is not a file torch.save wrote, or is damaged or cut short ({type(err).__name__}: {first})"


def load_torch_file(path: str | os.PathLike, setting: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, failing with a :class:`BundleFileError` that names the file,
    the config id ``setting`` that chose it, what is wrong and ``fix``.

    Raises:
        BundleFileError: ``path`` is missing, a TorchScript export, refused for safety, damaged or not a torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleFileError(f"'{path}' (config id '{setting}') does not exist", fix)
    if is_torchscript(path):  # checked first: torch.load would hand it to torch.jit.load with a warning
        raise BundleFileError(
            f"'{path}' (config id '{setting}') is a TorchScript export (what ckpt_export writes), "
            "not a file of tensors",
            fix,
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        why = why_unreadable(err)
        if "for safety" not in why:  # a damaged copy can be fetched again; a refused one must be saved otherwise
            fix = f"if it is a copy, copy it again and compare its sha256 with the source's; else {fix}"
        raise BundleFileError(f"'{path}' (config id '{setting}') {why}", fix) from None
