"""Speed and memory of XUNet's fast cross-level path against the straightforward one and MONAI's BasicUNet.

    python -m research.benchmark run                       # all settings, writes research/results/benchmarks.{md,json}
    python -m research.benchmark run --settings "['2d']" --repeats 2 --bundle_epoch False   # quicker
    python -m research.benchmark macs                      # multiply-adds per pass, research/results/benchmarks_macs.{md,json}
    python -m research.benchmark bundle --rounds 3         # the bundle's epoch and inference, XUNet vs BasicUNet,
                                                          # research/results/benchmarks_bundle_epoch.{md,json}
    python -m research.benchmark stages                    # milliseconds per decoder stage, where XUNet's cost sits
    python -m research.benchmark paired                    # XUNet / BasicUNet with passes alternating in one process

Each measurement runs in a fresh child process (so peak memory is its own): a warm-up pass, then
``repeats`` timed passes; the median is reported. Peak memory is the CUDA allocator's peak on a GPU and, on
the CPU, the growth of the process's peak resident memory over its size after building the model and the
input (``ru_maxrss``), so it counts activations, gradients and workspace.
"""

from __future__ import annotations

import json
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire
import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
SEED_FEATURES = (64, 64, 128, 256, 512, 64)
DEFAULT_FEATURES = (32, 32, 64, 128, 256, 32)


def _bundle_setting() -> dict:
    config = json.loads((BUNDLE_ROOT / "configs" / "train.json").read_text())
    return {
        "name": "bundle",
        "description": "bundle training patch and batch (configs/train.json)",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": config["num_classes"],
        "shape": [config["batch_size"] * config["samples_per_volume"], 1, *config["patch_size"]],
        "features": config["network_options"]["xunet"]["features"],
    }


SETTINGS = {
    "2d": {
        "name": "2d",
        "description": "2D 256x256, batch 4, seed features",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "shape": [4, 1, 256, 256],
        "features": list(SEED_FEATURES),
    },
    "2d128": {
        "name": "2d128",
        "description": "2D 128x128, batch 2, seed features",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "shape": [2, 1, 128, 128],
        "features": list(SEED_FEATURES),
    },
    "lgg": {
        "name": "lgg",
        "description": "LGG CPU study: 2D 128x128 slices, batch 16, features (8, 8, 16, 32, 64, 8)",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 2,
        "shape": [16, 1, 128, 128],
        "features": [8, 8, 16, 32, 64, 8],
    },
    "lgg256": {
        "name": "lgg256",
        "description": "LGG overlay as configured: 2D 256x256 slices, batch 16, features (16, 16, 32, 64, 128, 16)",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 2,
        "shape": [16, 1, 256, 256],
        "features": [16, 16, 32, 64, 128, 16],
    },
    "3d": {
        "name": "3d",
        "description": "3D 96^3, batch 1, default features",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 3,
        "shape": [1, 1, 96, 96, 96],
        "features": list(DEFAULT_FEATURES),
    },
}
NETWORKS = ("basicunet", "xunet_straightforward", "xunet_fast")
COMPILED = "_compiled"  # a network name with this suffix is timed through torch.compile (default mode)


def _setting(name: str) -> dict:
    """One of :data:`SETTINGS`, or the bundle's own training patch and batch for ``"bundle"``."""
    return _bundle_setting() if name == "bundle" else SETTINGS[name]


