"""Mixed precision that works on the CPU as well as on CUDA.

MONAI's engines only know CUDA autocast (``amp=True`` calls ``torch.autocast("cuda")``), but a recent
CPU with AMX / AVX512-BF16 runs bfloat16 convolutions about 1.5x faster than float32, which on this
bundle's 2-core training budget is 1.5x the epochs. :func:`with_autocast` wraps the network the
engines call, so neither the trainer nor the evaluator needs changing, and the checkpoint stays the
plain network's state dict (the wrapper holds no parameters of its own and is never saved).
"""

from __future__ import annotations

import torch
import torch.nn as nn

PRECISIONS = {"float32": None, "fp32": None, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
              "float16": torch.float16, "fp16": torch.float16}


class AutocastForward(nn.Module):
    """Runs ``network`` under ``torch.autocast`` on the input's device and returns float32.

    Args:
        network: the module to run; its parameters stay float32 (autocast casts per operation).
        dtype: the autocast dtype, ``torch.bfloat16`` or ``torch.float16``.

    The output is cast back to float32 so losses, softmax and metrics downstream run at full
    precision. Gradients flow to ``network``'s float32 parameters as usual.
    """

    def __init__(self, network: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.network = network
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            y = self.network(x)
        return y.float()


def with_autocast(network: nn.Module, precision: str = "float32") -> nn.Module:
    """``network`` itself for ``precision="float32"``, else wrapped in :class:`AutocastForward`.

    Args:
        network: the network the engines should call.
        precision: the config id ``precision``: one of ``float32``, ``bfloat16`` (alias ``bf16``),
            ``float16`` (``fp16``, CUDA only in practice).

    Raises:
        ValueError: an unknown ``precision``, naming the valid ones.
    """
    key = str(precision).lower()
    if key not in PRECISIONS:
        raise ValueError(
            f"unknown precision '{precision}' (config id 'precision'); use one of: float32, bfloat16, float16"
        )
    dtype = PRECISIONS[key]
    return network if dtype is None else AutocastForward(network, dtype)


def fast_precision(device: torch.device | str) -> str:
    """``"bfloat16"`` where ``device`` runs bfloat16 convolutions natively (CUDA with bf16 support; a CPU
    with AVX512-BF16 / AMX, as oneDNN reports it), else ``"float32"`` (emulated bfloat16 would be slower).

    The training config's default for ``precision``; override with ``--precision float32`` for full precision.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    return "float32"
