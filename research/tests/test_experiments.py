"""The research experiment overlays (research/configs/experiments/) on the bundle's train.json and evaluate.json."""

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from conftest import BUNDLE_ROOT, CONFIGS, EVALUATE, META, TRAIN, exception_chain, quick_overrides

EXPERIMENTS = BUNDLE_ROOT / "research" / "configs" / "experiments"


def test_weight_averaging_saves_its_averages_beside_the_run_s_own_weights(hippocampus_dir, tmp_path):
    """research/configs/experiments/weight_averaging.json with val_interval 0: model.pt holds the last epoch's weights as
    without the overlay, and ema_fast/ and ema_slow/ each hold a model.pt of averaged weights that evaluate.json
    can load (--ckpt_dir <models>/ema_fast)."""
    overrides = {**quick_overrides(tmp_path, hippocampus_dir), "val_interval": 0, "train#trainer#max_epochs": 2}
    workflow = ConfigWorkflow(
        config_file=[TRAIN, str(EXPERIMENTS / "weight_averaging.json")],
        meta_file=META,
        workflow_type="train",
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    network = workflow.parser.get_parsed_content("network")
    iterations = workflow.trainer.state.iteration
    workflow.finalize()
    models = tmp_path / "models"
    last = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert iterations > 0 and all(torch.equal(last[k], v.cpu()) for k, v in network.state_dict().items())
    averages = [
        torch.load(models / name / "model.pt", map_location="cpu", weights_only=True)
        for name in ("ema_fast", "ema_slow")
    ]
    for average in averages:
        network.load_state_dict(average, strict=True)
        assert not torch.equal(average["final_conv.weight"], last["final_conv.weight"])
    assert not torch.equal(averages[0]["final_conv.weight"], averages[1]["final_conv.weight"])  # own momenta


OVERLAYS_OF_TRAIN = [*sorted((EXPERIMENTS).glob("*.json")), CONFIGS / "train_all_cases.json"]


@pytest.mark.parametrize("overlay", OVERLAYS_OF_TRAIN, ids=lambda p: p.stem)
def test_experiment_overlays_build_on_train(overlay, hippocampus_dir, tmp_path):
    """Each committed experiment overlay, and train_all_cases.json, still applies to train.json (+ evaluate.json):
    every id it overrides exists there, every id it adds is used by the overlay itself (so a misspelt override
    cannot pass as a new id), and its parts build."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([*EVALUATE, str(overlay)])
    parser["dataset_dir"] = str(hippocampus_dir)
    # the shipped weights, in a folder of the test's own: building a saver creates its folder under ckpt_dir
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").symlink_to(BUNDLE_ROOT / "models" / "model.pt")
    parser["ckpt_dir"] = str(tmp_path / "models")
    parser["tensorboard_dir"] = str(tmp_path / "runs")
    parser["data_limit"] = 2  # an overlay of the optimiser or schedule builds the data loader: keep it small
    base_ids = ConfigParser(ConfigParser.load_config_files(EVALUATE))
    text = overlay.read_text()
    for key in json.loads(text):
        if not key.startswith("_"):
            assert (
                key in base_ids or f"@{key}" in text
            ), f"{overlay.name} overrides '{key}', which neither train.json nor evaluate.json has"
            assert parser.get_parsed_content(key) is not None


def _ensemble_workflow(run_dir: Path, hippocampus_dir: Path, checkpoints: list, output: str) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=[*EVALUATE, str(EXPERIMENTS / "ensemble.json")],
        meta_file=META,
        workflow_type="eval",
        **{
            **quick_overrides(run_dir, hippocampus_dir),
            "output_dir": str(run_dir / output),
            "ensemble_ckpts": [str(c) for c in checkpoints],
        },
    )


def test_ensemble_of_one_model_twice_scores_as_the_model(trained, hippocampus_dir):
    """research/configs/experiments/ensemble.json: two copies of a model give that model's per-case Dice."""
    workflow = _ensemble_workflow(trained, hippocampus_dir, [trained / "models" / "model.pt"] * 2, "ensemble_same")
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    single = ConfigWorkflow(
        config_file=EVALUATE,
        meta_file=META,
        workflow_type="eval",
        **{**quick_overrides(trained, hippocampus_dir), "output_dir": str(trained / "single")},
    )
    single.initialize()
    single.run()
    single.finalize()
    rows = [
        (trained / out / "val_mean_dice_raw.csv").read_text().strip().splitlines()
        for out in ("ensemble_same", "single")
    ]
    assert len(rows[0]) == 1 + 4 and rows[0] == rows[1]


def test_ensemble_averages_member_probabilities(trained, hippocampus_dir, tmp_path):
    """The ensemble's label map is the argmax of the mean of its members' softmax probabilities."""
    state = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    other = {k: v + 0.3 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    torch.save(other, tmp_path / "other.pt")
    workflow = _ensemble_workflow(
        trained, hippocampus_dir, [trained / "models" / "model.pt", tmp_path / "other.pt"], "ensemble_two"
    )
    workflow.initialize()
    workflow.run()
    outputs = workflow.evaluator.state.output
    workflow.finalize()
    for item in outputs:
        assert not torch.allclose(item["pred0"], item["pred1"])
        expected = torch.argmax((item["pred0"] + item["pred1"]) / 2, dim=0)
        assert torch.equal(torch.argmax(item["pred"], dim=0), expected)


def test_ensemble_with_a_missing_member_names_the_setting(trained, hippocampus_dir, tmp_path):
    workflow = _ensemble_workflow(
        trained, hippocampus_dir, [trained / "models" / "model.pt", tmp_path / "no.pt"], "ensemble_missing"
    )
    with pytest.raises(Exception) as err:
        workflow.initialize()
    message = "".join(str(e) for e in exception_chain(err.value))
    assert "ensemble_ckpts" in message and "no.pt" in message
    assert not (trained / "ensemble_missing").exists()  # stopped before any work
