"""The Model Zoo's CI on the bundle proper, laid out as a Zoo pull request adds it: ``models/<name>/`` holding
``configs docs models scripts large_files.yml LICENSE`` without ``models/model.pt`` (the Zoo takes no file over
1 MB), whose weights come from ``large_files.yml``'s url, here served from 127.0.0.1.

The steps follow the Zoo's ``ci/verify_bundle.py`` (min: download the large files, required and preferred files,
version and changelog, metadata against its schema; full: inference properties, ``verify_net_in_out``,
``ckpt_export``), its per-bundle unit test (train and evaluate one epoch on random data with ``check_properties``,
then infer) and its lint settings (``setup.cfg``: flake8 with bugbear, comprehensions and pep8-naming at 120
columns; isort ``profile = black``; ``black --skip-magic-trailing-comma -l 120``).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.apps.utils import HashCheckError
from monai.bundle import (
    ConfigWorkflow,
    ckpt_export,
    create_workflow,
    download_large_files,
    verify_metadata,
    verify_net_in_out,
)

from conftest import BUNDLE_ROOT, SCHEMA

pytestmark = pytest.mark.workflow

BUNDLE_NAME = "xunet_hippocampus"
BUNDLE_PROPER = ("configs", "docs", "models", "scripts", "large_files.yml", "LICENSE")
MAX_BUNDLE_FILES = 40
MAX_CHANGELOG_ENTRY = 150
LARGE_FILES = BUNDLE_ROOT / "large_files.yml"


def tracked_bundle_files() -> list[str]:
    """The files of the bundle proper that git tracks (what a Zoo pull request would copy)."""
    done = subprocess.run(
        ["git", "ls-files", "--", *BUNDLE_PROPER], cwd=BUNDLE_ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def large_file_entry() -> dict:
    text = LARGE_FILES.read_text()
    return {key: re.search(rf'{key}: "([^"]*)"', text).group(1) for key in ("path", "url", "hash_val", "hash_type")}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def weights_server(tmp_path_factory):
    """An HTTP server on 127.0.0.1 holding models/model.pt at the path of large_files.yml's url; yields its
    base address (scheme and host) to put in place of the url's."""
    root = tmp_path_factory.mktemp("release")
    url_path = urlparse(large_file_entry()["url"]).path
    target = root / url_path.lstrip("/")
    target.parent.mkdir(parents=True)
    shutil.copyfile(BUNDLE_ROOT / "models" / "model.pt", target)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def lay_out_pull_request(folder: Path, server: str, hash_val: str | None = None) -> Path:
    """models/<name>/ as a Zoo pull request holds it: the tracked bundle files, model.pt left out, the weights' url
    pointing at ``server`` (same path), and eval/schema.json as the Zoo's ci/prepare_schema.py puts it there."""
    bundle = folder / "models" / BUNDLE_NAME
    for name in tracked_bundle_files():
        if name == "models/model.pt":
            continue
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BUNDLE_ROOT / name, bundle / name)
    entry = large_file_entry()
    local_url = server + urlparse(entry["url"]).path
    text = LARGE_FILES.read_text().replace(entry["url"], local_url)
    if hash_val is not None:
        text = text.replace(entry["hash_val"], hash_val)
    (bundle / "large_files.yml").write_text(text)
    (bundle / "eval").mkdir()
    shutil.copyfile(SCHEMA, bundle / "eval" / "schema.json")
    return bundle


@pytest.fixture(scope="module")
def zoo_bundle(tmp_path_factory, weights_server):
    """The laid-out bundle after the Zoo's first step, the download of its large files."""
    bundle = lay_out_pull_request(tmp_path_factory.mktemp("model-zoo"), weights_server)
    assert not (bundle / "models" / "model.pt").exists()
    download_large_files(bundle_path=str(bundle))
    return bundle


def test_the_bundle_proper_is_what_a_zoo_pull_request_adds():
    files = tracked_bundle_files()
    assert {name.split("/")[0] for name in files} == set(BUNDLE_PROPER)
    assert len(files) <= MAX_BUNDLE_FILES, f"the bundle proper holds {len(files)} files: {files}"
    assert sorted(name for name in files if name.startswith("docs/")) == ["docs/README.md", "docs/data_license.txt"]
    assert len((BUNDLE_ROOT / "docs" / "README.md").read_text().splitlines()) <= 300
    # the bundle runs without the research/ package: no module or workflow config of it reaches research
    for name in files:
        text = (BUNDLE_ROOT / name).read_text() if name.endswith((".py", ".json")) else ""
        if name.endswith(".py"):
            assert not re.search(r"^\s*(from|import) research\b", text, re.MULTILINE), f"{name} imports research"
        elif name.endswith(".json") and name != "configs/metadata.json":
            assert "research" not in text, f"{name} uses research/"


