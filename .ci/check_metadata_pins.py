"""Check that the versions configs/metadata.json pins install together on each Python the Model Zoo's CI may use.

The Zoo installs ``monai_version``, ``pytorch_version``, ``numpy_version`` and ``required_packages_version`` as
exact pins. This resolves them with pip for each Python version without installing anything:

1. each pin has a wheel (or sdist) for that Python (``pip install --dry-run --no-deps``);
2. every requirement one pinned package has on another pinned package accepts the pinned version;
3. the pins (torch, monai and ignite aside: their CUDA wheels' dependencies cannot be resolved for another
   Python from here) resolve together with everything else the pinned packages require.

Usage: ``python .ci/check_metadata_pins.py [--python 3.10 3.11 3.12]``; exit status 1 names what failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
# torch's own accelerator stack: installed by torch's wheel for its platform, not part of the bundle's pins
TORCH_PLATFORM_PREFIXES = ("nvidia-", "cuda-", "triton")
NEEDS_TORCH = {"torch", "monai", "pytorch-ignite"}


def metadata_pins(meta_file: Path) -> dict[str, str]:
    """The exact versions metadata.json asks the Zoo to install, by canonical package name."""
    meta = json.loads(meta_file.read_text())
    pins = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    pins.update(meta.get("required_packages_version", {}))
    pins.update(meta.get("optional_packages_version", {}))
    return {canonicalize_name(name): version for name, version in pins.items()}


def pip_dry_run(packages: list[str], python: str, no_deps: bool) -> tuple[int, str, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "--python-version",
            python,
            "--only-binary=:all:",
            "--target",
            str(Path(tmp) / "target"),
        ]
        for n in (5, 12, 17, 24, 26, 27, 28, 31, 34, 35):
            cmd += ["--platform", f"manylinux_2_{n}_x86_64"]
        cmd += ["--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64", "--platform", "any"]
        cmd += (["--no-deps"] if no_deps else []) + packages
        done = subprocess.run(cmd, capture_output=True, text=True)
        errors = "\n".join(line for line in done.stderr.splitlines() if line.startswith("ERROR"))
        installs = json.loads(report.read_text())["install"] if done.returncode == 0 else []
    return done.returncode, errors, installs


def check_python(pins: dict[str, str], python: str) -> list[str]:
    """The problems of the pinned set on one Python version (empty when it installs)."""
    problems = []
    pinned = [f"{name}=={version}" for name, version in pins.items()]
    code, errors, installs = pip_dry_run(pinned, python, no_deps=True)
    if code:
        return [f"Python {python}: a pinned version has no distribution for it:\n{errors}"]
    environment = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    others = set()
    for item in installs:
        owner = canonicalize_name(item["metadata"]["name"])
        for text in item["metadata"].get("requires_dist", []):
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            if name in pins:
                if not requirement.specifier.contains(pins[name], prereleases=True):
                    problems.append(
                        f"Python {python}: {owner}=={pins[owner]} requires {text}, "
                        f"but metadata.json pins {name}=={pins[name]}"
                    )
            elif not (owner == "torch" and name.startswith(TORCH_PLATFORM_PREFIXES)):
                others.add(str(requirement).split(";")[0])
    rest = [p for p in pinned if canonicalize_name(p.split("==")[0]) not in NEEDS_TORCH]
    code, errors, _ = pip_dry_run(rest + sorted(others), python, no_deps=False)
    if code:
        problems.append(f"Python {python}: the pins do not resolve with what they require:\n{errors}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", nargs="+", default=["3.10", "3.11", "3.12"])
    parser.add_argument("--meta_file", default=str(BUNDLE_ROOT / "configs" / "metadata.json"))
    args = parser.parse_args()
    pins = metadata_pins(Path(args.meta_file))
    problems = [p for python in args.python for p in check_python(pins, python)]
    for python in args.python:
        status = "FAILED" if any(p.startswith(f"Python {python}:") for p in problems) else "resolves"
        print(f"metadata.json pins on Python {python}: {status}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
