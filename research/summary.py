"""Model summaries of the registered networks, and the family's table of parameters and GFLOPs.

Per-layer summary (like ``torchsummary``), for 1D, 2D or 3D inputs ``[batch, channels, *spatial]``::

    python -m research.summary unet --input_shape "[1,1,64,64]"
    python -m research.summary xunet --input_shape "[1,1,32,32,32]" --out_channels 3 --features "[8,8,16,32,64,8]"

Every call of a leaf module (one without children) is a row: its output shape and, on its first call, its
parameters (later calls of a shared module, e.g. R2U-Net's recurrent convolutions, show ``(shared)``). Below the
table: total parameters, the memory estimates -- torchsummary's "forward/backward pass size" (twice the leaf
outputs) and the activations autograd actually keeps for backward (measured) -- and the forward GFLOPs.

The family table in ``research/networks.md`` (parameters and GFLOPs of every registered network at 2D 256^2 and 3D
96^3, 1 input and 3 output channels, default widths) is written by::

    python -m research.summary table --out research/networks.md

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on meta tensors (shapes only, no memory,
no computation): 2 FLOPs per multiply-accumulate of convolutions (transposed too) and matrix products; norms,
activations, pooling and interpolation are not counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from scripts.networks import create_network, get_network_class, list_networks

__all__ = ["LayerRow", "count_flops", "family_table", "layer_rows", "main", "summarize"]

#: the family table's settings
TABLE_SHAPES = {2: (256, 256), 3: (96, 96, 96)}
TABLE_IN_CHANNELS = 1
TABLE_OUT_CHANNELS = 3


@dataclass
class LayerRow:
    """One call of a leaf module."""

    name: str
    kind: str
    shapes: list[tuple[int, ...]]
    params: int
    first_call: bool
    output_numel: int


def _tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


def layer_rows(net: nn.Module, x: torch.Tensor) -> tuple[list[LayerRow], Any, int]:
    """Run ``net(x)`` with forward hooks on the leaf modules.

    Returns:
        ``(rows, output, saved_bytes)``: a :class:`LayerRow` per leaf call in call order, the network's output,
        and the bytes of the tensors autograd saved for backward (deduplicated by storage; 0 without grad).
    """
    rows: list[LayerRow] = []
    seen: set[int] = set()
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            tensors = _tensors(output)
            first = id(module) not in seen
            seen.add(id(module))
            rows.append(
                LayerRow(
                    name=name,
                    kind=type(module).__name__,
                    shapes=[tuple(int(s) for s in t.shape) for t in tensors],
                    params=sum(p.numel() for p in module.parameters()) if first else 0,
                    first_call=first,
                    output_numel=sum(t.numel() for t in tensors),
                )
            )

        return hook

    for name, module in net.named_modules():
        if not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(make_hook(name)))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            output = net(x)
    finally:
        for handle in handles:
            handle.remove()
    return rows, output, sum(storages.values())


def _mb(n_bytes: float) -> float:
    return n_bytes / 1024**2


def summarize(
    network: str | nn.Module,
    input_shape: Sequence[int] = (1, 1, 64, 64),
    out_channels: int = 3,
    train: bool = False,
    **options: Any,
) -> str:
    """The per-layer summary of a network as text.

    Args:
        network: registered name (built with ``spatial_dims = len(input_shape) - 2`` and ``in_channels =
            input_shape[1]``) or a network instance.
        input_shape: ``[batch, channels, *spatial]`` with 1 to 3 spatial dimensions.
        out_channels: output channels of a network built by name.
        train: run in training mode (default eval mode, the inference graph).
        options: keyword arguments of the network built by name.
    """
    input_shape = [int(s) for s in input_shape]
    if not 3 <= len(input_shape) <= 5:
        raise ValueError(f"input_shape must be [batch, channels, *spatial] with 1-3 spatial dims, got {input_shape}.")
    if isinstance(network, nn.Module):
        net, title = network, type(network).__name__
    else:
        torch.manual_seed(0)
        net = create_network(network, len(input_shape) - 2, input_shape[1], out_channels, **options)
        title = f"{network} ({type(net).__name__})"
    net.train(train)
    x = torch.randn(input_shape)
    rows, output, saved_bytes = layer_rows(net, x)

    lines = []
    width = 100
    lines.append(f"{title}: input {input_shape}, {'training' if train else 'eval'} mode")
    lines.append("-" * width)
    lines.append(f"{'Layer (type)':>60}  {'Output Shape':>24}  {'Param #':>12}")
    lines.append("=" * width)
    has_params = {n for n, m in net.named_modules() if any(True for _ in m.parameters())}
    for index, row in enumerate(rows, 1):
        label = f"{row.name} ({row.kind}-{index})"
        shape = ", ".join(str(list(s)) for s in row.shapes) or "-"
        params = f"{row.params:,}" if row.first_call or row.name not in has_params else "(shared)"
        lines.append(f"{label:>60}  {shape:>24}  {params:>12}")
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    shown = sum(r.params for r in rows)
    lines.append("=" * width)
    lines.append(f"Total params: {total:,}")
    lines.append(f"Trainable params: {trainable:,}")
    lines.append(f"Non-trainable params: {total - trainable:,}")
    if shown != total:
        called = {r.name for r in rows}
        other = [
            n
            for n, m in net.named_modules()
            if not any(True for _ in m.children()) and n not in called and any(True for _ in m.parameters())
        ]
        lines.append(
            f"Params of modules not called as modules: {total - shown:,} ({', '.join(other) or 'used functionally'}; "
            "e.g. XUNet's fast cross-level convolution reads their weights directly)"
        )
    element = x.element_size()
    input_bytes = x.numel() * element
    pass_bytes = 2 * sum(r.output_numel for r in rows) * element
    param_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    lines.append("-" * width)
    lines.append(f"Output shape: {[list(t.shape) for t in _tensors(output)]}")
    lines.append(f"Input size (MB): {_mb(input_bytes):.2f}")
    lines.append(f"Forward/backward pass size (MB): {_mb(pass_bytes):.2f}  (torchsummary's estimate: 2 x leaf outputs)")
    lines.append(f"Params size (MB): {_mb(param_bytes):.2f}")
    lines.append(f"Estimated Total Size (MB): {_mb(input_bytes + pass_bytes + param_bytes):.2f}")
    lines.append(f"Activations saved for backward (MB, measured): {_mb(saved_bytes):.2f}")
    lines.append(f"GFLOPs (forward, FlopCounterMode): {count_flops(net, x) / 1e9:.3f}")
    lines.append("-" * width)
    return "\n".join(lines)


def count_flops(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of ``net(x)`` counted by ``FlopCounterMode`` (no gradients; works on meta tensors)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x)
    return int(counter.get_total_flops())


def _meta_stats(name: str, spatial_dims: int) -> tuple[int, float]:
    with torch.device("meta"):
        net = create_network(name, spatial_dims, TABLE_IN_CHANNELS, TABLE_OUT_CHANNELS).eval()
        x = torch.empty((1, TABLE_IN_CHANNELS, *TABLE_SHAPES[spatial_dims]))
    params = sum(p.numel() for p in net.parameters())
    return params, count_flops(net, x) / 1e9


def family_stats(names: Sequence[str] | None = None) -> dict[str, dict[int, tuple[int, float]]]:
    """``{name: {spatial_dims: (params, GFLOPs)}}`` for the table's settings."""
    return {name: {d: _meta_stats(name, d) for d in TABLE_SHAPES} for name in (names or list_networks())}


