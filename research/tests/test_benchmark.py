"""The benchmark CLI measures and reports correctly (its numbers are speed results, not test targets)."""

import json

import pytest

from conftest import msd_subset_folder
from research import benchmark


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_measure_one_forward_at_the_bundle_setting(precision):
    row = benchmark.measure("xunet_fast", "bundle", "forward", repeats=2, device="cpu", precision=precision)
    assert row["network"] == "xunet_fast" and row["setting"] == "bundle" and row["precision"] == precision
    assert len(row["times_s"]) == 2 and row["median_s"] > 0


def test_table_reports_ratios_to_basicunet():
    rows = []
    for net, forward, train, mem in [
        ("basicunet", 1.0, 2.0, 100.0),
        ("xunet_straightforward", 4.0, 10.0, 300.0),
        ("xunet_fast", 1.5, 3.0, 120.0),
    ]:
        rows.append({"network": net, "setting": "2d", "mode": "forward", "median_s": forward, "peak_mem_mb": 0.0})
        rows.append({"network": net, "setting": "2d", "mode": "train", "median_s": train, "peak_mem_mb": mem})
    bundle = {
        "straightforward float32": {"epoch_s": 100.0, "inference_per_volume_s": 1.0, "volumes": 3, "train_cases": 5},
        "fast float32": {"epoch_s": 50.0, "inference_per_volume_s": 0.4, "volumes": 3, "train_cases": 5},
    }
    meta = {
        "command": "python -m research.benchmark run",
        "device": "CPU",
        "cpu_threads": 2,
        "torch": "x",
        "date": "today",
        "repeats": 3,
        "memory_note": "RSS",
        "precision": "float32",
    }
    text = benchmark._format(rows, bundle, meta)
    assert "| xunet_fast | 1.500 | 1.50 | 3.000 | 1.50 | 120 | 1.20 |" in text
    assert "forward 2.67x faster, forward+backward 3.33x faster" in text
    assert "| fast float32 | 50.0 | 0.400 |" in text and "| straightforward float32 | 100.0 | 1.000 |" in text


def test_a_failed_measurement_is_reported_in_the_table_and_the_others_kept(monkeypatch, tmp_path):
    monkeypatch.setitem(benchmark.SETTINGS, "tiny", TINY)
    monkeypatch.setattr(benchmark, "BUNDLE_ROOT", tmp_path)

    def child(network, setting, mode, repeats, device, precision="float32"):
        if network == "xunet_fast" and mode == "train":
            return {"network": network, "setting": setting, "mode": mode, "error": "InductorError: boom"}
        seconds = {"basicunet": 1.0, "xunet_fast": 1.5, "xunet_straightforward": 4.0}[network]
        return {
            "network": network,
            "setting": setting,
            "mode": mode,
            "median_s": seconds,
            "peak_mem_mb": 10.0,
            "device": "cpu",
        }

    monkeypatch.setattr(benchmark, "_child", child)
    benchmark.run(settings=("tiny",), bundle_epoch=False, out_md="b.md", out_json="b.json")
    text = (tmp_path / "b.md").read_text()
    assert "| xunet_fast | 1.500 | 1.50 | failed | - | - | - |" in text
    assert "| xunet_straightforward | 4.000 | 4.00 | 4.000 | 4.00 | 10 | 1.00 |" in text
    assert "Failed: xunet_fast, forward+backward: `InductorError: boom`." in text
    assert "Fast vs straightforward" not in text  # no ratio from a failed measurement


def test_a_failed_child_reports_the_exception_line_not_the_hints_after_it(monkeypatch):
    stderr = (
        "Traceback (most recent call last):\n  ...\n"
        "torch._inductor.exc.InductorError: TypeError: cannot determine truth value of Relational\n\n"
        "Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace\n"
    )
    monkeypatch.setattr(
        benchmark.subprocess, "run", lambda *a, **k: benchmark.subprocess.CompletedProcess(a, 1, "", stderr)
    )
    row = benchmark._child("xunet_fast_compiled", "bundle", "train", 1, "cpu")
    assert row["error"] == "torch._inductor.exc.InductorError: TypeError: cannot determine truth value of Relational"


def test_multiply_adds_are_counted_without_computing():
    rows = [benchmark.count_macs(net, "bundle") for net in benchmark.NETWORKS]
    by = {r["network"]: r for r in rows}
    for r in rows:  # forward+backward does about twice the forward's work again
        assert 2.5 * r["forward_macs"] < r["train_macs"] < 3.5 * r["forward_macs"]
    # the exact fast path does a fraction of the straightforward path's work, close to BasicUNet's
    assert by["xunet_fast"]["forward_macs"] < 0.5 * by["xunet_straightforward"]["forward_macs"]
    assert by["basicunet"]["forward_macs"] < by["xunet_fast"]["forward_macs"]
    text = benchmark._format_macs(rows)
    assert "| xunet_fast |" in text and "The straightforward path does" in text


def test_profile_writes_one_table_per_network(tmp_path):
    out = tmp_path / "profile.md"
    benchmark.profile(["basicunet", "xunet_fast"], "bundle", rows=5, out=str(out))
    text = out.read_text()
    assert text.count("forward+backward, bundle training patch") == 2
    assert "basicunet forward+backward" in text and "xunet_fast forward+backward" in text
    assert "Self CPU time total" in text


