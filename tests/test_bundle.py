"""The bundle's workflows driven through MONAI's ConfigWorkflow: properties, training, evaluation, inference."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, verify_metadata

from conftest import (
    BUNDLE_ROOT,
    EVALUATE,
    INFER,
    META,
    SCHEMA,
    TINY_NET,
    TRAIN,
    TRAIN_ALL_CASES,
    exception_chain,
    msd_subset_folder,
    own_run_dirs,
    quick_overrides,
)


def test_metadata_matches_the_schema():
    verify_metadata(meta_file=META, filepath=str(SCHEMA), hash_val="06954cad2cc5d3784e72077ac76f0fc8", hash_type="md5")
    meta = json.loads(Path(META).read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background",
        "1": "anterior",
        "2": "posterior",
    }
    # the pinned versions are the ones installed
    import ignite
    import monai
    import nibabel

    assert meta["monai_version"] == monai.__version__
    assert meta["pytorch_version"] == torch.__version__.split("+")[0]
    assert meta["required_packages_version"]["nibabel"] == nibabel.__version__
    assert meta["required_packages_version"]["pytorch-ignite"] == ignite.__version__


def test_metadata_pins_are_the_requirements_but_numpy_may_be_newer_here():
    """requirements.txt installs the metadata's versions, except numpy: the metadata's must also install on
    Python 3.10 (the Zoo's CI; numpy 2.3 dropped it), so it may be older (.ci/check_metadata_pins.py resolves the
    metadata's set on Python 3.10-3.12)."""
    from packaging.version import Version

    meta = json.loads(Path(META).read_text())
    pins = dict(
        line.split("#")[0].strip().split("==")
        for line in (BUNDLE_ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line
    )
    expected = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], **meta["required_packages_version"]}
    assert {name: pins.get(name) for name in expected} == expected
    assert Version(meta["numpy_version"]) <= Version(pins["numpy"]) == Version(np.__version__)


@pytest.mark.parametrize("workflow_type,config", [("train", TRAIN), ("eval", EVALUATE), ("infer", INFER)])
def test_properties_complete(workflow_type, config, hippocampus_dir, tmp_path):
    data = {"infer": hippocampus_dir / "imagesTr"}.get(workflow_type, hippocampus_dir)
    workflow = ConfigWorkflow(
        config_file=config,
        meta_file=META,
        workflow_type=workflow_type,
        dataset_dir=str(data),
        output_dir=str(tmp_path),
        **own_run_dirs(workflow_type, tmp_path),
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])


@pytest.mark.parametrize("workflow_type,config", [("train", TRAIN), ("eval", EVALUATE), ("infer", INFER)])
def test_precision_trains_mixed_and_reports_full(workflow_type, config, hippocampus_dir, tmp_path):
    """Training (and its validation) runs at the machine's fast precision; evaluation and inference, whose
    numbers are reported, run in float32 unless ``--precision`` says otherwise."""
    from scripts.precision import AutocastForward, fast_precision

    data = {"infer": hippocampus_dir / "imagesTr"}.get(workflow_type, hippocampus_dir)
    workflow = ConfigWorkflow(
        config_file=config,
        meta_file=META,
        workflow_type=workflow_type,
        dataset_dir=str(data),
        output_dir=str(tmp_path),
        **own_run_dirs(workflow_type, tmp_path),
    )
    workflow.initialize()
    parser = workflow.parser
    expected = fast_precision(parser.get_parsed_content("device")) if workflow_type == "train" else "float32"
    assert parser.get_parsed_content("precision") == expected
    network, engine_network = parser.get_parsed_content("network"), parser.get_parsed_content("engine_network")
    if expected == "float32":
        assert engine_network is network
    else:
        assert isinstance(engine_network, AutocastForward) and engine_network.network is network
    engine = parser.get_parsed_content("train#trainer" if workflow_type == "train" else "evaluator")
    assert engine.network is engine_network