def family_table(names: Sequence[str] | None = None) -> str:
    """The markdown of ``research/networks.md``."""
    stats = family_stats(names)
    lines = [
        "# The network family",
        "",
        "Every network registered in `scripts.networks` (choose one with `network_name` in the bundle config, its",
        "options under `network_options`). Parameters and GFLOPs for one input of **2D 256 x 256** and **3D 96 x 96",
        "x 96**, 1 input and 3 output channels, default arguments (default widths). GFLOPs: 2 per multiply-accumulate",
        "of convolutions and matrix products, counted by `torch.utils.flop_counter.FlopCounterMode` on meta tensors",
        "(norms, activations, pooling and interpolation not counted).",
        "",
        "Written by `python -m research.summary table --out research/networks.md`; do not edit the table by hand.",
        "",
        "| network | class | params 2D | GFLOPs 2D 256² | params 3D | GFLOPs 3D 96³ |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, by_dims in stats.items():
        cls = get_network_class(name).__name__
        (p2, f2), (p3, f3) = by_dims[2], by_dims[3]
        lines.append(f"| `{name}` | `{cls}` | {p2:,} | {f2:,.1f} | {p3:,} | {f3:,.1f} |")
    lines.append("")
    return "\n".join(lines)


def main(
    network: str,
    input_shape: Sequence[int] | None = None,
    out_channels: int = 3,
    train: bool = False,
    out: str | None = None,
    **options: Any,
) -> None:
    """``python -m research.summary <network> --input_shape "[1,1,64,64]"`` prints the network's summary;
    ``python -m research.summary table [--out research/networks.md]`` prints or writes the family table (the table part
    of the file is replaced, text after a line ``<!-- end of table -->`` is kept).

    Args:
        network: a registered name, or ``table``.
        input_shape: ``[batch, channels, *spatial]`` (default ``[1, 1, 64, 64]``).
        out_channels: output channels.
        train: summarise the training-mode graph.
        out: for ``table``: the markdown file to write.
        options: the network's keyword arguments, e.g. ``--features "[8,16,32,64,128]"``.
    """
    if network == "table":
        text = family_table()
        if out is None:
            print(text)
            return
        path = Path(out)
        marker = "<!-- end of table -->"
        tail = ""
        if path.is_file() and marker in path.read_text():
            tail = path.read_text().split(marker, 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n" + marker + (tail if tail else "\n"))
        print(f"wrote {path}")
        return
    print(summarize(network, input_shape or (1, 1, 64, 64), out_channels=out_channels, train=train, **options))


if __name__ == "__main__":
    import fire

    fire.Fire(main)
