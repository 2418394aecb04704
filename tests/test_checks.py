"""scripts.checks: settings checked before any work, and nothing of the user's lost."""

import os
import re

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.checks import (
    check_checkpoint,
    check_counts,
    check_device,
    check_images,
    check_patch_size,
    check_schedule,
    keep_existing_checkpoint,
    networks_that_fit,
    read_weights,
    weights_mismatch,
)
from scripts.networks import XUNet, create_network, list_networks
from scripts.outputs import PredictionNames, check_output_dir


def test_nothing_to_keep_in_an_empty_or_missing_folder(tmp_path):
    assert keep_existing_checkpoint(tmp_path / "missing", tmp_path / "missing_state") is None
    assert keep_existing_checkpoint(tmp_path, tmp_path / "state") is None
    assert list(tmp_path.iterdir()) == []


def test_an_existing_model_is_copied_under_its_modification_time_outside_the_models_folder(tmp_path):
    models, state = tmp_path / "models", tmp_path / "models_state"
    models.mkdir()
    model = models / "model.pt"
    model.write_bytes(b"weights")
    os.utime(model, (1_700_000_000, 1_700_000_000))
    kept = keep_existing_checkpoint(models, state)
    assert kept.parent == state and kept.name.startswith("model_2023") and kept.suffix == ".pt"
    assert kept.read_bytes() == b"weights" and model.read_bytes() == b"weights"  # the original stays
    # the same model again (a second run that failed before saving): one copy, not two
    assert keep_existing_checkpoint(models, state) == kept
    assert [p.name for p in state.iterdir()] == [kept.name]
    # MONAI Label offers every models/*.pt as a model: the copy must not be one of them
    assert [p.name for p in models.iterdir()] == ["model.pt"]


def test_a_state_dir_that_cannot_be_a_folder_is_refused_before_training(tmp_path):
    (tmp_path / "a_file").write_text("the user's")
    with pytest.raises(ValueError, match="state_dir .* is a file, not a folder. Pass another --state_dir."):
        keep_existing_checkpoint(tmp_path / "models", tmp_path / "a_file" / "state")


def _nifti(path, data):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4)), str(path))
    return {"image": str(path)}


def _volume(*shape):
    return np.random.default_rng(0).random(shape)


def test_images_the_network_can_segment_pass_unchanged(tmp_path):
    datalist = [
        _nifti(tmp_path / "volume.nii.gz", _volume(9, 10, 11)),
        _nifti(tmp_path / "one_channel.nii.gz", _volume(9, 10, 11, 1)),
        _nifti(tmp_path / "tiny.nii", _volume(2, 3, 2)),
    ]
    assert check_images(datalist) is datalist


def test_every_image_the_network_cannot_segment_is_named_with_its_problem(tmp_path):
    nan = _volume(9, 10, 11)
    nan[0, 0, 0], nan[1, 1, 1] = np.nan, np.inf
    (tmp_path / "corrupt.nii.gz").write_bytes(b"not a nifti")
    datalist = [
        _nifti(tmp_path / "good.nii.gz", _volume(9, 10, 11)),
        _nifti(tmp_path / "flat.nii.gz", _volume(9, 10)),
        _nifti(tmp_path / "slice.nii.gz", _volume(9, 10, 1)),
        _nifti(tmp_path / "two_channels.nii.gz", _volume(9, 10, 11, 2)),
        _nifti(tmp_path / "nan.nii.gz", nan),
        _nifti(tmp_path / "blank.nii.gz", np.full((9, 10, 11), 7.0)),
        {"image": str(tmp_path / "corrupt.nii.gz")},
    ]
    with pytest.raises(ValueError) as err:
        check_images(datalist)
    message = str(err.value)
    assert message.startswith("6 of 7 cases (config id 'dataset_dir')") and "good.nii.gz" not in message
    for name, problem in [
        ("flat.nii.gz", "a 2-D image of shape (9, 10)"),
        ("slice.nii.gz", "shape (9, 10, 1) is a single slice along axis 2"),
        (
            "two_channels.nii.gz",
            "shape (9, 10, 11, 2) holds 2 volumes (channels) where 1 are " "expected (the network's in_channels)",
        ),
        ("nan.nii.gz", "2 voxels are NaN or infinite"),
        ("blank.nii.gz", "every voxel is 7: a blank image holds nothing to segment"),
        ("corrupt.nii.gz", "not a readable NIfTI"),
    ]:
        assert f"{tmp_path / name}': {problem}" in message


