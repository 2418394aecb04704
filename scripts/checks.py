"""Checks run by the configs' ``initialize`` step, so a user's mistake stops the run with a message that
names the setting and the fix, before any work is done and before anything is written."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn as nn

from .distributed import is_main_process, unwrap_network
from .geometry import GEOMETRY_TOLERANCE_MM, geometry_difference, header_problem, intensity_problem
from .networks import create_network, get_network_class, list_networks
from .torch_files import load_torch_file

logger = logging.getLogger(__name__)


def require_file(path: str | os.PathLike, setting: str, fix: str) -> Path:
    """Stop with a FileNotFoundError naming ``setting`` and ``fix`` unless ``path`` is a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' does not exist (config id '{setting}'): {fix}.")
    return path


def check_writable_dir(path: str | os.PathLike, setting: str) -> Path:
    """Refuse a folder the run could not write its results into (a file, a folder under a file, a read-only
    folder), which would otherwise fail only when the first result is saved, after the work. Creates nothing.

    Returns:
        ``path``, absolute.
    """
    folder = Path(path).expanduser().absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # where the folder would be created
    if not existing.is_dir():
        raise ValueError(f"{setting} '{folder}': '{existing}' is a file, not a folder. Pass another --{setting}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{setting} '{folder}': '{existing}' is not writable for this user. Pass another " f"--{setting}."
        )
    return folder


def keep_existing_checkpoint(
    ckpt_dir: str | os.PathLike, backup_dir: str | os.PathLike, filename: str = "model.pt"
) -> Path | None:
    """Copy a ``model.pt`` already in ``ckpt_dir`` into ``backup_dir`` before training writes a new one.

    Training saves to ``ckpt_dir/model.pt``. From the bundle root with the default ``ckpt_dir`` that is the shipped
    model, elsewhere perhaps an earlier run's model: the copy ``model_<its modification time>.pt`` keeps it. The copy
    goes to ``backup_dir`` (config id ``state_dir``), not beside the model: every ``*.pt`` in ``ckpt_dir`` is offered
    as a model by MONAI Label, which loads it without checking that it fits, so only deployable weights may lie there.
    Only one process copies (rank 0 under torchrun). Returns the copy's path, or None when there was nothing to keep.
    """
    check_writable_dir(ckpt_dir, "ckpt_dir")  # else training would fail at its first save, an epoch in
    check_writable_dir(backup_dir, "state_dir")  # else the training state would fail to save after the first epoch
    if not is_main_process():
        return None
    existing = Path(ckpt_dir) / filename
    if not existing.is_file():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(existing.stat().st_mtime))
    kept = Path(backup_dir) / f"{existing.stem}_{stamp}{existing.suffix}"
    if not kept.exists():
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(existing, kept)
    logger.warning(
        "ckpt_dir '%s' already holds %s: kept a copy as '%s' before training replaces it.",
        existing.parent,
        filename,
        kept,
    )
    return kept


def _image_problem(
    path: str, spatial_dims: int, in_channels: int, channels_from: str
) -> tuple[str | None, nib.spatialimages.SpatialImage | None]:
    """Why the network cannot take the NIfTI image at ``path`` (None when it can), and the image (None when
    unreadable)."""
    try:
        image = nib.load(path)
        shape = tuple(image.shape)
    except Exception as err:  # not NIfTI, truncated header, not gzip: nibabel says which
        name = os.path.basename(path)
        if (
            isinstance(err, FileNotFoundError)
            and os.path.isfile(path)
            and name.lower() != name
            and name.upper() != name
        ):  # nibabel reads .nii.gz and .NII.GZ, not .Nii.Gz (it looks for a pair)
            return f"nibabel cannot read an extension in mixed case ({err}): rename it to end in .nii.gz or .nii", None
        return f"not a readable NIfTI image ({err})", None
    if len(shape) < spatial_dims:
        return f"a {len(shape)}-D image of shape {shape}; the network segments {spatial_dims}-D volumes", image
    if 1 in shape[:spatial_dims]:  # the writer would also drop that axis: the prediction would lose the input's shape
        return (
            f"shape {shape} is a single slice along axis {shape.index(1)}; the network segments "
            f"{spatial_dims}-D volumes"
        ), image
    channels = int(np.prod(shape[spatial_dims:], dtype=np.int64))
    if channels != in_channels:
        return (
            f"shape {shape} holds {channels} volumes (channels) where {in_channels} are expected " f"({channels_from})"
        ), image
    dtype = image.get_data_dtype()
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating) or dtype == np.bool_:
        # RGB, complex or structured voxels: MONAI's loader or the float32 cast fails deep inside
        return (
            f"its voxels are of type {dtype}, not grey values (integers or floats): save the image as a "
            "one-channel scalar volume"
        ), image
    if problem := header_problem(image, spatial_dims):  # before the data: MONAI would fail on it or segment nothing
        return problem, image
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # header fine, data cut short
        return f"its voxel data cannot be read ({err})", image
    finite = np.isfinite(data)
    if not finite.all():
        return (
            f"{data.size - np.count_nonzero(finite)} voxels are NaN or infinite, which would make the whole "
            "normalised volume NaN: replace them (e.g. with the image's minimum)"
        ), image
    if data.size and data.min() == data.max():  # the network would still "find" structures in a blank volume
        return f"every voxel is {data.flat[0]:g}: a blank image holds nothing to segment", image
    return intensity_problem(data), image


