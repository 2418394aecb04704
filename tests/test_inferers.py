"""scripts.inferers.FlipAveragingInferer: the flip averaging of evaluate.json and inference.json (config id tta_axes)."""

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer

from scripts.inferers import FlipAveragingInferer


def _network():
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 3, 3, padding=1).eval()


def test_the_output_is_the_mean_of_the_views_each_flipped_back():
    network, x = _network(), torch.randn(1, 1, 6, 7, 8)
    with torch.no_grad():
        averaged = FlipAveragingInferer(SimpleInferer(), spatial_axes=[0, 2])(x, network)
        views = [network(x), network(x.flip(2)).flip(2), network(x.flip(4)).flip(4)]
    assert torch.allclose(averaged, sum(views) / 3, atol=1e-6)
    assert not torch.allclose(averaged, views[0], atol=1e-3)  # the flips did change something


def test_no_axes_is_the_wrapped_inferer_and_a_sliding_window_is_wrapped_alike():
    network, x = _network(), torch.randn(1, 1, 20, 24, 20)
    window = SlidingWindowInferer(roi_size=(16, 16, 16), overlap=0.25)
    with torch.no_grad():
        assert torch.equal(FlipAveragingInferer(window, spatial_axes=[])(x, network), window(x, network))
        expected = (window(x, network) + window(x.flip(2), network).flip(2)) / 2
        assert torch.allclose(FlipAveragingInferer(window, spatial_axes=[0])(x, network), expected, atol=1e-6)


def test_axes_the_images_do_not_have_name_the_setting():
    with pytest.raises(ValueError, match="config id 'tta_axes'.*from 0, got \\[-1\\]"):
        FlipAveragingInferer(SimpleInferer(), spatial_axes=[-1])
    inferer = FlipAveragingInferer(SimpleInferer(), spatial_axes=[3])
    with pytest.raises(ValueError, match="is \\[3\\], but the images have 3 spatial axes \\(0 to 2\\)"):
        inferer(torch.zeros(1, 1, 4, 4, 4), _network())


def test_one_axis_given_as_a_number_is_that_axis():
    """--tta_axes 0 on the command line arrives as the int 0 (it failed with "'int' object is not iterable")."""
    network, x = _network(), torch.randn(1, 1, 6, 7, 8)
    with torch.no_grad():
        assert torch.equal(
            FlipAveragingInferer(SimpleInferer(), spatial_axes=0)(x, network),
            FlipAveragingInferer(SimpleInferer(), spatial_axes=[0])(x, network),
        )