def test_a_long_list_of_bad_images_is_cut_short(tmp_path):
    datalist = [_nifti(tmp_path / f"flat{i}.nii.gz", np.ones((4, 4))) for i in range(5)]
    with pytest.raises(ValueError, match=r"flat1.nii.gz.*\n.*\.\.\. and 3 more") as err:
        check_images(datalist, max_listed=2)
    assert "flat2.nii.gz" not in str(err.value)


def test_a_label_map_must_fit_its_image_and_the_listed_labels(tmp_path):
    image = _nifti(tmp_path / "image.nii.gz", _volume(9, 10, 11))["image"]
    labels = {
        "fits": np.zeros((9, 10, 11)),
        "channel": np.zeros((9, 10, 11, 1)),
        "short": np.zeros((9, 10, 10)),
        "unknown": np.pad(np.full((2, 2, 2), 5.0), ((0, 7), (0, 8), (0, 9))),
    }
    datalist = [
        {"image": image, "label": _nifti(tmp_path / f"{name}.nii.gz", data)["image"]} for name, data in labels.items()
    ]
    assert check_images(datalist[:2], label_values=[0, 1, 2]) == datalist[:2]
    with pytest.raises(ValueError) as err:
        check_images(datalist, label_values=[0, 1, 2])
    message = str(err.value)
    assert message.startswith("2 of 4 cases") and "fits.nii.gz" not in message and "channel.nii.gz" not in message
    assert f"short.nii.gz': label map of shape (9, 10, 10) for an image of shape (9, 10, 11) ('{image}')" in message
    assert "unknown.nii.gz': label values [5] are not among the labels [0, 1, 2] of dataset.json" in message
    assert check_images(datalist[3:]) == datalist[3:]  # no labels given: any value passes


def _xunet(features=(4, 4, 8, 8, 16, 4), out_channels=3, spatial_dims=3):
    return XUNet(spatial_dims, 1, out_channels, features=features)


def test_a_checkpoint_that_fits_passes_in_either_layout(tmp_path):
    network = _xunet()
    torch.save(network.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": network.state_dict()}, tmp_path / "wrapped.pt")  # CheckpointSaver's other layout
    for name in ("plain.pt", "wrapped.pt"):
        assert check_checkpoint(tmp_path / name, network, "ckpt_dir", "fix it") == tmp_path / name
    assert sorted(read_weights(tmp_path / "wrapped.pt", "ckpt_dir")) == sorted(network.state_dict())


def test_a_missing_checkpoint_names_the_setting_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="config id 'ckpt_dir'.*train the model first"):
        check_checkpoint(tmp_path / "model.pt", _xunet(), "ckpt_dir", "train the model first")


def test_a_checkpoint_of_another_network_names_the_network_it_fits(tmp_path):
    """The mistake the registry invites: a model trained with --network_name basicunet, evaluated without it."""
    options = {"basicunet": {"features": [4, 4, 8, 8, 16, 4]}, "xunet": {"features": [4, 4, 8, 8, 16, 4]}}
    torch.save(create_network("basicunet", 3, 1, 3, options).state_dict(), tmp_path / "model.pt")
    with pytest.raises(ValueError) as err:
        check_checkpoint(
            tmp_path / "model.pt",
            create_network("xunet", 3, 1, 3, options),
            "ckpt_dir",
            "",
            network_name="xunet",
            in_channels=1,
            out_channels=3,
            network_options=options,
        )
    message = str(err.value)
    assert message.startswith(
        f"'{tmp_path / 'model.pt'}' (config id 'ckpt_dir') does not fit the configured network " "'xunet'"
    )
    assert "differ in shape (e.g. 'upcat_4.convs.conv_0.conv.weight'" in message
    assert "It fits 'basicunet' with this config's network_options: add --network_name basicunet" in message


