"""XUNet-specific tests: the original's parameter counts and module names, any input size, and the fast
cross-level path against the straightforward interpolate-and-concatenate one."""

import pytest
import torch

import scripts.networks.xunet as xunet_module
from scripts.networks import BasicUNet, XUNet, create_network

SEED_FEATURES = (64, 64, 128, 256, 512, 64)
TINY = (4, 4, 8, 8, 16, 4)


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_parameter_counts_match_the_seed():
    assert n_params(XUNet(2, 1, 1, features=SEED_FEATURES)) == 11_810_945
    assert n_params(BasicUNet(2, 1, 1, features=SEED_FEATURES)) == 7_903_361


def test_state_dict_names_match_the_original():
    keys = XUNet(2, 1, 1, features=TINY).state_dict().keys()
    top = {k.split(".")[0] for k in keys}
    assert top == {
        "conv_0",
        "down_1",
        "down_2",
        "down_3",
        "down_4",
        "upcat_4",
        "upcat_3",
        "upcat_2",
        "upcat_1",
        "final_conv",
    }
    for stage in ("upcat_4", "upcat_3", "upcat_2", "upcat_1"):
        assert f"{stage}.upsample.deconv.weight" in keys
        assert f"{stage}.convs.conv_0.conv.weight" in keys
        assert f"{stage}.convs.conv_1.conv.weight" in keys
    # the top stage fuses f1 (not halved) + f0..f4 channels
    fused_in = XUNet(2, 1, 1, features=SEED_FEATURES).upcat_1.convs.conv_0.conv.weight.shape[1]
    assert fused_in == 64 + sum(SEED_FEATURES[:5]) == 1088


def test_fast_and_reference_share_a_state_dict():
    fast = XUNet(3, 1, 3, features=TINY)
    ref = XUNet(3, 1, 3, features=TINY, fast=False)
    ref.load_state_dict(fast.state_dict(), strict=True)


@pytest.mark.parametrize(
    "dims,shape",
    [(1, (2, 1, 37)), (2, (2, 2, 33, 47)), (2, (1, 1, 64, 64)), (3, (1, 1, 35, 50, 36)), (3, (1, 1, 16, 17, 1))],
)
def test_output_has_the_input_size(dims, shape):
    net = XUNet(dims, shape[1], 3, features=TINY).eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert out.shape == (shape[0], 3, *shape[2:])


@pytest.mark.parametrize(
    "dims,shape", [(1, (2, 2, 48)), (1, (1, 1, 21)), (2, (2, 1, 33, 47)), (2, (1, 2, 32, 64)), (3, (1, 1, 19, 32, 24))]
)
def test_fast_path_equals_reference_float64(dims, shape):
    torch.manual_seed(0)
    net = XUNet(dims, shape[1], 2, features=TINY, dropout=0.0).double().eval()
    x = torch.randn(shape, dtype=torch.float64)
    fast = net.set_fast(True)(x)
    ref = net.set_fast(False)(x)
    assert torch.allclose(fast, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())


def outputs_and_gradients(net, x, fast):
    """Output and the gradients of the input and of every parameter for a fixed, non-trivial loss."""
    net.set_fast(fast)
    net.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    out = net(x)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (out * weights).sum().backward()
    return out.detach(), [x.grad] + [p.grad for p in net.parameters()]


def max_relative_difference(a, b):
    """max |a - b| / max |b| over a whole set of tensors. Gradients are compared as one set: the biases of
    convolutions followed by instance norm have a zero true gradient, so per-tensor relative errors would be
    ratios of round-off noise."""
    diff = max((x - y).abs().max().item() for x, y in zip(a, b))
    scale = max(y.abs().max().item() for y in b)
    return diff / scale