def _build(network: str, setting: dict) -> torch.nn.Module:
    from scripts.networks import BasicUNet, XUNet

    args = dict(
        spatial_dims=setting["spatial_dims"],
        in_channels=setting["in_channels"],
        out_channels=setting["out_channels"],
        features=tuple(setting["features"]),
    )
    name = network.removesuffix(COMPILED)
    if name not in NETWORKS:
        raise ValueError(f"network '{network}' is none of {list(NETWORKS)} (optionally with '{COMPILED}').")
    if name == "basicunet":
        return BasicUNet(**args)
    return XUNet(**args, fast=(name == "xunet_fast"))


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _device(device: str) -> torch.device:
    """``"auto"``: the GPU where CUDA is available, else the CPU; anything else as given (``"cuda:1"``)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} ({torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    network: str, setting: str, mode: str, repeats: int = 3, device: str = "auto", precision: str = "float32"
) -> dict:
    """One measurement (used by :func:`run` in a child process): ``mode`` is "forward" or "train";
    ``precision`` is the bundle's setting of that name (``float32`` or ``bfloat16`` autocast)."""
    from scripts.precision import with_autocast

    dev = _device(device)
    cfg = _setting(setting)
    torch.manual_seed(0)
    model = _build(network, cfg).to(dev)
    net = with_autocast(torch.compile(model) if network.endswith(COMPILED) else model, precision)
    x = torch.randn(cfg["shape"], device=dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)

    def step():
        if mode == "forward":
            net.eval()
            with torch.no_grad():
                net(x)
        else:
            net.train()
            optimizer.zero_grad(set_to_none=True)
            net(x).float().mean().backward()
            optimizer.step()

    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else _peak_bytes(dev)
    step()  # warm-up (also the peak-memory pass)
    _sync(dev)
    peak = _peak_bytes(dev) - base
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _sync(dev)
        times.append(time.perf_counter() - start)
    return {
        "network": network,
        "setting": setting,
        "mode": mode,
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_mem_mb": peak / 2**20,
        "device": str(dev),
        "precision": precision,
    }


def _child(network: str, setting: str, mode: str, repeats: int, device: str, precision: str = "float32") -> dict:
    cmd = [
        sys.executable,
        "-m",
        "research.benchmark",
        "measure",
        network,
        setting,
        mode,
        f"--repeats={repeats}",
        f"--device={device}",
        f"--precision={precision}",
    ]
    out = subprocess.run(cmd, cwd=BUNDLE_ROOT, capture_output=True, text=True)
    if out.returncode != 0:  # one failing measurement (e.g. a compiler error) is reported, not fatal to the rest
        lines = [line.strip() for line in out.stderr.strip().splitlines() if line.strip()]
        # the exception's own line, not the hints some libraries print after it
        errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
        error = (errors or lines or [f"exit status {out.returncode}"])[-1]
        return {"network": network, "setting": setting, "mode": mode, "error": error}
    return json.loads(out.stdout.strip().splitlines()[-1])


def bundle_timings(dataset_dir: str, repeats_volumes: int = 10, straightforward: bool = True) -> dict:
    """The bundle's training epoch time and per-volume sliding-window inference time: MONAI's BasicUNet (the same
    features, in XUNet's place), straightforward and fast XUNet in float32, and fast XUNet at the training config's
    default ``precision`` where that is bfloat16.

    One epoch of ``configs/train.json`` (validation off) on the data at ``dataset_dir``, and inference of
    ``repeats_volumes`` validation volumes with the bundle's SlidingWindowInferer. The epoch includes what the
    networks share (loading the cached cases, augmentation, the optimiser), so its ratio to BasicUNet's is what a
    user of the bundle pays for XUNet. ``straightforward=False`` leaves out the slow reference path.
    """
    from monai.bundle import ConfigParser, ConfigWorkflow

    from scripts.precision import fast_precision

    device = _device("auto")
    features = ConfigParser.load_config_file(BUNDLE_ROOT / "configs" / "train.json")["network_options"]["xunet"]
    basicunet = {"network_name": "basicunet", "network_options": {"basicunet": dict(features)}}
    # (row name, config overrides, fast XUNet path or None for a network without one, precision)
    variants = [
        ("BasicUNet float32", basicunet, None, "float32"),
        *([("XUNet straightforward float32", {}, False, "float32")] if straightforward else []),
        ("XUNet fast float32", {}, True, "float32"),
    ]
    if fast_precision(device) != "float32":
        variants.append((f"XUNet fast {fast_precision(device)}", {}, True, fast_precision(device)))
    results = {}
    work_dir = tempfile.TemporaryDirectory(prefix="xunet_benchmark_")  # the epoch's weights and logs, thrown away
    for index, (name, network_overrides, fast, precision) in enumerate(variants):
        overrides = {
            "dataset_dir": dataset_dir,
            "bundle_root": str(BUNDLE_ROOT),
            "ckpt_dir": f"{work_dir.name}/{index}/models",
            "tensorboard_dir": f"{work_dir.name}/{index}/runs",
            "val_interval": 0,
            "download": False,
            "train#trainer#max_epochs": 1,
            "precision": precision,
            **network_overrides,
        }
        workflow = ConfigWorkflow(
            config_file=str(BUNDLE_ROOT / "configs" / "train.json"),
            meta_file=str(BUNDLE_ROOT / "configs" / "metadata.json"),
            workflow_type="train",
            **overrides,
        )
        workflow.initialize()
        network = workflow.parser.get_parsed_content("network")
        if fast is not None:
            network.set_fast(fast)
        start = time.perf_counter()
        workflow.run()
        _sync(device)
        epoch_s = time.perf_counter() - start
        network.eval()
        engine_network = workflow.parser.get_parsed_content("engine_network")
        inferer = workflow.parser.get_parsed_content("validate#inferer")
        dataset = workflow.parser.get_parsed_content("validate#dataset")
        per_volume = []
        with torch.no_grad():
            for i in range(min(repeats_volumes, len(dataset))):
                image = dataset[i]["image"][None].to(workflow.parser.get_parsed_content("device"))
                _sync(image.device)
                start = time.perf_counter()
                inferer(image, engine_network)
                _sync(image.device)
                per_volume.append(time.perf_counter() - start)
        workflow.finalize()
        results[name] = {
            "epoch_s": epoch_s,
            "inference_per_volume_s": statistics.median(per_volume),
            "volumes": len(per_volume),
            "train_cases": len(workflow.parser.get_parsed_content("train#dataset")),
        }
    work_dir.cleanup()
    return results