def test_other_sizes_or_classes_say_what_differs(tmp_path):
    torch.save(_xunet(features=(8, 8, 16, 16, 32, 8)).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(
        ValueError,
        match=r"81 of 82 tensors differ in shape \(e.g. 'conv_0.conv_0.conv.weight' is "
        r"\(8, 1, 3, 3, 3\) in the file, \(4, 1, 3, 3, 3\) in the network\)",
    ):
        check_checkpoint(tmp_path / "wide.pt", _xunet(), "ckpt_dir", "", network_name="xunet", out_channels=3)
    torch.save(_xunet(out_channels=2).state_dict(), tmp_path / "two.pt")
    with pytest.raises(ValueError, match="the file's network has 2 outputs \\(classes\\), the configured one 3"):
        check_checkpoint(tmp_path / "two.pt", _xunet(), "ckpt_dir", "", network_name="xunet", out_channels=3)
    # a 2-D checkpoint for the 3-D network: every kernel differs, the channels do not
    torch.save(_xunet(spatial_dims=2).state_dict(), tmp_path / "flat.pt")
    with pytest.raises(ValueError, match="is \\(4, 1, 3, 3\\) in the file, \\(4, 1, 3, 3, 3\\) in the network"):
        check_checkpoint(tmp_path / "flat.pt", _xunet(), "ckpt_dir", "", network_name="xunet", out_channels=3)


def test_missing_extra_and_ddp_prefixed_tensors_are_counted(tmp_path):
    network = _xunet()
    state = network.state_dict()
    assert weights_mismatch(state, network) is None
    partial = {k: v for k, v in state.items() if not k.startswith("final_conv")}
    assert weights_mismatch({**partial, "head.weight": torch.zeros(1)}, network) == (
        "2 of the network's tensors are not in the file (e.g. 'final_conv.weight'); "
        "1 of the file's tensors are not in the network (e.g. 'head.weight')"
    )
    prefixed = weights_mismatch({f"module.{k}": v for k, v in state.items()}, network)
    assert "save network.module.state_dict() instead" in prefixed


@pytest.mark.parametrize("kind", ["torchscript", "whole_network", "truncated", "not_weights"])
def test_files_that_are_not_weights_say_what_they_are(tmp_path, kind):
    network = _xunet()
    path = tmp_path / "model.pt"
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(network.eval()), path)
        expected = "is a TorchScript export"
    elif kind == "whole_network":
        torch.save(network, path)
        expected = "holds pickled Python objects or code .*, which the bundle refuses to unpickle for safety"
    elif kind == "truncated":
        torch.save(network.state_dict(), tmp_path / "full.pt")
        path.write_bytes((tmp_path / "full.pt").read_bytes()[:5000])
        expected = "is not a file torch.save wrote, or is damaged or cut short"
    else:
        torch.save({"epoch": 3, "lr": 0.1}, path)
        expected = r"holds a dict with the keys \['epoch', 'lr'\], not a network's weights"
    with pytest.raises(ValueError, match=f"'{path}' \\(config id 'ckpt_dir'\\) {expected}"):
        check_checkpoint(path, network, "ckpt_dir", "")


def test_every_network_is_recognised_from_its_weights_in_any_dimension():
    """networks_that_fit builds the candidates in 1-D: names and channel sizes must not depend on the dimension."""
    options = {name: {} for name in list_networks()}
    for name in list_networks():
        state = create_network(name, 2, 1, 3).state_dict()
        fits = networks_that_fit(state, 1, 3, options)
        assert name in fits, name


