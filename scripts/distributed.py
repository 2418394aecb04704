"""Multi-process (torchrun) training and evaluation: the pieces the ``multi_gpu_*.json`` overlays call.

One process per GPU (NCCL), or per CPU process group member (Gloo) when there is no GPU, so the same overlay runs
on a workstation, a GPU node and a CPU-only test machine::

    torchrun --standalone --nproc_per_node=<gpus> -m monai.bundle run training --meta_file configs/metadata.json \\
        --config_file "['configs/train.json','configs/multi_gpu_train.json']" --dataset_dir <msd_dir>

The overlays keep the single-process configs' ids: the network is wrapped in DistributedDataParallel, the data
loaders get a DistributedSampler, and only rank 0 logs. Checkpoints are written by rank 0 alone (ignite's
``Checkpoint`` unwraps DistributedDataParallel, so ``models/model.pt`` stays the plain network's state dict),
and metrics are gathered over all ranks before they are reported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ignite.distributed as idist
import torch
import torch.distributed as dist

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = (
    "the multi_gpu_* overlays must be started by torchrun, one process per GPU, e.g. "
    "`torchrun --standalone --nproc_per_node=2 -m monai.bundle run training --meta_file configs/metadata.json "
    "--config_file \"['configs/train.json','configs/multi_gpu_train.json']\"`; for one process, leave the "
    "multi_gpu_* overlay out of --config_file"
)


def _local_rank() -> int:
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(f"environment variable(s) {', '.join(missing)} not set: {LAUNCH_HINT}.")
    return int(os.environ["LOCAL_RANK"])


def local_device() -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU (config id ``device``).

    Raises:
        RuntimeError: not started by torchrun (no ``LOCAL_RANK``), or fewer GPUs than processes on this node.
    """
    local_rank = _local_rank()
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise RuntimeError(
            f"process with LOCAL_RANK={local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
            "set torchrun's --nproc_per_node to at most the number of GPUs."
        )
    return torch.device("cuda", local_rank)


def init_distributed(backend: str | None = None) -> int:
    """Join torchrun's process group (NCCL on GPUs, Gloo on the CPU) and return this process's rank.

    Idempotent: a group that is already initialised is kept.

    Args:
        backend: ``"nccl"``, ``"gloo"`` or None to choose by whether CUDA is available.
    """
    device = local_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if device.type == "cuda" else "gloo"))
    return dist.get_rank()


def wrap_network(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``network`` on ``device`` in DistributedDataParallel (gradients all-reduced every step).

    DistributedDataParallel broadcasts rank 0's parameters when it is built, so every rank starts from the same
    weights even though each seeds its own random state.
    """
    network = network.to(device)
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DistributedDataParallel / DataParallel wrapper (``.module``), or ``network`` itself:
    what is saved, loaded and checked, without the ``module.`` prefix and without the wrapper's collectives."""
    return getattr(network, "module", network)


# Handlers that only report (console, TensorBoard, progress bar): one copy on rank 0 is enough; the others
# (LR schedule, validation, checkpoint saving and loading, metric saving) must run on every rank, because they
# change every rank's state or take part in a collective gather.
REPORTING_HANDLERS = ("StatsHandler", "TensorBoardStatsHandler", "ProgressBar")


def is_main_process() -> bool:
    """True in a single-process run and on rank 0 of a process group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def handlers_for_this_rank(handlers: Sequence | None) -> list:
    """The engine handlers this rank should attach: all on rank 0, all but the reporting ones elsewhere."""
    handlers = list(handlers or [])
    if is_main_process():
        return handlers
    return [h for h in handlers if type(h).__name__ not in REPORTING_HANDLERS]


def finalize_distributed() -> None:
    """Leave the process group (the overlays' ``finalize``)."""
    if dist.is_initialized():
        # every rank finishes its outstanding collectives before any leaves: a rank that exits while a peer's Gloo
        # work is still in flight can abort at interpreter shutdown
        dist.barrier()
        dist.destroy_process_group()
    # ignite keeps the group it last saw: without this, engines built later in the same process would still ask
    # the destroyed group for their rank
    idist.sync()