def _by_round(rows: list[dict], setting: str) -> dict:
    """``{(network, mode): {round: row}}`` for one setting (rows without a round are round 0)."""
    by: dict = {}
    for r in rows:
        if r["setting"] == setting:
            by.setdefault((r["network"], r["mode"]), {})[r.get("round", 0)] = r
    return by


def _error(runs: dict) -> str | None:
    """The error of the first failed round in ``runs``, or None."""
    return next((r["error"] for r in runs.values() if "error" in r), None)


def _median(runs: dict, key: str) -> float:
    return statistics.median(r[key] for r in runs.values())


def _spread(values: list[float], digits: int = 2) -> str:
    """The median of ``values``, with their range when there are several: ``"1.23 (1.22-1.52)"``."""
    text = f"{statistics.median(values):.{digits}f}"
    return text if len(values) == 1 else f"{text} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _ratio(runs: dict, base: dict, key: str) -> str:
    """Median over rounds of the ratio measured within each round (paired, so drift of the machine between
    rounds cancels), with the range over rounds when there are several."""
    return _spread([runs[k][key] / max(base[k][key], 1e-9) for k in runs if k in base])


def _format(rows: list[dict], bundle: dict | None, meta: dict) -> str:
    lines = [
        "# XUNet benchmarks",
        "",
        f"Produced by `{meta['command']}` on {meta['device']} ({meta['cpu_threads']} threads), "
        f"torch {meta['torch']}, {meta['date']}, {meta.get('precision', 'float32')}. "
        f"Median of {meta['repeats']} timed runs after one warm-up; "
        f"each measurement in a fresh process; {meta.get('rounds', 1)} round(s), the networks taking turns in "
        "each. Ratios are to MONAI BasicUNet at the same setting, measured within a round; with several rounds, "
        "the median ratio and its range over rounds. "
        f"Peak memory: {meta['memory_note']}",
        "",
    ]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        cfg = _setting(setting)
        lines += [
            f"## {cfg['description']}: input {cfg['shape']}, features {list(cfg['features'])}",
            "",
            "| network | forward s | x BasicUNet | forward+backward s | x BasicUNet | train peak MB | x BasicUNet |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        by = _by_round(rows, setting)
        errors = []
        for net in dict.fromkeys(r["network"] for r in rows if r["setting"] == setting):
            if (net, "forward") not in by or (net, "train") not in by:
                continue
            f, t = by[(net, "forward")], by[(net, "train")]
            bf, bt = by[("basicunet", "forward")], by[("basicunet", "train")]
            cells = []
            for mode, runs, base in (("forward", f, bf), ("forward+backward", t, bt)):
                error = _error(runs)
                if error:
                    errors.append(f"{net}, {mode}: `{error}`")
                    cells.append("failed | - | - | - |" if mode == "forward+backward" else "failed | - | ")
                else:
                    cells.append(f"{_median(runs, 'median_s'):.3f} | {_ratio(runs, base, 'median_s')} | ")
                    if mode == "forward+backward":
                        cells.append(f"{_median(runs, 'peak_mem_mb'):.0f} | {_ratio(runs, base, 'peak_mem_mb')} |")
            lines.append(f"| {net} | " + "".join(cells))
        if errors:
            lines += ["", "Failed: " + "; ".join(errors) + "."]
        fast_and_slow = [
            by.get((n, m), {}) for n in ("xunet_straightforward", "xunet_fast") for m in ("forward", "train")
        ]
        if all(runs and not _error(runs) for runs in fast_and_slow):
            slow, fast = by[("xunet_straightforward", "train")], by[("xunet_fast", "train")]
            slow_f, fast_f = by[("xunet_straightforward", "forward")], by[("xunet_fast", "forward")]
            lines += [
                "",
                f"Fast vs straightforward XUNet: forward {_ratio(slow_f, fast_f, 'median_s')}x "
                f"faster, forward+backward {_ratio(slow, fast, 'median_s')}x faster.",
            ]
        lines.append("")
    if bundle:
        lines += [
            "## The bundle (configs/train.json on MSD Task04 Hippocampus)",
            "",
            "| network, path, precision | training epoch s | inference per volume s |",
            "|---|---:|---:|",
        ]
        lines += [f"| {name} | {b['epoch_s']:.1f} | {b['inference_per_volume_s']:.3f} |" for name, b in bundle.items()]
        last = list(bundle.values())[-1]
        lines += [
            "",
            f"One epoch = {last['train_cases']} training cases; inference = median over {last['volumes']} "
            "validation volumes with the bundle's SlidingWindowInferer. The training config's default "
            "precision is the last row's.",
            "",
        ]
    return "\n".join(lines)


def run(
    settings=("2d", "3d", "bundle"),
    repeats: int = 3,
    device: str = "auto",
    bundle_epoch: bool = True,
    dataset_dir: str | None = None,
    out_md: str = "research/results/benchmarks.md",
    out_json: str = "research/results/benchmarks.json",
    precision: str = "float32",
    rounds: int = 1,
    networks=NETWORKS,
):
    """Measure every network at every setting, print the table and write ``out_md`` and ``out_json``.

    ``precision="bfloat16"`` times every network under bfloat16 autocast instead of float32. ``rounds`` > 1
    repeats everything with the networks taking turns, so a machine whose speed drifts (shared CPUs) affects
    them alike; ratios are then paired within each round. ``networks`` limits the networks measured
    (BasicUNet, the reference, is always included)."""
    networks = ("basicunet",) + tuple(n for n in networks if n != "basicunet")
    rows = []
    for round_index in range(rounds):
        for setting in settings:
            for network in networks:
                for mode in ("forward", "train"):
                    row = _child(network, setting, mode, repeats, device, precision)
                    row["round"] = round_index
                    result = (
                        f"failed: {row['error']}"
                        if "error" in row
                        else f"{row['median_s']:8.3f} s  {row['peak_mem_mb']:8.0f} MB"
                    )
                    print(f"{round_index} {setting:7s} {network:22s} {mode:8s} {result}", flush=True)
                    rows.append(row)
    bundle = None
    if bundle_epoch:
        data = dataset_dir or str(BUNDLE_ROOT.parent / "shared" / "data" / "Task04_Hippocampus")
        bundle = bundle_timings(data)
    measured_on = next((r["device"] for r in rows if "device" in r), "cpu")
    meta = {
        "command": "python -m research.benchmark run " + " ".join(sys.argv[2:]),
        "device": (measured_on if measured_on != "cpu" else f"CPU ({platform.processor() or platform.machine()})"),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repeats": repeats,
        "precision": precision,
        "rounds": rounds,
        "date": time.strftime("%Y-%m-%d"),
        "memory_note": (
            "CUDA max_memory_allocated"
            if measured_on.startswith("cuda")
            else "growth of peak RSS over the process size after building model and input (CPU)"
        ),
    }
    text = _format(rows, bundle, meta)
    print(text)
    Path(BUNDLE_ROOT / out_md).write_text(text + "\n")
    Path(BUNDLE_ROOT / out_json).write_text(json.dumps({"meta": meta, "rows": rows, "bundle": bundle}, indent=1) + "\n")
    return None


def count_macs(network: str, setting: str) -> dict:
    """Multiply-adds of one forward and one forward+backward pass, counted by ``torch.utils.flop_counter`` on the
    ``meta`` device (shapes only, nothing is computed): convolutions, transposed convolutions and matrix
    products, the operations that carry the work; element-wise operations are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = _setting(setting)
    with torch.device("meta"):
        model = _build(network, cfg)
        x = torch.randn(cfg["shape"])
    counts = {}
    for mode in ("forward", "train"):
        with FlopCounterMode(display=False) as counter:
            if mode == "forward":
                with torch.no_grad():
                    model(x)
            else:
                model(x).sum().backward()
        counts[mode] = counter.get_total_flops() / 2  # the counter reports 2 FLOPs per multiply-add
    return {"network": network, "setting": setting, "forward_macs": counts["forward"], "train_macs": counts["train"]}


def _format_macs(rows: list[dict]) -> str:
    lines = [
        "# XUNet multiply-adds",
        "",
        "Produced by `python -m research.benchmark macs`: multiply-adds of convolutions, transposed convolutions "
        "and matrix products per pass, counted by torch.utils.flop_counter on the meta device. They bound what "
        "any speed-up can reach when both paths run their convolutions equally efficiently.",
        "",
    ]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        cfg = _setting(setting)
        by = {r["network"]: r for r in rows if r["setting"] == setting}
        base = by["basicunet"]
        lines += [
            f"## {cfg['description']}: input {cfg['shape']}, features {list(cfg['features'])}",
            "",
            "| network | forward GMAC | x BasicUNet | forward+backward GMAC | x BasicUNet |",
            "|---|---:|---:|---:|---:|",
        ]
        for net in NETWORKS:
            if net in by:
                r = by[net]
                lines.append(
                    f"| {net} | {r['forward_macs'] / 1e9:.1f} | {r['forward_macs'] / base['forward_macs']:.2f} | "
                    f"{r['train_macs'] / 1e9:.1f} | {r['train_macs'] / base['train_macs']:.2f} |"
                )
        if "xunet_straightforward" in by and "xunet_fast" in by:
            slow, fast = by["xunet_straightforward"], by["xunet_fast"]
            lines += [
                "",
                f"The straightforward path does {slow['forward_macs'] / fast['forward_macs']:.2f}x the fast "
                f"path's multiply-adds forward and {slow['train_macs'] / fast['train_macs']:.2f}x forward+backward.",
            ]
        lines.append("")
    return "\n".join(lines)


def macs(
    settings=("2d", "3d", "bundle"),
    out_md: str = "research/results/benchmarks_macs.md",
    out_json: str = "research/results/benchmarks_macs.json",
) -> None:
    """Count every network's multiply-adds at every setting (:func:`count_macs`), print the table and write
    ``out_md`` and ``out_json``."""
    rows = [count_macs(network, setting) for setting in settings for network in NETWORKS]
    text = _format_macs(rows)
    print(text)
    Path(BUNDLE_ROOT / out_md).write_text(text + "\n")
    Path(BUNDLE_ROOT / out_json).write_text(json.dumps({"rows": rows, "torch": torch.__version__}, indent=1) + "\n")


def profile(network="xunet_fast", setting: str = "3d", rows: int = 15, out: str | None = None) -> None:
    """Operator profile (torch.profiler, CPU self time) of one forward+backward pass after a warm-up: where the
    time goes. ``network`` is one name or a list of names (profiled one after the other); ``out`` also writes the
    tables to a file."""
    names = [network] if isinstance(network, str) else list(network)
    cfg = _setting(setting)
    text = ""
    for name in names:
        torch.manual_seed(0)
        net = _build(name, cfg)
        x = torch.randn(cfg["shape"])
        net(x).mean().backward()
        with torch.profiler.profile() as prof:
            net(x).mean().backward()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)
        text += f"{name} forward+backward, {cfg['description']}, input {cfg['shape']}, torch {torch.__version__}\n"
        text += table + "\n"
    print(text)
    if out:
        command = "python -m research.benchmark profile " + " ".join(sys.argv[2:])
        Path(out).write_text(f"# Operator profiles\n\nProduced by `{command}`.\n\n```\n{text}```\n")


def _stage_inputs(net: torch.nn.Module, x: torch.Tensor, xunet: bool) -> list[tuple[str, torch.Tensor, list]]:
    """``(stage name, stage input, skips)`` of each decoder stage, from one pass of the encoder and decoder."""
    with torch.no_grad():
        levels = [net.conv_0(x)]
        for down in (net.down_1, net.down_2, net.down_3, net.down_4):
            levels.append(down(levels[-1]))
        stages, current = [], levels[4]
        for k, name in zip((3, 2, 1, 0), ("upcat_4", "upcat_3", "upcat_2", "upcat_1")):
            skips = list(levels) if xunet else [levels[k]]
            stages.append((name, current, skips))
            current = getattr(net, name)(current, skips if xunet else skips[0])
    return stages


def _time_ms(step, repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def stages(settings=("bundle", "lgg"), repeats: int = 5, rounds: int = 3, out: str | None = None) -> str:
    """Milliseconds of each decoder stage, forward (no gradients) and forward+backward, of BasicUNet and of XUNet's
    fast and straightforward paths: where XUNet's extra cost sits. The encoders are the same modules. Networks
    take turns within each round; the median over rounds is reported."""
    lines = [
        "# Decoder stages: BasicUNet against XUNet",
        "",
        f"Produced by `python -m research.benchmark stages {' '.join(sys.argv[2:])}` ({torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}). Per stage: output shape, milliseconds "
        f"forward without gradients / forward+backward (median of {repeats} passes, median over {rounds} rounds).",
        "",
    ]
    for setting in settings:
        cfg = _setting(setting)
        x = torch.randn(cfg["shape"])
        torch.manual_seed(0)
        nets = {name: _build(name, cfg) for name in ("basicunet", "xunet_fast", "xunet_straightforward")}
        inputs = {name: _stage_inputs(net, x, name != "basicunet") for name, net in nets.items()}
        times: dict = {}
        for _ in range(rounds):
            for name, net in nets.items():
                for stage, current, skips in inputs[name]:
                    module = getattr(net, stage)
                    leaf = current.detach().requires_grad_()
                    arg = skips if name != "basicunet" else skips[0]

                    def forward(module=module, leaf=leaf, arg=arg):
                        with torch.no_grad():
                            module(leaf, arg)

                    def train(module=module, leaf=leaf, arg=arg):
                        module(leaf, arg).sum().backward()

                    entry = times.setdefault((name, stage), {"forward": [], "train": []})
                    entry["forward"].append(_time_ms(forward, repeats))
                    entry["train"].append(_time_ms(train, repeats))
        lines += [
            f"## {cfg['description']}: input {cfg['shape']}, features {list(cfg['features'])}",
            "",
            "| stage | output | BasicUNet | XUNet fast | x BasicUNet | XUNet straightforward |",
            "|---|---|---:|---:|---:|---:|",
        ]
        totals = {name: [0.0, 0.0] for name in nets}
        for stage, current, skips in inputs["basicunet"]:
            with torch.no_grad():
                shape = list(getattr(nets["basicunet"], stage)(current, skips[0]).shape)
            cells = []
            for name in nets:
                f = statistics.median(times[(name, stage)]["forward"])
                t = statistics.median(times[(name, stage)]["train"])
                totals[name][0] += f
                totals[name][1] += t
                cells.append((f, t))
            base, fast, slow = cells
            lines.append(
                f"| {stage} | {shape} | {base[0]:.1f} / {base[1]:.1f} | {fast[0]:.1f} / {fast[1]:.1f} | "
                f"{fast[0] / base[0]:.2f} / {fast[1] / base[1]:.2f} | {slow[0]:.1f} / {slow[1]:.1f} |"
            )
        base, fast, slow = (totals[name] for name in nets)
        lines += [
            f"| decoder | | {base[0]:.1f} / {base[1]:.1f} | {fast[0]:.1f} / {fast[1]:.1f} | "
            f"{fast[0] / base[0]:.2f} / {fast[1] / base[1]:.2f} | {slow[0]:.1f} / {slow[1]:.1f} |",
            "",
        ]
    text = "\n".join(lines)
    print(text)
    if out:
        Path(BUNDLE_ROOT / out).write_text(text + "\n")
    return text


def _alternating_ratios(nets: dict, x: torch.Tensor, pairs: int) -> dict:
    """Seconds per pass of each network, forward (no gradients, eval mode) and one training step, with the
    networks alternating pass by pass (the order swapped every pair) in this one process; on a GPU each pass is
    timed to its end (synchronised)."""
    optimizers = {name: torch.optim.SGD(net.parameters(), lr=1e-6) for name, net in nets.items()}

    def forward(name):
        nets[name].eval()
        with torch.no_grad():
            nets[name](x)

    def train(name):
        nets[name].train()
        optimizers[name].zero_grad(set_to_none=True)
        nets[name](x).float().mean().backward()
        optimizers[name].step()

    times = {mode: {name: [] for name in nets} for mode in ("forward", "train")}
    for mode, step in (("forward", forward), ("train", train)):
        for name in nets:  # warm-up
            step(name)
            step(name)
        for i in range(pairs):
            order = list(nets) if i % 2 == 0 else list(nets)[::-1]
            for name in order:
                _sync(x.device)
                start = time.perf_counter()
                step(name)
                _sync(x.device)
                times[mode][name].append(time.perf_counter() - start)
    return times


def paired(
    settings=("bundle", "lgg", "2d128", "2d", "3d"),
    pairs: int = 15,
    out_md: str = "research/results/benchmarks_paired.md",
    out_json: str = "research/results/benchmarks_paired.json",
    device: str = "auto",
    precision: str = "float32",
    compiled: bool = False,
) -> str:
    """XUNet's fast path against BasicUNet in **one** process, the two alternating pass by pass: each ratio pairs
    two adjacent passes, so a machine whose speed drifts from one second to the next (shared CPUs) affects both
    sides of every ratio alike. Reports, per setting, the median seconds per pass and the median ratio with its
    interquartile range over ``pairs`` pairs, forward (inference, no gradients) and a training step. This is how a
    long-running training or inference process meets the networks; :func:`run` measures each in a fresh process.

    ``device``: ``"auto"`` (the GPU where there is one), ``"cpu"`` or ``"cuda"``; ``precision``: ``float32`` or
    ``bfloat16`` autocast (the bundle's setting); ``compiled=True`` runs both networks through ``torch.compile``
    (its compilation happens in the warm-up passes)."""
    from scripts.precision import with_autocast

    if pairs < 2:
        raise ValueError(f"pairs must be 2 or more to give a spread of ratios, got {pairs}.")
    dev = _device(device)
    how = precision + (", both networks compiled (torch.compile, default mode)" if compiled else "")
    lines = [
        "# XUNet against BasicUNet, passes alternating in one process",
        "",
        f"Produced by `python -m research.benchmark paired {' '.join(sys.argv[2:])}` on {_describe(dev)}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, {how}. "
        f"Two warm-up passes each, then {pairs} pairs of passes (the order swapped every pair); ratio = XUNet fast / "
        "BasicUNet per pair: median (interquartile range). Forward = eval mode without gradients (inference); "
        "training step = forward, backward and an SGD step.",
        "",
        "| setting | input | features | BasicUNet forward s | XUNet forward s | x BasicUNet | "
        "BasicUNet step s | XUNet step s | x BasicUNet |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    results = []
    for setting in settings:
        cfg = _setting(setting)
        torch.manual_seed(0)
        nets = {}
        for name in ("basicunet", "xunet_fast"):
            model = _build(name, cfg).to(dev)
            nets[name] = with_autocast(torch.compile(model) if compiled else model, precision)
        x = torch.randn(cfg["shape"], device=dev)
        times = _alternating_ratios(nets, x, pairs)
        entry = {"setting": setting, "description": cfg["description"], "shape": cfg["shape"], "times_s": times}
        cells = []
        for mode in ("forward", "train"):
            base, fast = times[mode]["basicunet"], times[mode]["xunet_fast"]
            ratios = sorted(f / b for f, b in zip(fast, base))
            quartiles = statistics.quantiles(ratios, n=4, method="inclusive")
            entry[mode] = {"ratio_median": statistics.median(ratios), "ratio_quartiles": [quartiles[0], quartiles[2]]}
            cells.append(
                f"{statistics.median(base):.3f} | {statistics.median(fast):.3f} | "
                f"{statistics.median(ratios):.2f} ({quartiles[0]:.2f}-{quartiles[2]:.2f})"
            )
            print(f"{setting:7s} {mode:8s} {entry[mode]['ratio_median']:.2f}", flush=True)
        results.append(entry)
        lines.append(f"| {cfg['description']} | {cfg['shape']} | {list(cfg['features'])} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines) + "\n"
    print(text)
    meta = {
        "command": "python -m research.benchmark paired " + " ".join(sys.argv[2:]),
        "torch": torch.__version__,
        "device": _describe(dev),
        "precision": precision,
        "compiled": compiled,
    }
    Path(BUNDLE_ROOT / out_md).write_text(text)
    Path(BUNDLE_ROOT / out_json).write_text(json.dumps({"meta": meta, "settings": results}, indent=1) + "\n")
    return text


def bundle(
    dataset_dir: str | None = None,
    rounds: int = 3,
    straightforward: bool = False,
    repeats_volumes: int = 10,
    out_md: str = "research/results/benchmarks_bundle_epoch.md",
    out_json: str = "research/results/benchmarks_bundle_epoch.json",
) -> None:
    """The bundle's training epoch and inference, :func:`bundle_timings`, ``rounds`` times with the networks taking
    turns in each round, so a machine whose speed drifts affects them alike: the ratios to BasicUNet are paired
    within a round. Prints the table and writes ``out_md`` and ``out_json``."""
    data = dataset_dir or str(BUNDLE_ROOT.parent / "shared" / "data" / "Task04_Hippocampus")
    runs = []
    for round_index in range(rounds):
        runs.append(bundle_timings(data, repeats_volumes, straightforward))
        print(
            f"round {round_index}: " + ", ".join(f"{name} {r['epoch_s']:.1f} s" for name, r in runs[-1].items()),
            flush=True,
        )
    first = runs[0]
    base = "BasicUNet float32"
    by_round = {name: dict(enumerate(r[name] for r in runs)) for name in first}  # as _ratio pairs them
    command = "python -m research.benchmark bundle " + " ".join(sys.argv[2:])
    device = "a CUDA GPU" if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
    lines = [
        "# The bundle's training epoch: XUNet against BasicUNet",
        "",
        f"Produced by `{command}` on {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}. One epoch of configs/train.json ({first[base]['train_cases']} training "
        "cases, validation off; data loading, augmentation and the optimiser included) and sliding-window "
        f"inference (median over {first[base]['volumes']} validation volumes), per network; {rounds} round(s), "
        "the networks taking turns in each. Median over rounds (range); ratios to BasicUNet are paired within "
        "a round. BasicUNet has XUNet's features (configs/train.json's network_options).",
        "",
        "| network, path, precision | training epoch s | x BasicUNet | inference per volume s | x BasicUNet |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rounds_of_network in by_round.items():
        epoch = [r["epoch_s"] for r in rounds_of_network.values()]
        infer = [r["inference_per_volume_s"] for r in rounds_of_network.values()]
        lines.append(
            f"| {name} | {_spread(epoch, 1)} | {_ratio(rounds_of_network, by_round[base], 'epoch_s')} | "
            f"{_spread(infer, 3)} | {_ratio(rounds_of_network, by_round[base], 'inference_per_volume_s')} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(BUNDLE_ROOT / out_md).write_text(text)
    Path(BUNDLE_ROOT / out_json).write_text(
        json.dumps({"command": command, "device": device, "rounds": runs}, indent=1) + "\n"
    )


if __name__ == "__main__":
    # `measure` prints one JSON line for the parent process; `run` prints the table.
    fire.Fire(
        {
            "run": run,
            "profile": profile,
            "macs": macs,
            "measure": lambda *a, **k: print(json.dumps(measure(*a, **k))),
            "bundle": bundle,
            "stages": stages,
            "paired": paired,
        }
    )
