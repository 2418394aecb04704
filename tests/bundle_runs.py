"""Small runs of the bundle's configs for the reliability tests: tiny network, few cases, no workers."""

from pathlib import Path

from monai.bundle import ConfigWorkflow

from conftest import BUNDLE_ROOT

CONFIGS = BUNDLE_ROOT / "configs"
META = str(CONFIGS / "metadata.json")
TINY_NET = {"xunet": {"features": [4, 4, 8, 8, 16, 4]}}


def training(tmp: Path, dataset_dir: Path, **overrides) -> ConfigWorkflow:
    """train.json on 2 + 2 cases of ``dataset_dir`` for 1 epoch, every folder it writes under ``tmp``."""
    settings = {
        "bundle_root": str(BUNDLE_ROOT),
        "dataset_dir": str(dataset_dir),
        "ckpt_dir": str(tmp / "models"),
        "output_dir": str(tmp / "eval"),
        "tensorboard_dir": str(tmp / "runs"),
        "data_limit": 2,
        "num_workers": 0,
        "patch_size": [32, 32, 32],
        "network_options": TINY_NET,
        "val_interval": 1,
        "download": False,
        "device": "cpu",
        "train#trainer#max_epochs": 1,
        **overrides,
    }
    return ConfigWorkflow(config_file=str(CONFIGS / "train.json"), meta_file=META, workflow_type="train", **settings)


def error_text(exc: BaseException) -> str:
    """The messages of ``exc`` and every error it was raised from (ConfigWorkflow wraps the check's own), as a
    traceback shows them."""
    parts = []
    while exc is not None:
        parts.append(str(exc))
        # as Python prints it: an error raised "from None" hides the one it replaced
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return "\n".join(parts)
