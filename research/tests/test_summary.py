"""research.summary: the per-layer model summary (fire CLI) and the family table in research/networks.md."""

import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import BUNDLE_ROOT
from research.summary import TABLE_IN_CHANNELS, TABLE_OUT_CHANNELS, count_flops, layer_rows, summarize
from scripts.networks import UNet, create_network, list_networks

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.parametrize("shape", [[1, 1, 64], [1, 2, 32, 32], [2, 1, 16, 16, 16]])
def test_summary_of_a_registered_network(shape):
    text = summarize("unet", shape, out_channels=3, features=(4, 8, 16))
    net = UNet(len(shape) - 2, shape[1], 3, features=(4, 8, 16))
    total = sum(p.numel() for p in net.parameters())
    assert f"Total params: {total:,}" in text
    assert "encoder.0.conv_0.conv (Conv" in text
    assert f"Output shape: [[{shape[0]}, 3, {', '.join(map(str, shape[2:]))}]]" in text
    for key in ("Forward/backward pass size (MB)", "Params size (MB)", "Activations saved for backward (MB", "GFLOPs"):
        assert key in text
    assert "Params of modules not called" not in text  # every parameter shows in the table


def test_rows_count_shared_modules_once():
    net = create_network("r2unet", 1, 1, 2, features=(2, 4))
    rows, output, saved = layer_rows(net, torch.randn(1, 1, 16))
    recurrent = [r for r in rows if r.name == "encoder.0.rcnn.0.conv.conv"]
    assert len(recurrent) == 3 and [r.first_call for r in recurrent] == [True, False, False]
    assert sum(r.params for r in rows) == sum(p.numel() for p in net.parameters())
    assert saved > 0 and output.shape == (1, 2, 16)


def test_functional_weights_are_reported():
    text = summarize("xunet", [1, 1, 32, 32], features=(4, 4, 8, 8, 16, 4))
    assert "Params of modules not called as modules" in text and "upcat_4.convs.conv_0.conv" in text


def test_measured_activations_shrink_with_checkpointing():
    def saved(flag):
        net = UNet(2, 1, 2, features=(4, 8, 16), checkpointing=flag).train()
        return layer_rows(net, torch.randn(2, 1, 64, 64))[2]

    assert saved(True) < 0.5 * saved(False)


def test_count_flops_of_a_convolution():
    conv = torch.nn.Conv3d(2, 4, 3, padding=1)
    assert count_flops(conv, torch.randn(1, 2, 8, 8, 8)) == 2 * (8**3 * 4) * (2 * 27)


def test_cli():
    result = subprocess.run(
        [sys.executable, "-m", "research.summary", "unet", "--input_shape", "[1,1,32,32]", "--features", "[4,8]"],
        cwd=BUNDLE_ROOT,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Total params:" in result.stdout and "[1, 3, 32, 32]" in result.stdout


def test_docs_table_lists_every_network_with_its_parameters():
    """research/networks.md is up to date: every registered network with the parameter counts of its defaults.
    Regenerate it with `python -m research.summary table --out research/networks.md`."""
    text = (BUNDLE_ROOT / "research" / "networks.md").read_text().split("<!-- end of table -->")[0]
    rows = dict(re.findall(r"^\| `([^`]+)` \| (.*)$", text, flags=re.M))
    assert sorted(rows) == list_networks(), "regenerate: python -m research.summary table --out research/networks.md"
    for name in list_networks():
        with torch.device("meta"):
            counts = [
                sum(p.numel() for p in create_network(name, d, TABLE_IN_CHANNELS, TABLE_OUT_CHANNELS).parameters())
                for d in (2, 3)
            ]
        cells = [c.strip() for c in rows[name].split("|")]
        assert [cells[1], cells[3]] == [f"{n:,}" for n in counts], f"{name}: regenerate research/networks.md"
