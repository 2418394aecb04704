"""XUNet MONAI bundle: networks (``scripts.networks``) and the bundle's helpers."""
