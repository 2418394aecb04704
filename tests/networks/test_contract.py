"""The contract's own fallback: a network flagged ``supports_torchscript = False`` is checked with torch.export.

Every registered network scripts today, so this runs the export path on a small one to keep it working."""

from .network_contract import NetworkContract


class TestExportFallback(NetworkContract):
    name = "resunet"
    options = {"features": (4, 8, 16, 32)}
    supports_torchscript = False
    torchscript_reason = "not a real limitation: exercises the contract's torch.export path"
    # only the export check; the rest of the contract runs in test_resunet.py
    test_registered = None
    test_output_shape = None
    test_odd_input_sizes = None
    test_backward_reaches_all_parameters = None
    test_parameter_count_is_deterministic = None
