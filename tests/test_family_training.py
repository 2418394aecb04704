"""Every registered network trains for an epoch (and validates, and saves a checkpoint) in the bundle's train
workflow, chosen by `network_name` with small widths in `network_options`. UNet++ also trains with deep
supervision through the overrides documented in research/networks.md."""

import math

import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.handlers import from_engine

from conftest import BUNDLE_ROOT
from scripts.networks import get_network_class, list_networks

CONFIGS = BUNDLE_ROOT / "configs"
TRAIN = str(CONFIGS / "train.json")
META = str(CONFIGS / "metadata.json")

F5 = [4, 8, 16, 32, 64]
XUNET_TINY = [4, 4, 8, 8, 16, 4]
#: small widths per network; a network registered later without an entry trains with its defaults
TRAIN_OPTIONS = {
    "attentionunet": {"features": F5},
    "basicunet": {"features": XUNET_TINY},
    "r2attunet": {"features": F5},
    "r2unet": {"features": F5},
    "resunet": {"features": [4, 8, 16, 32]},
    "unet": {"features": F5},
    "unetpp": {"features": F5},
    "xunet": {"features": XUNET_TINY},
    "xunet_attn": {"features": XUNET_TINY},
    "xunet_light": {"features": XUNET_TINY},
}

#: UNet++ with deep supervision: stacked heads need the stacked loss and the last head for the train metric
DEEP_SUPERVISION_OVERRIDES = {
    "network_options": {"unetpp": {"features": F5, "deep_supervision": True}},
    "loss": {
        "_target_": "scripts.networks.StackedDeepSupervisionLoss",
        "weight_mode": "same",
        "loss": {
            "_target_": "DiceCELoss",
            "to_onehot_y": True,
            "softmax": True,
            "include_background": True,
            "smooth_nr": 1e-05,
            "smooth_dr": 1e-05,
        },
    },
    "train#postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {
                "_target_": "Lambdad",
                "keys": "pred",
                "func": {"_target_": "scripts.networks.last_head", "_mode_": "callable"},
            },
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "AsDiscreted",
                "keys": ["pred", "label"],
                "argmax": [True, False],
                "to_onehot": "@num_classes",
            },
        ],
    },
}


def overrides(tmp, data_dir, name):
    """4 cases, one epoch, one validation, a patch whose deepest level keeps 2 voxels (instance norm needs > 1)."""
    return {
        "bundle_root": str(BUNDLE_ROOT),
        "dataset_dir": str(data_dir),
        "download": False,
        "ckpt_dir": str(tmp / "models"),
        "output_dir": str(tmp / "eval"),
        "tensorboard_dir": str(tmp / "runs"),
        "data_limit": 4,
        "num_workers": 0,
        "cache_rate": 1.0,
        "patch_size": [32, 16, 16],
        "val_interval": 1,
        "train#trainer#max_epochs": 1,
        "network_name": name,
        "network_options": {name: TRAIN_OPTIONS.get(name, {})},
    }


def train_one_epoch(tmp, data_dir, name, **extra):
    workflow = ConfigWorkflow(
        config_file=TRAIN, meta_file=META, workflow_type="train", **{**overrides(tmp, data_dir, name), **extra}
    )
    workflow.initialize()
    try:
        workflow.run()
        trainer = workflow.parser.get_parsed_content("train#trainer")
        network = workflow.parser.get_parsed_content("network")
        loss = from_engine(["loss"], first=True)(trainer.state.output)
        metrics = dict(trainer.state.metrics)
    finally:
        workflow.finalize()
    return network, float(loss), metrics


@pytest.mark.parametrize("name", list_networks())
def test_network_trains_one_epoch(name, tmp_path, hippocampus_dir):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    network, loss, metrics = train_one_epoch(tmp_path, hippocampus_dir, name)
    assert type(network) is get_network_class(name)
    assert math.isfinite(loss), loss
    assert "train_mean_dice" in metrics
    checkpoint = tmp_path / "models" / "model.pt"
    assert checkpoint.is_file()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    network.load_state_dict(state.get("model", state))


def test_unetpp_trains_with_deep_supervision(tmp_path, hippocampus_dir):
    network, loss, metrics = train_one_epoch(tmp_path, hippocampus_dir, "unetpp", **DEEP_SUPERVISION_OVERRIDES)
    assert network.deep_supervision
    assert math.isfinite(loss)
    assert (tmp_path / "models" / "model.pt").is_file()
