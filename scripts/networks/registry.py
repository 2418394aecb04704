"""Name -> network class registry, so a bundle config picks a network with one override.

Every network of the bundle registers itself with :func:`register_network`; configs build it with
:func:`create_network`, e.g. ``"network_def": {"_target_": "scripts.networks.create_network",
"name": "@network_name", ...}`` and ``--network_name basicunet`` on the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch.nn as nn

_NETWORKS: dict[str, type[nn.Module]] = {}
_CANONICAL: dict[str, str] = {}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def register_network(name: str, *aliases: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a network under ``name`` (and ``aliases``); names ignore case, '-' and '_'."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        for alias in (name, *aliases):
            key = _key(alias)
            if key in _NETWORKS and _NETWORKS[key] is not cls:
                raise ValueError(f"network name '{alias}' is already registered for {_NETWORKS[key].__name__}")
            _NETWORKS[key] = cls
        _CANONICAL[name] = _key(name)
        return cls

    return wrap


def list_networks() -> list[str]:
    """The registered networks' canonical names, sorted."""
    return sorted(_CANONICAL)


def get_network_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``; an unknown name raises a KeyError listing the valid ones."""
    try:
        return _NETWORKS[_key(str(name))]
    except KeyError:
        raise KeyError(
            f"unknown network name '{name}' (config id 'network_name'); choose one of: {', '.join(list_networks())}"
        ) from None


def create_network(
    name: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    network_options: Mapping[str, Mapping[str, Any]] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the network registered as ``name``.

    Args:
        name: registered name (see :func:`list_networks`), e.g. ``"xunet"`` or ``"basicunet"``.
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        network_options: optional per-network keyword arguments keyed by network name, so one config can
            carry settings for several networks and switching ``name`` needs no other override. Only the
            entry for ``name`` is used.
        kwargs: further keyword arguments for the chosen network (override ``network_options``).
    """
    cls = get_network_class(name)
    options: dict[str, Any] = {}
    for key, value in (network_options or {}).items():
        if _key(key) in _NETWORKS and _NETWORKS[_key(key)] is cls:
            options.update(value)
    options.update(kwargs)
    try:
        return cls(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **options)
    except (TypeError, ValueError) as err:  # an unknown argument, or a value the network refuses
        raise type(err)(
            f"network '{name}' ({cls.__name__}) rejected its arguments {sorted(options)}: {err}. "
            f"Fix 'network_options' for '{name}' in the config."
        ) from err