def test_a_ckpt_dir_that_cannot_be_a_folder_is_refused_before_training(tmp_path):
    (tmp_path / "a_file").write_text("the user's")
    with pytest.raises(
        ValueError,
        match=f"ckpt_dir '{tmp_path / 'a_file' / 'models'}': '{tmp_path / 'a_file'}' is a "
        "file, not a folder. Pass another --ckpt_dir.",
    ):
        keep_existing_checkpoint(tmp_path / "a_file" / "models", tmp_path / "state")
    assert (tmp_path / "a_file").read_text() == "the user's"


def test_an_output_dir_that_cannot_be_a_folder_is_refused_before_anything_is_written(tmp_path):
    image = _nifti(tmp_path / "image.nii.gz", _volume(9, 10, 11))
    (tmp_path / "a_file").write_text("the user's")
    for output_dir in (tmp_path / "a_file", tmp_path / "a_file" / "out"):
        with pytest.raises(ValueError, match=f"output_dir '{output_dir}': '{tmp_path / 'a_file'}' is a file"):
            check_output_dir(output_dir, PredictionNames([image], output_dir))
    with pytest.raises(ValueError, match="holds the dataset's file"):
        check_output_dir(tmp_path, PredictionNames([image], tmp_path))
    out = tmp_path.parent / f"{tmp_path.name}_new" / "out"
    assert check_output_dir(out, PredictionNames([image], out)) == out
    assert not out.parent.exists()
    assert (tmp_path / "a_file").read_text() == "the user's"


@pytest.mark.parametrize(
    "patch_size, problem",
    [
        ([32, 48], "one whole number per spatial axis of the 3-D network"),
        ([32, 48, 32, 32], "one whole number per spatial axis"),
        ([32.5, 48, 32], "one whole number per spatial axis"),
        ("32", "one whole number per spatial axis"),
        ([True, 48, 32], "one whole number per spatial axis"),
        ([0, 48, 32], "sizes of 1 voxel or more"),
        (
            [16, 16, 16],
            "cannot run on an input of that size: ValueError: XUNet with instance norm needs an input larger",
        ),
    ],
)
def test_a_patch_size_the_network_cannot_use_is_named(patch_size, problem):
    network = XUNet(3, 1, 3, features=(4, 4, 4, 4, 4, 4))
    with pytest.raises(ValueError, match="config id 'patch_size'") as err:
        check_patch_size(patch_size, network, spatial_dims=3, in_channels=1)
    assert problem in str(err.value)


def test_a_usable_patch_size_passes_leaving_the_network_and_random_state_as_they_were():
    """The check runs the network once: it must not change its mode or draw random numbers (training after it
    must start exactly as without it), and it runs the module inside a DistributedDataParallel-like wrapper."""
    network = XUNet(2, 1, 3, features=(4, 4, 4, 4, 4, 4), dropout=0.5).train()
    wrapper = torch.nn.Module()
    wrapper.module = network  # DistributedDataParallel keeps the network as .module
    before = torch.get_rng_state()
    weights = {k: v.clone() for k, v in network.state_dict().items()}
    assert check_patch_size((17, 40), wrapper, spatial_dims=2, in_channels=1) == [17, 40]
    assert network.training and torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(v, weights[k]) for k, v in network.state_dict().items())
    network.eval()
    check_patch_size([np.int64(32), 32], network, spatial_dims=2, in_channels=1, setting="roi")
    assert not network.training
    with pytest.raises(
        ValueError,
        match="config id 'roi' must list one whole number per spatial axis of the " r"2-D network \(e.g. \[32, 32\]\)",
    ):
        check_patch_size([32, 32, 32], network, spatial_dims=2, in_channels=1, setting="roi")


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "2", None])
def test_a_count_that_is_not_a_whole_number_of_1_or_more_is_named(value):
    with pytest.raises(
        ValueError,
        match=f"config id 'samples_per_volume' must be a whole number of 1 or more, got " f"{re.escape(repr(value))}",
    ):
        check_counts(batch_size=2, samples_per_volume=value)
    assert check_counts(batch_size=np.int64(2), samples_per_volume=1) == {"batch_size": 2, "samples_per_volume": 1}

    with pytest.raises(ValueError, match="config id 'num_workers' must be a whole number of 0 or more, got -1"):
        check_counts(at_least=0, num_workers=-1)
    assert check_counts(at_least=0, num_workers=0) == {"num_workers": 0}