@pytest.mark.parametrize(
    "dims,shape,dtype,tolerance",
    [
        (1, (2, 1, 64), torch.float32, 1e-5),
        (2, (2, 1, 48, 40), torch.float32, 1e-5),
        (3, (1, 1, 32, 32, 16), torch.float32, 1e-5),
        (1, (2, 1, 37), torch.float64, 1e-10),
        (2, (1, 2, 33, 20), torch.float64, 1e-10),
        (3, (1, 1, 16, 24, 20), torch.float64, 1e-10),
    ],
)
@pytest.mark.parametrize("fold", [True, False], ids=["upsampling-folded", "upsampling-computed"])
def test_fast_path_equals_reference_with_gradients(dims, shape, dtype, tolerance, fold, monkeypatch):
    # every decoder stage folds its upsampling into the fused convolution, or none does
    monkeypatch.setattr(xunet_module, "upsample_folding_pays", lambda x, up_weight, weight: fold)
    torch.manual_seed(1)
    net = XUNet(dims, shape[1], 3, features=(8, 8, 16, 16, 32, 8)).to(dtype).train()
    x = torch.randn(shape, dtype=dtype)
    out_fast, grads_fast = outputs_and_gradients(net, x, fast=True)
    out_ref, grads_ref = outputs_and_gradients(net, x, fast=False)
    assert max_relative_difference([out_fast], [out_ref]) < tolerance
    assert max_relative_difference(grads_fast, grads_ref) < tolerance


STAGES = ("upcat_4", "upcat_3", "upcat_2", "upcat_1")


def kept_kernels(net):
    """Every kernel the stages keep for inference, by stage, input sizes and key."""
    kept = {}
    for name in STAGES:
        state = getattr(net, name)._inference_kernels
        for sizes, store in ({} if state is None else state[1]).items():
            for key, kernel in store.items():
                kept[(name, sizes, key)] = kernel
    return kept


def reference_output(net, x):
    with torch.no_grad():
        out = net.set_fast(False)(x)
    net.set_fast(True)
    return out


@pytest.mark.parametrize("fold", [True, False], ids=["upsampling-folded", "upsampling-computed"])
def test_the_fast_path_compiles_as_one_graph_to_the_reference_values(fold, monkeypatch):
    """torch.compile(fullgraph=True) traces the fast path, training and inference, without a graph break (one made
    inductor recompile with symbolic shapes and fail in training), and the compiled network gives the
    straightforward path's outputs and gradients. Factor-16 and factor-3 parts exercise the middle classes."""
    monkeypatch.setattr(xunet_module, "upsample_folding_pays", lambda x, up_weight, weight: fold)
    torch.manual_seed(2)
    net = XUNet(2, 1, 3, features=(8, 8, 16, 16, 32, 8)).double().train()
    x = torch.randn(2, 1, 48, 40, dtype=torch.float64)
    out_ref, grads_ref = outputs_and_gradients(net, x, fast=False)
    compiled = torch.compile(net.set_fast(True), fullgraph=True, backend="aot_eager")
    net.zero_grad()
    x_grad = x.clone().requires_grad_(True)
    out = compiled(x_grad)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    assert max_relative_difference([out.detach()], [out_ref]) < 1e-10
    assert max_relative_difference([x_grad.grad] + [p.grad for p in net.parameters()], grads_ref) < 1e-10
    net.eval()
    with torch.no_grad():
        assert max_relative_difference([compiled(x)], [reference_output(net, x)]) < 1e-10
    assert kept_kernels(net) == {}  # nothing is kept from inside a compiled graph


@pytest.mark.parametrize("dims,shape", [(2, (2, 1, 33, 47)), (3, (1, 1, 19, 32, 24)), (3, (1, 1, 64, 32, 16))])
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_inference_composes_the_kernels_once(dims, shape, context):
    torch.manual_seed(2)
    net = XUNet(dims, shape[1], 2, features=TINY).double().eval()
    x = torch.randn(shape, dtype=torch.float64)
    with context():
        first = net(x)
    kept = kept_kernels(net)
    assert {name for name, _, _ in kept} == set(STAGES)  # every stage kept its composed kernels
    with context():
        second = net(x)
    again = kept_kernels(net)
    assert again.keys() == kept.keys() and all(again[k] is kept[k] for k in kept)  # reused, not composed anew
    assert torch.equal(first, second)
    ref = reference_output(net, x)
    assert torch.allclose(first, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())


def change_in_place_through_data(net):
    for p in net.parameters():
        p.data.mul_(1.5)  # through .data: no version counter sees it


