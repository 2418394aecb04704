"""The benchmark CLI measures and reports correctly (its numbers are speed results, not test targets)."""

import pytest

from scripts import benchmark


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_measure_one_forward_at_the_bundle_setting(precision):
    row = benchmark.measure("xunet_fast", "bundle", "forward", repeats=2, device="cpu", precision=precision)
    assert row["network"] == "xunet_fast" and row["setting"] == "bundle" and row["precision"] == precision
    assert len(row["times_s"]) == 2 and row["median_s"] > 0


def test_table_reports_ratios_to_basicunet():
    rows = []
    for net, forward, train, mem in [("basicunet", 1.0, 2.0, 100.0), ("xunet_straightforward", 4.0, 10.0, 300.0),
                                     ("xunet_fast", 1.5, 3.0, 120.0)]:
        rows.append({"network": net, "setting": "2d", "mode": "forward", "median_s": forward, "peak_mem_mb": 0.0})
        rows.append({"network": net, "setting": "2d", "mode": "train", "median_s": train, "peak_mem_mb": mem})
    bundle = {"straightforward float32": {"epoch_s": 100.0, "inference_per_volume_s": 1.0, "volumes": 3,
                                          "train_cases": 5},
              "fast float32": {"epoch_s": 50.0, "inference_per_volume_s": 0.4, "volumes": 3, "train_cases": 5}}
    meta = {"command": "python -m scripts.benchmark run", "device": "CPU", "cpu_threads": 2, "torch": "x",
            "date": "today", "repeats": 3, "memory_note": "RSS", "precision": "float32"}
    text = benchmark._format(rows, bundle, meta)
    assert "| xunet_fast | 1.500 | 1.50 | 3.000 | 1.50 | 120 | 1.20 |" in text
    assert "forward 2.67x faster, forward+backward 3.33x faster" in text
    assert "| fast float32 | 50.0 | 0.400 |" in text and "| straightforward float32 | 100.0 | 1.000 |" in text