def test_a_device_that_does_not_exist_here_is_named_with_the_fix(monkeypatch):
    assert check_device("cpu") == torch.device("cpu") == check_device(torch.device("cpu"))
    with pytest.raises(ValueError, match="config id 'device' is 'gpu', which is no device: .*give --device cpu"):
        check_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        ValueError, match="config id 'device' is 'cuda:0', but this PyTorch .* sees no CUDA GPU; " "leave --device out"
    ):
        check_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == torch.device("cuda", 1) and check_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"'cuda:2', but this machine has 2 GPU\(s\), cuda:0 to cuda:1"):
        check_device("cuda:2", setting="device")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"learning_rate": -1}, "config id 'learning_rate' must be a number above 0, got -1"),
        ({"learning_rate": 0}, "config id 'learning_rate' must be a number above 0, got 0"),
        ({"learning_rate": "2e-3"}, "config id 'learning_rate' must be a number above 0, got '2e-3'"),
        ({"weight_decay": -0.1}, "config id 'weight_decay' must be a number of 0 or more, got -0.1"),
        ({"max_epochs": 0}, "config id 'train#trainer#max_epochs' must be a whole number of 1 or more, got 0"),
        ({"warmup_epochs": -1}, "config id 'warmup_epochs' must be a whole number of 0 or more, got -1"),
    ],
)
def test_an_optimiser_setting_that_cannot_train_is_named(settings, message):
    recipe = {"learning_rate": 0.002, "weight_decay": 0.01, "warmup_epochs": 2, "max_epochs": 80}
    with pytest.raises(ValueError, match=re.escape(message)):
        check_schedule(**{**recipe, **settings})


@pytest.mark.parametrize(
    "val_interval, message",
    [
        (-1, "config id 'val_interval' must be a whole number of 0 or more, got -1"),
        (2.5, "config id 'val_interval' must be a whole number of 0 or more, got 2.5"),
        (81, "config id 'val_interval' (81) is more than the run's epochs (config id 'train#trainer#max_epochs', 80)"),
    ],
)
def test_a_val_interval_that_would_save_no_model_is_refused(val_interval, message):
    """model.pt is saved by validation: with an interval above the epochs it never runs and no model is saved."""
    with pytest.raises(ValueError, match=re.escape(message)):
        check_schedule(
            learning_rate=0.002, weight_decay=0.01, warmup_epochs=2, max_epochs=80, val_interval=val_interval
        )


def test_a_val_interval_that_does_not_divide_the_epochs_warns_which_epochs_cannot_be_saved(caplog):
    for val_interval in (0, 1, 10, 80):  # off, or dividing 80: the last epoch is validated
        check_schedule(
            learning_rate=0.002, weight_decay=0.01, warmup_epochs=2, max_epochs=80, val_interval=val_interval
        )
    assert "val_interval" not in caplog.text
    check_schedule(learning_rate=0.002, weight_decay=0.01, warmup_epochs=2, max_epochs=80, val_interval=30)
    assert (
        "config id 'val_interval' (30) does not divide the run's 80 epochs: the last validation is after epoch 60, "
        "so epochs 61 to 80 are trained but never validated"
    ) in caplog.text


def test_a_warm_up_as_long_as_the_run_warns_but_trains(caplog):
    """A trial run of 1 or 2 epochs with the default 2 warm-up epochs is allowed, with a warning."""
    check_schedule(learning_rate=0.002, weight_decay=0.0, warmup_epochs=0, max_epochs=1)
    assert "warmup_epochs" not in caplog.text
    check_schedule(learning_rate=np.float64(0.002), weight_decay=0.01, warmup_epochs=2, max_epochs=2)
    assert "config id 'warmup_epochs' (2) is not fewer than the run's epochs" in caplog.text