def load_other_weights(net):
    other = XUNet(2, 1, 2, features=TINY).double()
    net.load_state_dict(other.state_dict())


def optimiser_step(net):
    optimiser = torch.optim.SGD(net.parameters(), lr=0.5)
    net.train()
    net(torch.randn(2, 1, 32, 32, dtype=torch.float64)).square().mean().backward()
    optimiser.step()
    net.eval()


@pytest.mark.parametrize("change", [change_in_place_through_data, load_other_weights, optimiser_step])
def test_inference_after_the_weights_change_uses_the_new_weights(change):
    torch.manual_seed(3)
    net = XUNet(2, 1, 2, features=TINY).double().eval()
    x = torch.randn(1, 1, 48, 40, dtype=torch.float64)
    with torch.no_grad():
        before = net(x)
    change(net)
    with torch.no_grad():
        after = net(x)
    ref = reference_output(net, x)
    assert not torch.allclose(before, ref)
    assert torch.allclose(after, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())


def test_inputs_of_several_sizes_each_get_their_own_kernels():
    torch.manual_seed(4)
    net = XUNet(3, 1, 2, features=TINY).double().eval()
    inputs = [torch.randn(shape, dtype=torch.float64) for shape in [(1, 1, 32, 32, 32), (2, 1, 64, 32, 16)]]
    for x in inputs + inputs:  # a, b, a, b
        with torch.no_grad():
            out = net(x)
        ref = reference_output(net, x)
        assert torch.allclose(out, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())


def fold_choices(net, x):
    """Whether each decoder stage folds its upsampling for input ``x``."""
    with torch.no_grad():
        levels = [net.conv_0(x)]
        for down in (net.down_1, net.down_2, net.down_3, net.down_4):
            levels.append(down(levels[-1]))
        current, choices = levels[4], []
        for name in STAGES:
            stage = getattr(net, name)
            choices.append(
                xunet_module.upsample_folding_pays(
                    current, stage.upsample.deconv.weight, stage.convs.conv_0.conv.weight
                )
            )
            current = stage(current, levels)
    return choices


def test_the_fast_path_choices_depend_on_the_batch_size():
    """With the bundle's network and patch, a stage folds its upsampling for a sliding window's batch of 4 but not
    for a smaller last batch: the kept kernels must tell the two apart (next test)."""
    net = XUNet(3, 1, 3, features=(16, 16, 32, 64, 128, 16)).eval()
    assert fold_choices(net, torch.randn(4, 1, 32, 48, 32)) != fold_choices(net, torch.randn(1, 1, 32, 48, 32))


def test_batch_sizes_that_change_the_fast_path_choices_each_get_their_own_kernels(monkeypatch):
    monkeypatch.setattr(xunet_module, "upsample_folding_pays", lambda x, up_weight, weight: x.shape[0] > 1)
    torch.manual_seed(5)
    net = XUNet(3, 1, 3, features=TINY).double().eval()
    inputs = [torch.randn((batch, 1, 32, 48, 32), dtype=torch.float64) for batch in (2, 1)]
    for x in inputs + inputs:
        with torch.no_grad():
            out = net(x)
        ref = reference_output(net, x)
        assert torch.allclose(out, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())


def test_kernels_kept_under_autocast_are_not_used_without_it():
    torch.manual_seed(6)
    net = XUNet(2, 1, 2, features=TINY).eval()
    x = torch.randn(1, 1, 48, 40)
    ref = reference_output(net, x)
    for _ in range(2):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            low_precision = net(x)
        with torch.no_grad():
            full_precision = net(x)
        assert low_precision.dtype == torch.bfloat16
        assert torch.allclose(low_precision.float(), ref, atol=0.1 * ref.abs().max().item())
        assert torch.allclose(full_precision, ref, atol=1e-5 * ref.abs().max().item())


def test_shapes_are_traced_on_the_meta_device_without_keeping_kernels():
    net = XUNet(2, 1, 2, features=TINY).to("meta").eval()
    with torch.no_grad():
        assert net(torch.empty(1, 1, 48, 40, device="meta")).shape == (1, 2, 48, 40)
    assert kept_kernels(net) == {}


