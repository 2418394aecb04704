"""Weight initialisation for any network of the bundle (normal / xavier / kaiming / orthogonal, seed 001).

Example (in a bundle config)::

    "network": "$scripts.networks.init_weights(@network_def, 'kaiming').to(@device)"
"""

from __future__ import annotations

import torch.nn as nn
from torch.nn import init

__all__ = ["INIT_TYPES", "init_weights"]

INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def init_weights(net: nn.Module, init_type: str = "kaiming", gain: float = 0.02) -> nn.Module:
    """Initialise ``net`` in place and return it.

    * Convolutions (1D/2D/3D, transposed too) and linear layers: weights by ``init_type`` --
      ``"normal"``: N(0, gain); ``"xavier"``: Xavier/Glorot normal with ``gain``; ``"kaiming"``: He normal
      (``a=0``, fan-in; ``gain`` unused); ``"orthogonal"``: orthogonal with ``gain``. Biases are set to 0.
    * Normalisation layers with affine parameters (batch, instance, group, layer norm): weights N(1, gain),
      biases 0.

    Args:
        net: the network (any ``nn.Module``).
        init_type: one of ``"normal"``, ``"xavier"``, ``"kaiming"``, ``"orthogonal"``.
        gain: standard deviation (``"normal"``, and of the norm weights) or gain (``"xavier"``, ``"orthogonal"``).

    Raises:
        ValueError: for an unknown ``init_type``.
    """
    if init_type not in INIT_TYPES:
        raise ValueError(f"init_type must be one of {INIT_TYPES}, got '{init_type}'.")
    for m in net.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            if init_type == "normal":
                init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                init.zeros_(m.bias)
        elif isinstance(m, _NORMS) and getattr(m, "weight", None) is not None:
            init.normal_(m.weight, 1.0, gain)
            if getattr(m, "bias", None) is not None:
                init.zeros_(m.bias)
    return net