def test_large_files_lists_the_shipped_weights_at_an_https_url():
    entry = large_file_entry()
    weights = BUNDLE_ROOT / "models" / "model.pt"
    assert entry["path"] == "models/model.pt" and entry["hash_type"] == "sha256"
    assert urlparse(entry["url"]).scheme == "https" and entry["url"].endswith("/model.pt")
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == entry["hash_val"]


def test_the_weights_download_from_the_url_with_their_hash_checked(zoo_bundle):
    downloaded = zoo_bundle / "models" / "model.pt"
    assert downloaded.read_bytes() == (BUNDLE_ROOT / "models" / "model.pt").read_bytes()


def test_a_download_whose_hash_differs_is_refused(tmp_path, weights_server):
    bundle = lay_out_pull_request(tmp_path, weights_server, hash_val="0" * 64)
    with pytest.raises(HashCheckError, match="sha256"):
        download_large_files(bundle_path=str(bundle))
    assert not (bundle / "models" / "model.pt").exists()


def test_the_monai_bundle_command_downloads_the_large_files(tmp_path, weights_server):
    bundle = lay_out_pull_request(tmp_path, weights_server)
    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (bundle / "models" / "model.pt").read_bytes() == (BUNDLE_ROOT / "models" / "model.pt").read_bytes()


