"""Geometry and intensity checks of NIfTI images: what a header says about where the voxels lie, and whether the voxel
values survive the network's working precision.

The bundle resamples every image to 1 mm in RAS (``Spacingd``, ``Orientationd``) and normalises its intensities in
float32. A header whose spacing is in metres, or zero, or whose axes are parallel, resamples the image to a few voxels
or fails deep in MONAI; an image whose values overflow float32 normalises to NaN or to a constant. Either way the
network then segments nothing, without a word. A label map is used voxel by voxel with its image, so the two must lie
on the same grid: a label whose affine is flipped or shifted against its image's teaches (or scores against) the
wrong voxels. These functions say what is wrong in words a user can act on; :mod:`scripts.checks` runs them.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

# Voxel sizes this model can work with (it was trained at 1 mm): below 0.1 mm or above 10 mm a header is far more
# likely to be in the wrong unit (metres, micrometres) or corrupt than to describe a brain MRI.
SPACING_RANGE_MM = (0.1, 10.0)
# How far an image's and its label map's affines may differ (mm, per entry of the 3 x 4 voxel-to-world matrix): the
# rounding of float32 headers and of conversions between qform and sform, no more.
GEOMETRY_TOLERANCE_MM = 1e-3
# Axes whose directions span less than this fraction of the volume of orthogonal axes are degenerate (parallel).
MIN_AXIS_INDEPENDENCE = 1e-3
# float32, the working precision: squares and sums of values beyond about 1e19 overflow it (torch's reductions
# accumulate in double, other steps may not); 1e18 is far beyond any scanner's range. A range narrower than this many
# float32 steps of the values' magnitude is rounded to a few grey levels.
FLOAT32 = np.finfo(np.float32)
MAX_ABS_INTENSITY = 1e18
MIN_GREY_LEVELS = 16


def spacing_of(affine: np.ndarray, spatial_dims: int = 3) -> np.ndarray:
    """The voxel size along each spatial axis (mm): the length of each column of the affine's rotation-scale part."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:spatial_dims, :spatial_dims] ** 2).sum(axis=0))


def _numbers(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def header_problem(image: nib.spatialimages.SpatialImage, spatial_dims: int = 3) -> str | None:
    """Why the header of ``image`` does not describe a plausible scan for this model (None when it does).

    Checked: the voxel-to-world affine is finite, its axes are independent (not parallel: a direction matrix of
    rank below 3 cannot be resampled), and every voxel size lies in :data:`SPACING_RANGE_MM`.
    """
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        return (
            "its header's voxel-to-world affine holds NaN or infinite values (pixdim, qform or sform): the image "
            "cannot be placed in space. Rewrite the header (e.g. nibabel: set_qform/set_sform) from the scan"
        )
    spacing = spacing_of(affine, spatial_dims)
    low, high = SPACING_RANGE_MM
    if not ((spacing >= low) & (spacing <= high)).all():
        unit = image.header.get_xyzt_units()[0] if hasattr(image.header, "get_xyzt_units") else None
        hint = f" (the header's unit is '{unit}')" if unit and unit != "mm" else ""
        return (
            f"voxel size {_numbers(spacing)} mm{hint} is outside {low:g} to {high:g} mm, which this model (trained "
            "at 1 mm) cannot segment: resampled to 1 mm it would hold too few or too many voxels. Check the "
            "header's pixdim and its unit (mm, not m or um)"
        )
    rotation = affine[:spatial_dims, :spatial_dims] / spacing
    independence = abs(np.linalg.det(rotation))
    if independence < MIN_AXIS_INDEPENDENCE:
        return (
            f"its header's axes are (nearly) parallel (direction matrix determinant {independence:.3g}): the "
            "orientation is corrupt. Rewrite the header's qform/sform from the scan"
        )
    return None


def intensity_problem(data: np.ndarray) -> str | None:
    """Why ``data``'s finite values do not survive the network's float32 normalisation (None when they do): values so
    large that float32 overflows (to infinity, or when squared for the standard deviation), or a range so narrow
    against the values' magnitude that float32 rounds the image to a handful of grey levels."""
    if data.size == 0 or not np.issubdtype(data.dtype, np.number):
        return None
    low, high = float(np.min(data)), float(np.max(data))
    largest = max(abs(low), abs(high))
    if largest > MAX_ABS_INTENSITY:
        return (
            f"intensities from {low:.6g} to {high:.6g} overflow the float32 the network computes in: beyond "
            f"{MAX_ABS_INTENSITY:.0e}, far outside any scanner's range, their squares and sums pass float32's "
            "largest number (3.4e38) in normalisation and resampling. Rescale the image to a usual range"
        )
    if high > low and (high - low) < MIN_GREY_LEVELS * float(FLOAT32.eps) * largest:
        return (
            f"intensities from {low:.10g} to {high:.10g} differ by less than float32 can tell apart at that "
            "magnitude: in the network's float32 the image is (nearly) blank. Subtract the offset "
            f"(e.g. {low:.6g}) before saving"
        )
    return None


def geometry_difference(
    image: nib.spatialimages.SpatialImage,
    label: nib.spatialimages.SpatialImage,
    spatial_dims: int = 3,
    tolerance_mm: float = GEOMETRY_TOLERANCE_MM,
) -> str | None:
    """How ``label``'s voxel grid differs from ``image``'s (None when they match within ``tolerance_mm``): shape,
    voxel size, axis directions (orientation codes), origin."""
    differences = []
    image_shape, label_shape = tuple(image.shape[:spatial_dims]), tuple(label.shape[:spatial_dims])
    if image_shape != label_shape:
        differences.append(f"shape {label_shape} against the image's {image_shape}")
    a, b = np.asarray(image.affine, dtype=np.float64), np.asarray(label.affine, dtype=np.float64)
    if not np.isfinite(b).all():
        return "its header's affine holds NaN or infinite values"
    if np.abs(a[:3, :4] - b[:3, :4]).max() <= tolerance_mm and not differences:
        return None
    image_spacing, label_spacing = spacing_of(a, spatial_dims), spacing_of(b, spatial_dims)
    if np.abs(image_spacing - label_spacing).max() > tolerance_mm:
        differences.append(f"voxel size {_numbers(label_spacing)} mm against the image's {_numbers(image_spacing)} mm")
    image_codes, label_codes = nib.aff2axcodes(a), nib.aff2axcodes(b)
    if image_codes != label_codes:
        differences.append(
            f"orientation {''.join(map(str, label_codes))} against the image's "
            f"{''.join(map(str, image_codes))} (an axis flipped or swapped)"
        )
    elif (
        np.abs(a[:3, :3] / np.maximum(image_spacing, 1e-12) - b[:3, :3] / np.maximum(label_spacing, 1e-12)).max()
        > tolerance_mm
    ):
        differences.append("axis directions rotated against the image's")
    shift = b[:3, 3] - a[:3, 3]
    if np.abs(shift).max() > tolerance_mm:
        differences.append(f"origin {_numbers(b[:3, 3])} mm, shifted by {_numbers(shift)} mm from the image's")
    return "; ".join(differences) or f"affine differs by up to {np.abs(a - b).max():.3g} mm"
