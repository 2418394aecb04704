"""scripts.checks: settings checked before any work, and nothing of the user's lost."""

import os

from scripts.checks import keep_existing_checkpoint


def test_nothing_to_keep_in_an_empty_or_missing_folder(tmp_path):
    assert keep_existing_checkpoint(tmp_path / "missing") is None
    assert keep_existing_checkpoint(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_an_existing_model_is_copied_under_its_modification_time(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    os.utime(model, (1_700_000_000, 1_700_000_000))
    kept = keep_existing_checkpoint(tmp_path)
    assert kept.parent == tmp_path and kept.name.startswith("model_2023") and kept.suffix == ".pt"
    assert kept.read_bytes() == b"weights" and model.read_bytes() == b"weights"  # the original stays
    # the same model again (a second run that failed before saving): one copy, not two
    assert keep_existing_checkpoint(tmp_path) == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.pt", kept.name])