def _label_problem(
    path: str, image: nib.spatialimages.SpatialImage, spatial_dims: int, label_values: set[int] | None
) -> str | None:
    """Why the label map at ``path`` does not fit its image (None when it does): it must lie on the image's voxel
    grid (shape, voxel size, orientation, origin: it is used voxel by voxel) and hold only ``label_values``."""
    try:
        label = nib.load(path)
        data = np.asanyarray(label.dataobj)
    except Exception as err:
        return f"not a readable NIfTI label map ({err})"
    image_shape = tuple(image.shape)
    if data.shape[:spatial_dims] != image_shape[:spatial_dims] or any(n != 1 for n in data.shape[spatial_dims:]):
        return (
            f"label map of shape {tuple(data.shape)} for an image of shape {image_shape} "
            f"('{image.get_filename()}'): they must match voxel for voxel"
        )
    if difference := geometry_difference(image, label, spatial_dims):
        return (
            f"label map does not lie on the grid of its image '{image.get_filename()}': {difference} (tolerance "
            f"{GEOMETRY_TOLERANCE_MM:g} mm). A label is used voxel by voxel with its image: resample or re-save "
            "the label map on the image's grid (same shape and affine), or pair it with the right image"
        )
    found = np.unique(data)
    fractional = found[found != np.round(found)] if np.issubdtype(found.dtype, np.floating) else found[:0]
    if fractional.size:  # printed at full precision: 0.9999999 rounded to "1" would read as a valid label
        shown = ", ".join(f"{v:.9g}" for v in fractional[:10].tolist())
        return (
            f"label values [{shown}] are not whole numbers: a label map holds label numbers exactly (was it "
            "resampled with interpolation, or saved with a scale factor?). Re-save it with integer labels"
        )
    if label_values is not None:
        unknown = sorted(set(found.tolist()) - set(label_values))
        if unknown:
            shown = ", ".join(f"{v:g}" for v in unknown[:10])
            return (
                f"label values [{shown}] are not among the labels {sorted(label_values)} of dataset.json: "
                "correct the label map or dataset.json's 'labels'"
            )
    return None


def case_problems(
    item: Mapping[str, str],
    spatial_dims: int = 3,
    in_channels: int = 1,
    label_values: Iterable[int] | None = None,
    channels_from: str = "the network's in_channels",
) -> list[str]:
    """What makes one case (``{"image": ..., "label": ...}``, label optional) unusable, each as
    ``"'<file>': <problem>"``; empty when it is usable. The one check of a case: :func:`check_images` (the workflows'
    ``initialize``) and ``python -m scripts.check_data`` both run it."""
    values = None if label_values is None else {int(v) for v in label_values}
    problem, image = _image_problem(str(item["image"]), spatial_dims, in_channels, channels_from)
    if problem:
        return [f"'{item['image']}': {problem}"]
    if "label" in item and (problem := _label_problem(str(item["label"]), image, spatial_dims, values)):
        return [f"'{item['label']}': {problem}"]
    return []