def test_zoo_min_checks_files_version_changelog_and_metadata(zoo_bundle):
    for name in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert (zoo_bundle / name).is_file(), name
    meta = json.loads((zoo_bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert max(meta["changelog"], key=lambda v: tuple(map(int, v.split(".")))) == meta["version"]
    long_entries = {v: len(e) for v, e in meta["changelog"].items() if len(e) > MAX_CHANGELOG_ENTRY}
    assert not long_entries, f"changelog entries over {MAX_CHANGELOG_ENTRY} characters: {long_entries}"
    verify_metadata(
        meta_file=str(zoo_bundle / "configs" / "metadata.json"), filepath=str(zoo_bundle / "eval" / "schema.json")
    )


def test_zoo_full_checks_properties_shapes_and_torchscript(zoo_bundle, tmp_path):
    meta_file, config = str(zoo_bundle / "configs" / "metadata.json"), str(zoo_bundle / "configs" / "inference.json")
    # the properties are looked up (built) before initialize: the images must exist, as they must for a run
    images = random_msd_task(tmp_path / "data", cases=1) / "imagesTr"
    workflow = create_workflow(
        workflow_type="inference",
        bundle_root=str(zoo_bundle),
        config_file=config,
        meta_file=meta_file,
        logging_file=str(zoo_bundle / "configs" / "logging.conf"),
        dataset_dir=str(images),
    )
    assert workflow.check_properties() in (None, [])
    verify_net_in_out(
        net_id="network_def", meta_file=meta_file, config_file=config, bundle_root=str(zoo_bundle), device="cpu"
    )
    exported = zoo_bundle / "models" / "verify_model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(exported),
        ckpt_file=str(zoo_bundle / "models" / "model.pt"),
        meta_file=meta_file,
        config_file=config,
        bundle_root=str(zoo_bundle),
    )
    scripted = torch.jit.load(str(exported), map_location="cpu").eval()
    network = workflow.parser.get_parsed_content("network_def", instantiate=True).eval()
    network.load_state_dict(torch.load(zoo_bundle / "models" / "model.pt", map_location="cpu", weights_only=True))
    patch = json.loads(Path(config).read_text())["patch_size"]
    image = torch.randn(1, 1, *patch, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scripted(image), network(image), rtol=1e-4, atol=1e-4)


def random_msd_task(folder: Path, cases: int = 6, shape=(40, 56, 40)) -> Path:
    """An MSD-layout task of random images and label maps (0, 1, 2), as the Zoo's unit tests make their data."""
    rng = np.random.default_rng(0)
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    entries = []
    for case in range(cases):
        image = rng.normal(100.0, 20.0, size=shape).astype(np.float32)
        label = rng.integers(0, 3, size=shape).astype(np.uint8)
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "imagesTr" / f"case_{case}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), folder / "labelsTr" / f"case_{case}.nii.gz")
        entries.append({"image": f"./imagesTr/case_{case}.nii.gz", "label": f"./labelsTr/case_{case}.nii.gz"})
    dataset = {
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
        "training": entries,
    }
    (folder / "dataset.json").write_text(json.dumps(dataset))
    return folder


def check_workflow(workflow: ConfigWorkflow) -> None:
    """What the Zoo's unit tests do with each workflow (ci/unit_tests/utils.py: check_workflow)."""
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    workflow.run()
    workflow.finalize()


def test_zoo_unit_test_trains_evaluates_and_infers_on_random_data(zoo_bundle, tmp_path, monkeypatch):
    """The Zoo's per-bundle unit test, run as it runs: from the Zoo's root, bundle_root relative, one epoch."""
    data = random_msd_task(tmp_path / "data")
    zoo_root = zoo_bundle.parents[1]
    monkeypatch.chdir(zoo_root)
    bundle_root = f"models/{BUNDLE_NAME}"
    configs = f"{bundle_root}/configs"
    common = {
        "bundle_root": bundle_root,
        "meta_file": f"{configs}/metadata.json",
        "logging_file": f"{configs}/logging.conf",
        "dataset_dir": str(data),
        "num_workers": 0,
    }
    train = {
        **common,
        "train#trainer#max_epochs": 1,
        "ckpt_dir": str(tmp_path / "trained"),
        "output_dir": str(tmp_path / "eval"),
        "tensorboard_dir": str(tmp_path / "runs"),
    }
    check_workflow(ConfigWorkflow(workflow_type="train", config_file=f"{configs}/train.json", **train))
    assert (tmp_path / "trained" / "model.pt").is_file()
    check_workflow(
        ConfigWorkflow(
            workflow_type="train", config_file=[f"{configs}/train.json", f"{configs}/evaluate.json"], **train
        )
    )
    assert (tmp_path / "eval" / "val_mean_dice_raw.csv").is_file()
    infer = {**common, "dataset_dir": str(data / "imagesTr"), "output_dir": str(tmp_path / "pred")}
    check_workflow(ConfigWorkflow(workflow_type="infer", config_file=f"{configs}/inference.json", **infer))
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 6
    # the bundle wrote nothing into the laid-out bundle but the downloaded weights and the Zoo's schema
    written = {str(p.relative_to(zoo_bundle)) for p in zoo_bundle.rglob("*") if p.is_file()}
    expected = set(tracked_bundle_files()) | {"eval/schema.json", "models/verify_model.ts"}
    assert {name for name in written if "__pycache__" not in name} <= expected


def test_zoo_lint_settings_pass_on_the_bundle(zoo_bundle):
    """Run from the Zoo's root as its runtests.sh --codeformat does: there ``scripts`` is no first-party package
    (the bundle lies under models/), which changes how isort groups absolute imports of it."""
    zoo_root, bundle = zoo_bundle.parents[1], f"models/{BUNDLE_NAME}"
    flake8 = [
        sys.executable,
        "-m",
        "flake8",
        "--select=B,C,E,F,N,P,T4,W,B9",
        "--max-line-length=120",
        "--ignore=E203,E501,E741,W503,W504,C408,N812,B023,B905,B028,B907,C419",
        "--per-file-ignores=__init__.py:F401",
        bundle,
    ]
    isort = [
        sys.executable,
        "-m",
        "isort",
        "--check",
        "--profile=black",
        "--line-length=120",
        "--project=models",
        bundle,
    ]
    black = [sys.executable, "-m", "black", "--check", "--skip-magic-trailing-comma", "--line-length=120", bundle]
    for cmd in (flake8, isort, black):
        done = subprocess.run(cmd, cwd=zoo_root, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{cmd[2]}: {done.stdout[-3000:]}{done.stderr[-3000:]}"


def test_zoo_pre_commit_hooks_find_nothing_to_fix():
    """The Zoo's pre-commit hooks on the bundle's files: JSON as ``pretty-format-json --indent=4 --no-sort-keys``
    writes it, no trailing whitespace, one newline at the end, Python files with their docstring first."""
    for name in tracked_bundle_files():
        path = BUNDLE_ROOT / name
        if name.endswith((".pt", ".ts")):
            continue
        text = path.read_text()
        assert text.endswith("\n") and not text.endswith("\n\n"), f"{name}: end-of-file-fixer"
        assert not any(line != line.rstrip() for line in text.splitlines()), f"{name}: trailing-whitespace"
        if name.endswith(".json"):
            pretty = json.dumps(json.loads(text), indent=4, ensure_ascii=True, separators=(",", ": ")) + "\n"
            assert text == pretty, f"{name}: pretty-format-json would rewrite it"