@pytest.mark.parametrize("config", [TRAIN, INFER])
def test_bundle_root_is_read_as_a_plain_config_value(config):
    """The Zoo's tools and MONAI Label read the configs with a plain ConfigParser: bundle_root is '.' there, and
    they override it with the bundle's folder."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config)
    assert parser.get_parsed_content("bundle_root") == "."
    parser["bundle_root"] = str(BUNDLE_ROOT)
    assert parser.get_parsed_content("ckpt_dir") == str(BUNDLE_ROOT) + "/models"


@pytest.mark.parametrize("config,workflow_type", [(TRAIN, "train"), (INFER, "infer")])
def test_bundle_root_given_works_from_any_working_directory(tmp_path, monkeypatch, config, workflow_type):
    """From another folder, --bundle_root <bundle> (MONAI's way) finds the bundle's scripts and shipped weights."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != BUNDLE_ROOT])
    overrides = {"ckpt_dir": str(tmp_path)} if workflow_type == "train" else {}
    workflow = ConfigWorkflow(
        config_file=config, meta_file=META, workflow_type=workflow_type, bundle_root=str(BUNDLE_ROOT), **overrides
    )
    workflow.parser["initialize"] = ["@check_bundle_root", "@bundle_on_path"]
    workflow.initialize()
    assert str(BUNDLE_ROOT) in sys.path
    assert workflow.parser.get_parsed_content("network_def").__class__.__module__.startswith("scripts.networks")


@pytest.mark.parametrize("config,workflow_type", [(TRAIN, "train"), (INFER, "infer")])
def test_a_working_directory_that_is_no_bundle_names_bundle_root(tmp_path, monkeypatch, config, workflow_type):
    """Without --bundle_root, '.' must be the bundle: elsewhere the run stops before it writes models/ there."""
    monkeypatch.chdir(tmp_path)
    workflow = ConfigWorkflow(config_file=config, meta_file=META, workflow_type=workflow_type)
    with pytest.raises(Exception) as err:
        workflow.initialize()
    message = "".join(str(e) for e in exception_chain(err.value))
    assert "bundle_root" in message and "--bundle_root" in message and str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []


def test_training_writes_a_plain_state_dict(trained):
    state = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "final_conv.weight" in state  # a plain state dict, not wrapped in {"model": ...}
    from scripts.networks import XUNet

    XUNet(3, 1, 3, features=TINY_NET["xunet"]["features"]).load_state_dict(state, strict=True)
    assert any((trained / "runs").iterdir())  # TensorBoard events


def test_training_on_all_cases_saves_the_last_weights_without_validating(hippocampus_dir, tmp_path):
    """train_all_cases.json: every case trains, nothing validates, and model.pt holds the weights of the last
    epoch (no validation to choose a best one)."""
    overrides = quick_overrides(tmp_path, hippocampus_dir)
    del overrides["val_interval"]  # the overlay's 0 must be what turns validation off
    overrides["train#trainer#max_epochs"] = 2
    workflow = ConfigWorkflow(config_file=TRAIN_ALL_CASES, meta_file=META, workflow_type="train", **overrides)
    workflow.initialize()
    every_case = workflow.parser.get_parsed_content("datalist")(split="all")
    assert workflow.parser.get_parsed_content("train#dataset#data") == every_case
    workflow.run()
    network = workflow.parser.get_parsed_content("network")
    validator = workflow.parser.get_parsed_content("validate#evaluator")
    assert workflow.trainer.state.epoch == 2
    workflow.finalize()
    assert validator.state.iteration == 0  # never validated
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(state[k], v.cpu()) for k, v in network.state_dict().items())