def test_the_bundle_epoch_benchmark_pairs_xunet_with_basicunet_in_each_round(tmp_path, hippocampus_dir):
    """`python -m research.benchmark bundle`: one epoch of train.json per network and round, on a few cases here."""
    cases = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_008"]
    data = msd_subset_folder(tmp_path / "data", hippocampus_dir, cases)
    out_md, out_json = tmp_path / "epoch.md", tmp_path / "epoch.json"
    benchmark.bundle(str(data), rounds=2, repeats_volumes=1, out_md=str(out_md), out_json=str(out_json))
    text = out_md.read_text()
    assert "| BasicUNet float32 |" in text and "| XUNet fast float32 |" in text
    assert "straightforward" not in text  # left out unless asked for: it takes twice as long as the others
    basic_row = next(line for line in text.splitlines() if line.startswith("| BasicUNet float32 |"))
    assert basic_row.count("| 1.00 (1.00-1.00) |") == 2  # BasicUNet against itself, epoch and inference
    rounds = json.loads(out_json.read_text())["rounds"]
    assert len(rounds) == 2
    for timings in rounds:
        assert set(timings) >= {"BasicUNet float32", "XUNet fast float32"}
        assert all(t["epoch_s"] > 0 and t["volumes"] == 1 and t["train_cases"] == 4 for t in timings.values())


TINY = {
    "name": "tiny",
    "description": "tiny 2D",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 2,
    "shape": [1, 1, 32, 32],
    "features": [4, 4, 8, 8, 16, 4],
}


def test_stages_times_every_decoder_stage_of_each_network(monkeypatch, tmp_path):
    monkeypatch.setitem(benchmark.SETTINGS, "tiny", TINY)
    monkeypatch.setattr(benchmark, "BUNDLE_ROOT", tmp_path)
    text = benchmark.stages(settings=("tiny",), repeats=1, rounds=1, out="stages.md")
    rows = [line for line in text.splitlines() if line.startswith("| upcat") or line.startswith("| decoder")]
    assert [row.split(" | ")[0] for row in rows] == ["| upcat_4", "| upcat_3", "| upcat_2", "| upcat_1", "| decoder"]
    assert "[1, 4, 32, 32]" in rows[3]  # upcat_1 outputs features[5] channels at the input size
    assert (tmp_path / "stages.md").read_text() == text + "\n"


def test_paired_alternates_the_networks_and_reports_ratios_per_pair(monkeypatch, tmp_path):
    monkeypatch.setitem(benchmark.SETTINGS, "tiny", TINY)
    monkeypatch.setattr(benchmark, "BUNDLE_ROOT", tmp_path)
    text = benchmark.paired(settings=("tiny",), pairs=3, out_md="paired.md", out_json="paired.json")
    (row,) = [line for line in text.splitlines() if line.startswith(f"| {TINY['description']}")]
    assert len(row.split(" | ")) == 9  # setting, input, features, then 3 cells per mode
    assert (tmp_path / "paired.md").read_text() == text
    (entry,) = json.loads((tmp_path / "paired.json").read_text())["settings"]
    for mode in ("forward", "train"):
        times = entry["times_s"][mode]
        assert len(times["basicunet"]) == len(times["xunet_fast"]) == 3
        ratios = sorted(f / b for f, b in zip(times["xunet_fast"], times["basicunet"]))
        assert entry[mode]["ratio_median"] == pytest.approx(ratios[1])
        low, high = entry[mode]["ratio_quartiles"]
        assert ratios[0] <= low <= ratios[1] <= high <= ratios[2]


def test_paired_compiles_both_networks_and_runs_them_under_autocast_when_asked(monkeypatch, tmp_path):
    monkeypatch.setitem(benchmark.SETTINGS, "tiny", TINY)
    monkeypatch.setattr(benchmark, "BUNDLE_ROOT", tmp_path)
    compiled = []
    monkeypatch.setattr(benchmark.torch, "compile", lambda module: compiled.append(type(module).__name__) or module)
    seen = []
    original = benchmark._alternating_ratios
    monkeypatch.setattr(
        benchmark, "_alternating_ratios", lambda nets, x, pairs: seen.append(nets) or original(nets, x, 2)
    )
    text = benchmark.paired(
        settings=("tiny",), pairs=2, device="cpu", precision="bfloat16", compiled=True, out_md="p.md", out_json="p.json"
    )
    assert sorted(compiled) == ["BasicUNet", "XUNet"]
    assert all(type(net).__name__ == "AutocastForward" for net in seen[0].values())
    assert "bfloat16, both networks compiled" in text
    meta = json.loads((tmp_path / "p.json").read_text())["meta"]
    assert meta["precision"] == "bfloat16" and meta["compiled"] is True


def test_a_compiled_network_is_named_by_its_suffix_and_unknown_names_are_refused():
    assert type(benchmark._build("xunet_fast" + benchmark.COMPILED, TINY)).__name__ == "XUNet"
    with pytest.raises(ValueError, match="'xunet_fats' is none of"):
        benchmark._build("xunet_fats", TINY)
