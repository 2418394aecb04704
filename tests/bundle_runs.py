"""Small runs of the bundle's configs for the reliability tests: tiny network, few cases, no workers."""

from pathlib import Path

from monai.bundle import ConfigWorkflow

from conftest import CONFIGS, META, TINY_NET, quick_overrides  # noqa: F401 (CONFIGS, TINY_NET: for the tests)


def training(tmp: Path, dataset_dir: Path, **overrides) -> ConfigWorkflow:
    """train.json on 2 + 2 cases of ``dataset_dir`` for 1 epoch, every folder it writes under ``tmp``."""
    settings = {
        **quick_overrides(tmp, dataset_dir),
        "data_limit": 2,
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