def test_training_keeps_a_copy_of_an_existing_model(hippocampus_dir, tmp_path):
    """Training into a ckpt_dir that holds model.pt (the shipped one, or an earlier run's) copies it aside first,
    into state_dir (default <ckpt_dir>_state): MONAI Label offers every ckpt_dir/*.pt as a model."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"an earlier model")
    workflow = ConfigWorkflow(
        config_file=TRAIN, meta_file=META, workflow_type="train", **quick_overrides(tmp_path, hippocampus_dir)
    )
    workflow.initialize()
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["model.pt"]
    kept = [p for p in (tmp_path / "models_state").iterdir() if p.suffix == ".pt"]
    assert len(kept) == 1 and kept[0].name.startswith("model_") and kept[0].read_bytes() == b"an earlier model"


class _Interruption(Exception):
    """Stands for a killed job or a Ctrl-C in the middle of training."""


def _train(tmp: Path, hippocampus_dir: Path, interrupt_before_epoch: int | None = None, **overrides):
    """Train 3 epochs on 4 + 4 cases with one data-loader worker, validating each epoch; optionally stop at the start
    of an epoch as an interruption would. Returns the final network weights and the evaluator's best (score, epoch),
    or None when interrupted."""
    from ignite.engine import Events

    settings = {**quick_overrides(tmp, hippocampus_dir), "num_workers": 1, "train#trainer#max_epochs": 3, **overrides}
    workflow = ConfigWorkflow(config_file=TRAIN, meta_file=META, workflow_type="train", **settings)
    workflow.initialize()
    if interrupt_before_epoch is not None:

        def interrupt(engine):
            raise _Interruption()

        workflow.trainer.add_event_handler(Events.EPOCH_STARTED(once=interrupt_before_epoch), interrupt)
        with pytest.raises(Exception) as err:
            workflow.run()
        assert any(isinstance(e, _Interruption) for e in exception_chain(err.value))
        return None
    workflow.run()
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    weights = {k: v.clone() for k, v in workflow.parser.get_parsed_content("network").state_dict().items()}
    workflow.finalize()
    return weights, (evaluator.state.best_metric, evaluator.state.best_metric_epoch)


def test_interrupted_training_resumes_to_the_same_model(hippocampus_dir, tmp_path):
    """A run stopped after epoch 2 of 3 and resumed with --resume True ends with the weights, the best validation
    score and the best model.pt of the same run uninterrupted, bit for bit (CPU, data-loader workers)."""
    whole = _train(tmp_path / "whole", hippocampus_dir)
    assert _train(tmp_path / "split", hippocampus_dir, interrupt_before_epoch=3) is None
    assert (tmp_path / "split" / "models_state" / "training_state.pt").is_file()
    assert [p.name for p in (tmp_path / "split" / "models").glob("*.pt")] == ["model.pt"]  # deployable weights only
    resumed = _train(tmp_path / "split", hippocampus_dir, resume=True)
    assert resumed[1] == whole[1]
    for name, value in whole[0].items():
        assert torch.equal(resumed[0][name], value), name
    best = [
        torch.load(tmp_path / run / "models" / "model.pt", map_location="cpu", weights_only=True)
        for run in ("whole", "split")
    ]
    assert all(torch.equal(best[0][k], best[1][k]) for k in best[0])


def test_resume_without_a_training_state_names_the_setting(hippocampus_dir, tmp_path):
    with pytest.raises(Exception) as err:
        _train(tmp_path, hippocampus_dir, resume=True)
    message = "".join(str(e) for e in exception_chain(err.value))
    assert "config id 'resume'" in message and str(tmp_path / "models_state" / "training_state.pt") in message


def test_evaluation_reports_per_case_dice(trained, hippocampus_dir):
    workflow = ConfigWorkflow(
        config_file=EVALUATE, meta_file=META, workflow_type="eval", **quick_overrides(trained, hippocampus_dir)
    )
    workflow.initialize()
    workflow.run()
    metric = workflow.evaluator.state.metrics["val_mean_dice"]
    whole_metric = workflow.evaluator.state.metrics["val_whole_dice"]
    workflow.finalize()
    assert 0.0 <= metric <= 1.0 and 0.0 <= whole_metric <= 1.0
    rows = (trained / "eval" / "val_mean_dice_raw.csv").read_text().strip().splitlines()
    assert rows[0].startswith("filename") and len(rows) == 1 + 4
    whole = (trained / "eval" / "val_whole_dice_raw.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in whole] == [r.split(",")[0] for r in rows]  # same cases, anterior+posterior


@pytest.mark.parametrize("eval_split, cases", [("all", 5), ("validation", 1)])
def test_evaluation_of_new_cases_scores_every_case_with_eval_split_all(
    trained, hippocampus_dir, tmp_path, eval_split, cases
):
    """New labelled cases in their own MSD folder (how the shipped model, trained on every local case, is measured):
    eval_split 'all' scores each of them; the default scores only the validation fold's share."""
    names = [f"hippocampus_{i:03d}" for i in (1, 3, 4, 6, 8)]
    new_cases = msd_subset_folder(tmp_path / "new", hippocampus_dir, names)
    overrides = {
        **quick_overrides(trained, new_cases),
        "output_dir": str(tmp_path / "eval"),
        "data_limit": None,
        "eval_split": eval_split,
    }
    workflow = ConfigWorkflow(config_file=EVALUATE, meta_file=META, workflow_type="eval", **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    rows = (tmp_path / "eval" / "val_mean_dice_raw.csv").read_text().strip().splitlines()[1:]
    scored = [Path(row.split(",")[0]).name for row in rows]
    assert len(scored) == cases and set(scored) <= {f"{n}.nii.gz" for n in names}


def test_evaluation_without_checkpoint_names_the_setting(tmp_path, hippocampus_dir):
    workflow = ConfigWorkflow(
        config_file=EVALUATE, meta_file=META, workflow_type="eval", **quick_overrides(tmp_path, hippocampus_dir)
    )
    with pytest.raises(Exception) as err:
        workflow.initialize()
    assert "ckpt_dir" in "".join(str(e) for e in exception_chain(err.value))


def test_evaluation_into_an_output_dir_that_is_a_file_names_the_setting(trained, hippocampus_dir, tmp_path):
    """MetricsSaver would fail only after every case was evaluated."""
    (tmp_path / "results").write_text("the user's")
    workflow = ConfigWorkflow(
        config_file=EVALUATE,
        meta_file=META,
        workflow_type="eval",
        **{
            **quick_overrides(tmp_path, hippocampus_dir),
            "ckpt_dir": str(trained / "models"),
            "output_dir": str(tmp_path / "results"),
        },
    )
    with pytest.raises(Exception) as err:
        workflow.initialize()
    assert f"output_dir '{tmp_path / 'results'}': '{tmp_path / 'results'}' is a file" in "".join(
        str(e) for e in exception_chain(err.value)
    )
    assert (tmp_path / "results").read_text() == "the user's"


@pytest.mark.parametrize("config, workflow_type", [(EVALUATE, "eval"), (INFER, "infer")])
def test_a_checkpoint_of_another_network_is_named_before_any_case_is_read(
    trained, hippocampus_dir, tmp_path, config, workflow_type
):
    """The model was trained as xunet; evaluating or segmenting with --network_name basicunet stops in initialize,
    saying which network the file fits, instead of failing in the first iteration with a list of every tensor."""
    settings = {
        **quick_overrides(tmp_path, hippocampus_dir),
        "ckpt_dir": str(trained / "models"),
        "network_name": "basicunet",
        "network_options": {**TINY_NET, "basicunet": TINY_NET["xunet"]},
    }
    message = _initialize_error(config, workflow_type, settings, tmp_path, hippocampus_dir)
    assert (
        f"'{trained / 'models' / 'model.pt'}' (config id 'ckpt_dir') does not fit the configured network "
        "'basicunet'" in message
    )
    assert "add --network_name xunet" in message
    assert not (tmp_path / "eval").exists()


def _initialize_error(config: str | list, workflow_type: str, settings: dict, tmp: Path, hippocampus_dir: Path) -> str:
    """The message of the error a workflow's initialize must stop with (inference reads two shared images)."""
    if workflow_type == "infer":
        settings = {**settings, "dataset_dir": str(_two_images(tmp, hippocampus_dir))}
    workflow = ConfigWorkflow(config_file=config, meta_file=META, workflow_type=workflow_type, **settings)
    with pytest.raises(Exception) as err:
        workflow.initialize()
    return "".join(str(e) for e in exception_chain(err.value))


@pytest.mark.parametrize("config, workflow_type", [(TRAIN, "train"), (EVALUATE, "eval"), (INFER, "infer")])
@pytest.mark.parametrize("patch_size", [[16, 16, 16], [32, 48]])
def test_a_patch_size_the_network_cannot_use_stops_before_any_case_is_read(
    trained, hippocampus_dir, tmp_path, config, workflow_type, patch_size
):
    """Training used to cache every case and then fail in its first iteration; inference failed on its first
    image. Now initialize names config id patch_size."""
    settings = {**quick_overrides(tmp_path, hippocampus_dir), "patch_size": patch_size}
    if workflow_type != "train":
        settings["ckpt_dir"] = str(trained / "models")
    message = _initialize_error(config, workflow_type, settings, tmp_path, hippocampus_dir)
    assert "config id 'patch_size'" in message and str(patch_size).replace(" ", "") in message.replace(" ", "")
    assert not (tmp_path / "eval").exists() and not (tmp_path / "models" / "model.pt").exists()


@pytest.mark.parametrize(
    "setting, value, expected",
    [
        ("batch_size", 0, "config id 'batch_size' must be a whole number of 1 or more, got 0"),
        ("samples_per_volume", 0, "config id 'samples_per_volume' must be a whole number of 1 or more, got 0"),
        ("learning_rate", -1, "config id 'learning_rate' must be a number above 0, got -1"),
        ("val_interval", -1, "config id 'val_interval' must be a whole number of 0 or more, got -1"),
        (
            "val_interval",
            81,
            "config id 'val_interval' (81) is more than the run's epochs (config id 'train#trainer#max_epochs', 80)",
        ),
    ],
)
def test_a_setting_that_cannot_train_stops_training_before_any_case_is_read(
    hippocampus_dir, tmp_path, setting, value, expected
):
    """0 patches per volume failed in the crop transform after caching ('list index out of range'); a negative
    learning rate in the optimiser with torch's message, which names no setting; a val_interval above the epochs
    trained the whole run and saved no model (validation saves model.pt and never ran)."""
    settings = {**quick_overrides(tmp_path, hippocampus_dir), setting: value}
    assert expected in _initialize_error(TRAIN, "train", settings, tmp_path, hippocampus_dir)


@pytest.mark.parametrize("config, workflow_type", [(TRAIN, "train"), (EVALUATE, "eval"), (INFER, "infer")])
def test_a_device_or_worker_count_that_cannot_be_is_named_before_the_network_is_built(
    trained, hippocampus_dir, tmp_path, config, workflow_type
):
    settings = {**quick_overrides(tmp_path, hippocampus_dir), "device": "gpu"}
    if workflow_type != "train":
        settings["ckpt_dir"] = str(trained / "models")
    assert "config id 'device' is 'gpu', which is no device" in _initialize_error(
        config, workflow_type, settings, tmp_path / "device", hippocampus_dir
    )
    settings.update(device="cpu", num_workers=-1)
    assert "config id 'num_workers' must be a whole number of 0 or more, got -1" in _initialize_error(
        config, workflow_type, settings, tmp_path / "workers", hippocampus_dir
    )


def _two_images(tmp: Path, hippocampus_dir: Path) -> Path:
    inputs = tmp / "in"
    inputs.mkdir(parents=True)
    for name in ("hippocampus_001.nii.gz", "hippocampus_019.nii.gz"):
        (inputs / name).symlink_to(hippocampus_dir / "imagesTr" / name)
    return inputs


def _assert_predictions_match_inputs(inputs: Path, outputs: Path):
    written = sorted(p.name for p in outputs.glob("*.nii.gz"))
    assert written == sorted(p.name for p in inputs.iterdir())
    for name in written:
        image, pred = nib.load(inputs / name), nib.load(outputs / name)
        assert pred.shape == image.shape
        assert np.allclose(pred.affine, image.affine)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}