def is_whole_number(value: Any) -> bool:
    """An int (numpy's too), not a bool: what settings counting voxels, cases, epochs or folds must be."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_counts(at_least: int = 1, **settings: Any) -> dict[str, int]:
    """Stop before any work when a count setting (``batch_size``, ``samples_per_volume``, ``num_workers``: each
    named by its config id) is not a whole number of ``at_least`` or more; 0 patches per volume failed deep in the
    crop transform, after caching.

    Returns:
        ``settings``, unchanged.
    """
    for setting, value in settings.items():
        if not is_whole_number(value) or value < at_least:
            raise ValueError(f"config id '{setting}' must be a whole number of {at_least} or more, got {value!r}.")
    return settings


def check_settings(
    flags: Mapping[str, Any] | None = None,
    whole_numbers: Mapping[str, Any] | None = None,
    fractions: Mapping[str, Any] | None = None,
) -> None:
    """Stop before any work when a setting is not of its type, each named by its config id: otherwise a mistyped
    value reaches MONAI or Python deep inside (a string seed, num_classes "3"), or worse works silently: fire passes
    ``--resume false`` as the string 'false', which is true.

    Args:
        flags: settings that must be True or False (e.g. ``resume``, ``download``).
        whole_numbers: settings that must be whole numbers of 0 or more (e.g. ``seed``; ``num_classes`` 1 or more).
        fractions: settings that must be numbers from 0 to 1 (e.g. ``cache_rate``).
    """
    for setting, value in (flags or {}).items():
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(
                f"config id '{setting}' must be True or False, got {value!r}: give --{setting} True or "
                f"--{setting} False (capitalised: fire reads 'false' as the text 'false')."
            )
    for setting, value in (whole_numbers or {}).items():
        at_least = 1 if setting == "num_classes" else 0
        if not is_whole_number(value) or value < at_least or (setting == "seed" and value >= 2**32):
            raise ValueError(
                f"config id '{setting}' must be a whole number of {at_least} or more"
                + (" and below 2**32" if setting == "seed" else "")
                + f", got {value!r}."
            )
    for setting, value in (fractions or {}).items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating))
            or not 0 <= value <= 1
        ):
            raise ValueError(f"config id '{setting}' must be a number from 0 to 1, got {value!r}.")


def check_schedule(
    learning_rate: Any, weight_decay: Any, warmup_epochs: Any, max_epochs: Any, val_interval: Any = 0
) -> None:
    """Stop before any work when the optimiser or its schedule cannot train: a learning rate that is not above 0
    (torch's "Invalid learning rate" names no setting), a negative weight decay, a number of epochs below 1. Warn
    when the warm-up is as long as the run: the learning rate is then still climbing at the last epoch, which a
    quick trial run of an epoch or two may intend, a real run not.

    Validation, which is what saves ``model.pt`` (the best validated weights), must run at least once: a
    ``val_interval`` above the epochs would train the whole run and save no model at all, so it is refused (0 turns
    validation off and saves the last epoch's weights instead). When the epochs are not a multiple of
    ``val_interval``, the epochs after the last validation can never be saved as ``model.pt``: a warning says so.

    Args:
        learning_rate: config id ``learning_rate``.
        weight_decay: config id ``weight_decay``.
        warmup_epochs: config id ``warmup_epochs``.
        max_epochs: config id ``train#trainer#max_epochs``.
        val_interval: config id ``val_interval``: validate every that many epochs, 0 for never.
    """

    def number(value: Any) -> bool:
        return is_whole_number(value) or isinstance(value, (float, np.floating))

    if not number(learning_rate) or not learning_rate > 0:
        raise ValueError(
            f"config id 'learning_rate' must be a number above 0, got {learning_rate!r} " "(train.json's is 0.002)."
        )
    if not number(weight_decay) or not weight_decay >= 0:
        raise ValueError(
            f"config id 'weight_decay' must be a number of 0 or more, got {weight_decay!r} " "(train.json's is 0.01)."
        )
    check_counts(**{"train#trainer#max_epochs": max_epochs})
    check_counts(at_least=0, warmup_epochs=warmup_epochs)
    if warmup_epochs >= max_epochs and is_main_process():
        logger.warning(
            f"config id 'warmup_epochs' ({warmup_epochs}) is not fewer than the run's epochs (config id "
            f"'train#trainer#max_epochs', {max_epochs}): the learning rate is still warming up at the end "
            "and never decays. For a real run lower --warmup_epochs (train.json's is 2) or raise "
            "--train#trainer#max_epochs."
        )
    check_counts(at_least=0, val_interval=val_interval)
    if val_interval > max_epochs:
        raise ValueError(
            f"config id 'val_interval' ({val_interval}) is more than the run's epochs (config id "
            f"'train#trainer#max_epochs', {max_epochs}): validation would never run, and validation is what saves "
            f"model.pt, so the run would end with no model. Give --val_interval {max_epochs} or fewer, or "
            "--val_interval 0 to train without validation and save the last epoch's weights."
        )
    if val_interval and max_epochs % val_interval and is_main_process():
        last = max_epochs - max_epochs % val_interval
        logger.warning(
            f"config id 'val_interval' ({val_interval}) does not divide the run's {max_epochs} epochs: the "
            f"last validation is after epoch {last}, so epochs {last + 1} to {max_epochs} are trained but "
            "never validated, and model.pt can only be weights of epoch "
            f"{last} or earlier. Give a --val_interval that divides {max_epochs} (or 0: the last epoch's "
            "weights are saved)."
        )


def check_device(device: Any, setting: str = "device") -> torch.device:
    """Stop before the network is built when the configured device does not exist here: torch's messages ("Torch
    not compiled with CUDA enabled", "invalid device ordinal") name neither the setting nor the fix.

    Returns:
        the device as a ``torch.device``.
    """
    fix = "leave --device out (the configs choose cuda:0 when PyTorch sees a GPU, else the CPU) or give " "--device cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"config id '{setting}' is {device!r}, which is no device: {err}; {fix}.") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"config id '{setting}' is '{device}', but this PyTorch ({torch.__version__}) sees no "
                f"CUDA GPU; {fix}."
            )
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"config id '{setting}' is '{device}', but this machine has {count} GPU(s), cuda:0 to "
                f"cuda:{count - 1}; {fix}."
            )
    return device


def check_patch_size(
    patch_size: Any, network: nn.Module, spatial_dims: int, in_channels: int, setting: str = "patch_size"
) -> list[int]:
    """Stop before any case is read when the training patch / sliding window size cannot work.

    ``patch_size`` must give one whole number of 1 or more per spatial axis, and the network must run on one input of
    that size: it is run once, in eval mode and without gradients, on zeros (a network with four poolings and
    instance norm, as XUNet, needs more than 16 voxels along some axis). Otherwise training would cache every case
    and then fail at its first iteration, inference at its first image. The run draws no random numbers, and the
    network's mode is restored, so training goes on exactly as without the check.

    Args:
        patch_size: the configured size (config id ``setting``).
        network: the network, or its DistributedDataParallel wrapper (the check runs the module inside).
        spatial_dims: the network's spatial dimensions.
        in_channels: the network's input channels.
        setting: the config id named in messages.

    Returns:
        ``patch_size`` as a list of ints.

    Raises:
        ValueError: naming the setting, what is wrong and an example that works.
    """
    example = "e.g. [32, 48, 32], the default" if spatial_dims == 3 else f"e.g. {[32] * spatial_dims}"
    sizes = list(patch_size) if isinstance(patch_size, (list, tuple)) else None
    if sizes is None or len(sizes) != spatial_dims or not all(is_whole_number(n) for n in sizes):
        raise ValueError(
            f"config id '{setting}' must list one whole number per spatial axis of the "
            f"{spatial_dims}-D network ({example}), got {patch_size!r}."
        )
    if min(sizes) < 1:
        raise ValueError(f"config id '{setting}' must hold sizes of 1 voxel or more ({example}), got {sizes}.")
    module = unwrap_network(network)  # DistributedDataParallel: run the network itself, no collectives
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, in_channels, *sizes, device=device))
    except Exception as err:
        raise ValueError(
            f"config id '{setting}' is {sizes}, but the network ({type(module).__name__}) cannot run "
            f"on an input of that size: {type(err).__name__}: {err}\nChoose other sizes ({example}); "
            "patches and sliding windows both use this setting."
        ) from err
    finally:
        module.train(was_training)
    return [int(n) for n in sizes]


def check_images(
    datalist: Sequence[Mapping[str, str]],
    spatial_dims: int = 3,
    in_channels: int = 1,
    label_values: Iterable[int] | None = None,
    channels_from: str = "the network's in_channels",
    max_listed: int = 20,
) -> Sequence[Mapping[str, str]]:
    """Stop before any work when a case cannot be used, naming every such file and why.

    Reads each ``image`` of ``datalist`` once (:func:`case_problems`): a file nibabel cannot read, an image with fewer
    than ``spatial_dims`` dimensions or other than ``in_channels`` volumes, a header that places the voxels
    implausibly (voxel size, orientation: :func:`scripts.geometry.header_problem`), voxels that are NaN or infinite
    or intensities float32 cannot hold (:func:`scripts.geometry.intensity_problem`): each would silently give an
    empty segmentation or fail deep in MONAI. Where an item has a ``label``, the label map must lie on the image's
    voxel grid (shape, voxel size, orientation, origin) and hold whole numbers, given ``label_values`` no other.
    All problems are listed in one message, so one run finds them all. ``channels_from`` says where
    ``in_channels`` comes from, for the message.

    Returns:
        ``datalist``, unchanged.

    Raises:
        ValueError: listing the files (up to ``max_listed``) with the problem of each and the fix.
    """
    problems = [
        problem
        for item in datalist
        for problem in case_problems(item, spatial_dims, in_channels, label_values, channels_from)
    ]
    if problems:
        more = f"\n  ... and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
        raise ValueError(
            f"{len(problems)} of {len(datalist)} cases (config id 'dataset_dir') cannot be used by the bundle's "
            f"network ({spatial_dims}-D, {in_channels} channel):\n  "
            + "\n  ".join(problems[:max_listed])
            + more
            + "\nFix or remove these files, or point --dataset_dir at other data."
        )
    return datalist


def read_weights(path: str | os.PathLike, setting: str) -> dict[str, torch.Tensor]:
    """The state dict saved in ``path``: a plain state dict, or one under ``"model"`` (the two layouts MONAI's
    ``CheckpointSaver`` writes).

    Raises:
        ValueError: ``path`` is not a file ``torch.load`` reads (a TorchScript export, a truncated download, another
            format), is refused for safety (pickled objects or code, e.g. a whole network) or holds something other
            than a mapping of parameter names to tensors; naming ``setting``
            (:func:`scripts.torch_files.load_torch_file`).
    """
    state = load_torch_file(
        path,
        setting,
        "give the weights training saved (model.pt), or save a network's weights "
        "with torch.save(network.state_dict(), path)",
    )
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        kind = (
            f"a dict with the keys {sorted(map(str, state))[:8]}"
            if isinstance(state, Mapping)
            else f"a {type(state).__name__}"
        )
        raise ValueError(
            f"'{path}' (config id '{setting}') holds {kind}, not a network's weights (a state dict: parameter names "
            "mapped to tensors, or such a dict under 'model'). Save the weights with "
            "torch.save(network.state_dict(), path)."
        )
    return dict(state)


def weights_mismatch(state: Mapping[str, torch.Tensor], network: nn.Module) -> str | None:
    """How ``state`` fails to load into ``network`` with ``strict=True`` (None when it loads): how many tensors
    differ in shape, are missing or are not in the network, each with its first example."""
    expected = network.state_dict()
    shapes = [
        (k, tuple(state[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if shapes:
        key, saved, wanted = shapes[0]
        problems.append(
            f"{len(shapes)} of {len(expected)} tensors differ in shape (e.g. '{key}' is {saved} in the "
            f"file, {wanted} in the network)"
        )
        if len({(s[0], w[0]) for _, s, w in shapes}) == 1 and all(s[1:] == w[1:] for _, s, w in shapes):
            # only the output layer differs, and only in its number of outputs
            problems.append(f"the file's network has {saved[0]} outputs (classes), the configured one {wanted[0]}")
    if missing:
        problems.append(f"{len(missing)} of the network's tensors are not in the file (e.g. '{missing[0]}')")
    if unexpected:
        problems.append(f"{len(unexpected)} of the file's tensors are not in the network (e.g. '{unexpected[0]}')")
    if (
        unexpected
        and all(k.startswith("module.") for k in unexpected)
        and weights_mismatch({k.removeprefix("module."): v for k, v in state.items()}, network) is None
    ):
        problems.append(
            "its names carry DistributedDataParallel's 'module.' prefix: save " "network.module.state_dict() instead"
        )
    return "; ".join(problems) or None


def networks_that_fit(
    state: Mapping[str, torch.Tensor],
    in_channels: int,
    out_channels: int,
    network_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """The names of the bundle's registered networks that ``state`` loads into when built with ``in_channels``,
    ``out_channels`` and their entry of ``network_options``, whatever the spatial dimensions.

    A network's parameter names, and each tensor's first two sizes (output and input channels), do not depend on
    its spatial dimensions, so the candidates are built in 1-D, where building all of them takes well under a
    second.
    """
    fits = []
    for name in list_networks():
        try:
            candidate = create_network(name, 1, in_channels, out_channels, network_options).state_dict()
        except Exception:  # options written for another network, or sizes this one rejects
            continue
        if candidate.keys() == state.keys() and all(
            tuple(state[k].shape[:2]) == tuple(v.shape[:2]) and state[k].dim() - v.dim() in (0, 1, 2)
            for k, v in candidate.items()
        ):
            fits.append(name)
    return fits


def checked_weights(
    path: str | os.PathLike,
    network: nn.Module,
    setting: str,
    fix: str,
    network_name: str | None = None,
    in_channels: int = 1,
    out_channels: int = 1,
    network_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, torch.Tensor]:
    """The weights in ``path``, once they are known to load into ``network`` (``strict=True``).

    A checkpoint of another network, or of the same network with other sizes (``network_options``, the number of
    classes), would otherwise fail in ``load_state_dict`` with a list of every tensor. The message names the file,
    the setting, what does not fit and, given ``network_name`` and the channels, which of the bundle's networks the
    file does fit with this config's ``network_options``.

    Args:
        path: the checkpoint (e.g. ``<ckpt_dir>/model.pt``).
        network: the configured network (config id ``network``), not wrapped in DistributedDataParallel.
        setting: the config id that chose ``path``, for the message.
        fix: what to do when ``path`` does not exist.
        network_name, in_channels, out_channels, network_options: how ``network`` was built (config ids
            ``network_name``, ``network_def#in_channels``, ``network_def#out_channels``, ``network_options``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is no state dict, or one that does not fit ``network``.
    """
    path = require_file(path, setting, fix)
    state = read_weights(path, setting)
    problem = weights_mismatch(state, network)
    if problem is None:
        return state
    configured = f"'{network_name}' " if network_name else ""
    message = (
        f"'{path}' (config id '{setting}') does not fit the configured network {configured}(config ids "
        f"'network_name', 'network_options', 'num_classes'): {problem}."
    )
    configured_class = get_network_class(network_name) if network_name is not None else None
    others = (
        []
        if configured_class is None
        else [
            name
            for name in networks_that_fit(state, in_channels, out_channels, network_options)
            if get_network_class(name) is not configured_class
        ]
    )
    if others:
        message += (
            f" It fits {', '.join(repr(n) for n in others)} with this config's network_options: add "
            f"--network_name {others[0]}, or point --{setting} at a model trained as '{network_name}'."
        )
    else:
        message += (
            f" Configure the network it was trained with (network_name, network_options, num_classes), "
            f"or point --{setting} at a model trained with these settings."
        )
    raise ValueError(message)


def check_checkpoint(
    path: str | os.PathLike,
    network: nn.Module,
    setting: str,
    fix: str,
    network_name: str | None = None,
    in_channels: int = 1,
    out_channels: int = 1,
    network_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """The ``initialize`` step of evaluation and inference: stop before any case is read unless ``path`` holds
    weights that load into ``network`` (:func:`checked_weights`, same arguments). Returns ``path``."""
    checked_weights(path, network, setting, fix, network_name, in_channels, out_channels, network_options)
    return Path(path)
