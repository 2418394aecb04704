"""Transforms the configs use beyond MONAI's own."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.transforms import Spacingd as MonaiSpacingd


class Spacingd(MonaiSpacingd):
    """MONAI's ``Spacingd`` that leaves alone the entries named ``<key>_...`` that are not metadata dictionaries.

    After resampling a NIfTI image, MONAI 1.6.1's ``Spacingd`` copies the new metadata into every entry whose name
    starts with ``<key>_`` (meant for ``image_meta_dict``), calling ``.update`` on it. MONAI Label puts the image's
    file name in the data as the string ``image_path`` (its writer needs it after inference), so the stock
    ``Spacingd`` stopped every MONAI Label inference with "'str' object has no attribute 'update'". This one takes
    such entries out for the call and puts them back unchanged; metadata dictionaries are updated as before, and the
    resampling itself (and its inverse, which ``Invertd`` runs) is MONAI's.

    Same arguments as ``monai.transforms.Spacingd``.
    """

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        prefixes = tuple(f"{key}_" for key in self.keys if isinstance(key, str))
        d = dict(data)
        aside = {
            name: d.pop(name)
            for name in list(d)
            if isinstance(name, str) and name.startswith(prefixes) and not isinstance(d[name], dict)
        }
        d = super().__call__(d, lazy=lazy)
        d.update(aside)
        return d