def test_inference_writes_niftis_in_the_input_space(trained, hippocampus_dir, tmp_path):
    inputs = _two_images(tmp_path, hippocampus_dir)
    workflow = ConfigWorkflow(
        config_file=INFER,
        meta_file=META,
        workflow_type="infer",
        ckpt_dir=str(trained / "models"),
        dataset_dir=str(inputs),
        output_dir=str(tmp_path / "out"),
        network_options=TINY_NET,
        patch_size=[32, 32, 32],
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    _assert_predictions_match_inputs(inputs, tmp_path / "out")


def test_inference_refuses_to_overwrite_inputs(trained, hippocampus_dir, tmp_path):
    inputs = _two_images(tmp_path, hippocampus_dir)
    workflow = ConfigWorkflow(
        config_file=INFER,
        meta_file=META,
        workflow_type="infer",
        ckpt_dir=str(trained / "models"),
        dataset_dir=str(inputs),
        output_dir=str(inputs),
        network_options=TINY_NET,
    )
    with pytest.raises(Exception) as err:
        workflow.initialize()
    assert "output_dir" in "".join(str(e) for e in exception_chain(err.value))
    assert all(p.is_symlink() for p in inputs.iterdir())  # nothing overwritten


def test_inference_names_an_image_it_cannot_segment_before_writing_anything(trained, hippocampus_dir, tmp_path):
    inputs = _two_images(tmp_path, hippocampus_dir)
    nib.save(nib.Nifti1Image(np.ones((20, 30), dtype=np.float32), np.eye(4)), str(inputs / "slice.nii.gz"))
    workflow = ConfigWorkflow(
        config_file=INFER,
        meta_file=META,
        workflow_type="infer",
        ckpt_dir=str(trained / "models"),
        dataset_dir=str(inputs),
        output_dir=str(tmp_path / "out"),
        network_options=TINY_NET,
    )
    with pytest.raises(Exception) as err:
        workflow.initialize()
    message = "".join(str(e) for e in exception_chain(err.value))
    assert f"'{inputs / 'slice.nii.gz'}': a 2-D image" in message and "hippocampus_001" not in message
    assert not (tmp_path / "out").exists()


def test_shipped_model_runs_from_another_directory(hippocampus_dir, tmp_path):
    """The command-line inference of the README, run from outside the bundle with the shipped weights."""
    inputs = _two_images(tmp_path, hippocampus_dir)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "inferring",
        "--meta_file",
        META,
        "--config_file",
        INFER,
        "--bundle_root",
        str(BUNDLE_ROOT),
        "--dataset_dir",
        str(inputs),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _assert_predictions_match_inputs(inputs, tmp_path / "out")


def test_inference_follows_each_image_orientation_and_spacing(hippocampus_dir, tmp_path):
    """Inference segments in RAS at 1 mm and writes each prediction back on its input's own grid. A copy of a case
    stored in another axis order and direction therefore gets the same segmentation, voxel for voxel, in that
    order; a copy at twice the resolution along one axis gets the segmentation at that resolution."""
    original = nib.load(hippocampus_dir / "imagesTr" / "hippocampus_001.nii.gz")
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(original, inputs / "original.nii.gz")
    # axis order A, L, S: old axis 0 (R) becomes new axis 1, flipped; old axis 1 (A) becomes new axis 0
    reorder = np.array([[1, -1], [0, 1], [2, 1]])
    reoriented = original.as_reoriented(reorder)
    assert nib.aff2axcodes(reoriented.affine) == ("A", "L", "S")
    nib.save(reoriented, inputs / "reoriented.nii.gz")
    # 0.5 mm along A: every voxel twice; new voxel k lies at old voxel coordinate k / 2 - 0.25
    half = np.diag([1.0, 0.5, 1.0, 1.0])
    half[1, 3] = -0.25
    fine = nib.Nifti1Image(np.repeat(np.asanyarray(original.dataobj), 2, axis=1), original.affine @ half)
    nib.save(fine, inputs / "fine.nii.gz")
    workflow = ConfigWorkflow(
        config_file=INFER,
        meta_file=META,
        workflow_type="infer",
        bundle_root=str(BUNDLE_ROOT),
        dataset_dir=str(inputs),
        output_dir=str(tmp_path / "out"),
        device="cpu",
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    _assert_predictions_match_inputs(inputs, tmp_path / "out")
    predicted = {name: nib.load(tmp_path / "out" / f"{name}.nii.gz") for name in ("original", "reoriented", "fine")}
    expected = predicted["original"].as_reoriented(reorder)
    np.testing.assert_array_equal(np.asanyarray(predicted["reoriented"].dataobj), np.asanyarray(expected.dataobj))
    upsampled = np.repeat(np.asanyarray(predicted["original"].dataobj), 2, axis=1)
    fine_prediction = np.asanyarray(predicted["fine"].dataobj)
    for label in (1, 2):  # the 0.25 mm shift of the fine grid moves boundaries a little, no more
        a, b = upsampled == label, fine_prediction == label
        assert a.sum() > 100 and 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9, label


def test_shipped_weights_match_large_files_and_every_config():
    """models/model.pt is the file large_files.yml lists (sha256), and loads with strict=True into the network
    each workflow config builds (train.json, inference.json), so the configs and the weights agree."""
    import hashlib
    import re

    listing = (BUNDLE_ROOT / "large_files.yml").read_text()
    weights = BUNDLE_ROOT / "models" / "model.pt"
    assert 'path: "models/model.pt"' in listing
    recorded = re.search(r'hash_val: "([0-9a-f]{64})"', listing).group(1)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == recorded
    assert weights.stat().st_size <= 25 * 2**20
    state = torch.load(weights, map_location="cpu", weights_only=True)
    for config in (TRAIN, INFER):
        workflow = ConfigWorkflow(
            config_file=config, meta_file=META, workflow_type="infer", bundle_root=str(BUNDLE_ROOT), device="cpu"
        )
        network = workflow.parser.get_parsed_content("network_def", instantiate=True)
        network.load_state_dict(state, strict=True)
