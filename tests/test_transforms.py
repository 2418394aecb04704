"""scripts.transforms: the bundle's preprocessing with the data MONAI Label hands it."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, Invertd, LoadImaged
from monai.transforms import Spacingd as MonaiSpacingd

from conftest import BUNDLE_ROOT
from scripts.transforms import Spacingd


@pytest.fixture
def image_file(tmp_path):
    """A small NIfTI volume of 1.5 mm voxels, so that resampling to 1 mm changes its shape."""
    path = tmp_path / "hippocampus_001.nii.gz"
    data = np.arange(10 * 12 * 8, dtype=np.float32).reshape(10, 12, 8)
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 1.5, 1.0])), str(path))
    return path


def monailabel_data(image_file):
    """What MONAI Label's BundleInferTask passes through the bundle's preprocessing: the loaded image with its
    metadata dictionary (it loads with image_only False) and the file name as the string ``image_path``, which its
    writer reads after inference."""
    loaded = LoadImaged(keys="image", ensure_channel_first=True, image_only=False)({"image": str(image_file)})
    loaded["image_path"] = str(image_file)
    return loaded


def test_monai_spacingd_fails_on_monailabel_data(image_file):
    """The fault of issue #21, reproduced: MONAI's Spacingd calls .update on every image_* entry."""
    with pytest.raises(AttributeError, match="'str' object has no attribute 'update'"):
        MonaiSpacingd(keys="image", pixdim=[1.0, 1.0, 1.0], mode="bilinear")(monailabel_data(image_file))


def test_spacingd_leaves_the_image_path_alone_and_updates_the_metadata(image_file):
    data = monailabel_data(image_file)
    out = Spacingd(keys="image", pixdim=[1.0, 1.0, 1.0], mode="bilinear")(data)
    assert out["image_path"] == str(image_file)
    assert tuple(out["image"].shape) == (1, 14, 18, 12)  # (n - 1) * 1.5 + 1 voxels of 1 mm
    # the metadata dictionary is updated as MONAI's Spacingd does: it now describes the 1 mm image
    assert np.allclose(np.diag(np.asarray(out["image_meta_dict"]["affine"]))[:3], 1.0)
    # the same resampling as MONAI's own, bit for bit
    expected = MonaiSpacingd(keys="image", pixdim=[1.0, 1.0, 1.0], mode="bilinear")(
        {"image": monailabel_data(image_file)["image"]}
    )
    assert torch.equal(out["image"].as_tensor(), expected["image"].as_tensor())


def test_spacingd_is_inverted_by_invertd(image_file):
    """inference.json's postprocessing inverts the preprocessing (Invertd) to write the label in the image's grid."""
    preprocessing = Compose([Spacingd(keys="image", pixdim=[1.0, 1.0, 1.0], mode="bilinear")])
    out = preprocessing(monailabel_data(image_file))
    out["pred"] = out["image"].clone()
    inverted = Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False)(out)
    assert tuple(inverted["pred"].shape) == (1, 10, 12, 8)
    assert inverted["image_path"] == str(image_file)


def test_inference_preprocessing_runs_on_monailabel_data(image_file):
    """inference.json's whole preprocessing, as BundleInferTask instantiates it, on what MONAI Label passes."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE_ROOT / "configs" / "inference.json"))
    parser["bundle_root"] = str(BUNDLE_ROOT)
    transforms = list(parser.get_parsed_content("preprocessing").transforms)
    assert any(isinstance(t, Spacingd) for t in transforms)
    assert not any(type(t) is MonaiSpacingd for t in transforms)
    data = monailabel_data(image_file)
    for transform in transforms[1:]:  # MONAI Label loads the image itself (LoadImageTensord around LoadImaged)
        data = transform(data)
    assert data["image_path"] == str(image_file) and data["image"].dtype == torch.float32
    json.dumps(data["image_path"])  # still the plain string MONAI Label's writer reads