def test_training_keeps_no_kernels_and_copies_start_without_them():
    import copy
    import io

    net = XUNet(2, 1, 2, features=TINY)
    net(torch.randn(2, 1, 32, 32)).sum().backward()  # recording gradients: composed at every call, none kept
    assert kept_kernels(net) == {}
    net.eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        expected = net(x)
    assert kept_kernels(net) != {}
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    for twin in (copy.deepcopy(net), torch.load(buffer, weights_only=False)):
        assert kept_kernels(twin) == {}
        with torch.no_grad():
            assert torch.equal(twin(x), expected)
    scripted = torch.jit.script(net)  # a stage that kept kernels still scripts
    with torch.no_grad():
        assert torch.allclose(scripted(x), expected, atol=1e-6)


@pytest.mark.parametrize("upsample", ["deconv", "nontrainable", "pixelshuffle"])
def test_upsample_modes(upsample):
    net = XUNet(2, 1, 2, features=TINY, upsample=upsample).double().eval()
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    assert torch.allclose(net.set_fast(True)(x), net.set_fast(False)(x), atol=1e-10)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_torchscript(dims):
    net = XUNet(dims, 1, 2, features=TINY).eval()
    scripted = torch.jit.script(net)
    x = torch.randn((1, 1) + (20,) * dims)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)


def test_registry_builds_xunet_by_name():
    net = create_network(
        "XUNet",
        spatial_dims=2,
        in_channels=1,
        out_channels=3,
        network_options={"xunet": {"features": TINY}, "basicunet": {"features": (1,) * 6}},
    )
    assert isinstance(net, XUNet)
    assert net.final_conv.out_channels == 3
    with pytest.raises(KeyError, match="unknown network name 'nope'.*xunet"):
        create_network("nope", 2, 1, 1)
    with pytest.raises(TypeError, match="network_options"):
        create_network("xunet", 2, 1, 1, network_options={"xunet": {"no_such_option": 1}})
    # a value the network refuses names the config id too, keeping the network's reason and error type
    with pytest.raises(ValueError, match="features must have 6 values.*Fix 'network_options' for 'xunet'"):
        create_network("xunet", 2, 1, 1, network_options={"xunet": {"features": [1, 2]}})


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="features must have 6 values"):
        XUNet(2, 1, 1, features=(8, 8, 8))
    with pytest.raises(ValueError, match="spatial_dims"):
        XUNet(4, 1, 1)


@pytest.mark.parametrize("name", ["xunet", "xunet_attn", "xunet_light"])
@pytest.mark.parametrize("shape", [(16,), (16, 16), (9, 16, 3)], ids=["1d", "2d", "3d"])
def test_an_input_too_small_for_instance_norm_is_explained(name, shape):
    """No larger than 16 along every axis: one voxel at the deepest level, which instance norm cannot normalise.
    torch's own message speaks of training even in eval mode; the network says what is wrong and what to do."""
    net = create_network(
        name, spatial_dims=len(shape), in_channels=1, out_channels=2, network_options={name: {"features": TINY}}
    ).eval()
    with pytest.raises(
        ValueError,
        match="larger than 16 voxels along at least one spatial axis.*config id "
        "'patch_size': make one of its sizes 17 or more",
    ):
        net(torch.randn(1, 1, *shape))
    with torch.no_grad():  # one axis of 17 leaves two voxels: fine
        assert net(torch.randn(1, 1, *shape[:-1], 17)).shape == (1, 2, *shape[:-1], 17)


def test_a_small_input_is_fine_with_batch_norm():
    net = XUNet(2, 1, 2, features=TINY, norm="batch").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)


def test_onnx_export_matches_onnxruntime(tmp_path):
    import onnxruntime

    net = XUNet(2, 1, 2, features=TINY).eval()
    x = torch.randn(1, 1, 32, 48)
    path = tmp_path / "xunet.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["image"], output_names=["pred"], dynamo=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = net(x).numpy()
    assert onnx_out.shape == expected.shape
    assert abs(onnx_out - expected).max() <= 1e-4 * abs(expected).max()
