"""Mixed precision that works on the CPU as well as on CUDA.

MONAI's engines only know CUDA autocast (``amp=True`` calls ``torch.autocast("cuda")``), but a recent
CPU with AMX runs bfloat16 convolutions about 1.5x faster than float32, which on this bundle's 2-core
training budget is 1.5x the epochs (a CPU with AVX512-BF16 alone gains nothing, and may compute wrong
gradients: :func:`cpu_bfloat16_gradients_are_correct`). :func:`with_autocast` wraps the network the
engines call, so neither the trainer nor the evaluator needs changing, and the checkpoint stays the
plain network's state dict (the wrapper holds no parameters of its own and is never saved).
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

PRECISIONS = {
    "float32": None,
    "fp32": None,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


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
    if (
        dtype == torch.bfloat16
        and not torch.cuda.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        and not cpu_bfloat16_gradients_are_correct()
    ):
        logger.warning(
            "precision bfloat16: this CPU computes wrong bfloat16 weight gradients for 3-D convolutions "
            "(oneDNN, CPUs with AVX512-BF16 and no AMX), so do not train with it here; evaluation and "
            "inference, which compute no gradients, are unaffected."
        )
    return network if dtype is None else AutocastForward(network, dtype)


@functools.cache
def cpu_bfloat16_gradients_are_correct() -> bool:
    """Whether this CPU's bfloat16 3-D convolutions compute the weight gradients float32 computes (to bfloat16's
    precision), for the input XUNet's deepest level sees at the training patch 32 x 48 x 32: 2 x 3 x 2 voxels.

    On a CPU with AVX512-BF16 but no AMX, PyTorch 2.13's oneDNN returns wrong weight gradients for ``Conv3d`` inputs
    whose first spatial size is 2 (as large as the gradients themselves or far larger, at times infinite, and
    different at every call), while the forward pass and the input gradients are right. Training there would corrupt the deepest
    convolutions. Checked once per process on a small convolution, in about a millisecond; torch's global random
    generator is left untouched.
    """
    generator = torch.Generator().manual_seed(0)
    conv = nn.Conv3d(8, 16, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.1)
        conv.bias.zero_()
    x = torch.randn(2, 8, 2, 3, 2, generator=generator)

    def weight_gradient(dtype: torch.dtype | None) -> torch.Tensor:
        conv.zero_grad()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            y = conv(x)
        y.float().square().mean().backward()
        return conv.weight.grad.clone()

    reference = weight_gradient(None)
    scale = reference.abs().max()
    for _ in range(2):
        mixed = weight_gradient(torch.bfloat16)
        if not torch.isfinite(mixed).all() or (mixed - reference).abs().max() > 0.05 * scale:
            return False
    return True


def fast_precision(device: torch.device | str) -> str:
    """``"bfloat16"`` where ``device`` runs bfloat16 convolutions natively and correctly (CUDA with bf16 support;
    a CPU with AVX512-BF16 / AMX, as oneDNN reports it, whose bfloat16 gradients pass
    :func:`cpu_bfloat16_gradients_are_correct`), else ``"float32"`` (emulated bfloat16 would be slower).

    The training config's default for ``precision``; override with ``--precision float32`` for full precision.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        if cpu_bfloat16_gradients_are_correct():
            return "bfloat16"
        logger.warning(
            "this CPU supports bfloat16, but its bfloat16 3-D convolution weight gradients are wrong "
            "(oneDNN, CPUs with AVX512-BF16 and no AMX): training in float32 instead."
        )
    return "float32"
