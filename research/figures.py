"""The studies' pictures (issue #23): Dice per network with error bars, training curves, prediction overlays.

Three steps, so every committed picture is remade from committed files except the overlays, which need the
trained weights and the data (neither is committed: the LGG data's licence forbids it)::

    python -m research.figures collect --study_dir /tmp/cpu_study --out_dir research/results   # small result files
    python -m research.figures plot --results_dir research/results                           # bars and curves
    python -m research.figures overlays --study_dir /tmp/cpu_study --lgg_dir <kaggle_3m> --msd_dir <Task04> \
        --out_dir research/results/figures

``study_dir`` is the work folder of ``research/cpu_study.sh``: ``lgg/{patient_split,slice_split}/<run>/`` (runs of
``research.lgg_study``) and ``hippocampus/<variant>_f<fold>/`` (runs of ``research.screen_recipes``).
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path

import fire
import torch

from research.cross_validation import read_per_case
from research.lgg import SLICES_CSV, dice
from research.screen_recipes import load_variants

BUNDLE_ROOT = Path(__file__).resolve().parent.parent
LGG_RESULTS = "lgg_cpu"
HIPPOCAMPUS_RESULTS = "family_cpu"
FIGURES = "figures"
HIPPOCAMPUS_SCREEN = "research/configs/screens/family_cpu.json"
# the order networks are drawn in: the reference, XUNet, then the rest of the family
ORDER = (
    "basicunet",
    "xunet",
    "xunet_attn",
    "xunet_light",
    "unet",
    "unetpp",
    "attentionunet",
    "resunet",
    "r2unet",
    "r2attunet",
)


def _ordered(names: Sequence[str]) -> list[str]:
    return sorted(set(names), key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def _scalars(runs_dir: Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of one tensorboard scalar of a run (empty when the run logged none)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs_dir), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in events.Scalars(tag)]


def _curve_rows(dataset: str, network: str, seed: int, fold: int, runs_dir: Path) -> list[list]:
    """Per epoch: the mean training loss and the training Dice the bundle logs."""
    dices = _scalars(runs_dir, "train_mean_dice")
    losses = _scalars(runs_dir, "train_loss")
    if not dices:
        return []
    per_epoch = len(losses) // len(dices) if losses else 0
    rows = []
    for epoch, value in dices:
        chunk = [v for _, v in losses[(epoch - 1) * per_epoch : epoch * per_epoch]] if per_epoch else []
        loss = f"{statistics.fmean(chunk):.6f}" if chunk else ""
        rows.append([dataset, network, seed, fold, epoch, loss, f"{value:.6f}"])
    return rows


def collect(study_dir: str = "/tmp/cpu_study", out_dir: str = "research/results") -> None:
    """Copy the studies' small result files out of ``study_dir`` into ``out_dir`` (no weights, no images):

    * ``lgg_cpu/{patient_split,slice_split}/``: per run ``result.json`` and ``eval/lgg_slices.csv`` (pixel counts per
      slice), which ``python -m research.lgg_study compare --work_dir research/results/lgg_cpu`` pools again;
    * ``family_cpu/``: the screen's per-case CSVs;
    * ``curves.csv``: every run's training loss and Dice per epoch (from its tensorboard log).
    """
    study, out = Path(study_dir), Path(out_dir)
    curves = [["dataset", "network", "seed", "fold", "epoch", "train_loss", "train_dice"]]
    for split in ("patient_split", "slice_split"):
        for result in sorted((study / "lgg" / split).glob("*/result.json")):
            run = result.parent
            target = out / LGG_RESULTS / split / run.name
            (target / "eval").mkdir(parents=True, exist_ok=True)
            shutil.copy(result, target / "result.json")
            shutil.copy(run / "eval" / SLICES_CSV, target / "eval" / SLICES_CSV)
            r = json.loads(result.read_text())
            dataset = "lgg" if split == "patient_split" else "lgg_leaky"
            curves += _curve_rows(dataset, r["network"], r["seed"], r["fold"], run / "runs")
        settings = study / "lgg" / split / "settings.json"
        if settings.is_file():
            (out / LGG_RESULTS / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(settings, out / LGG_RESULTS / split / "settings.json")
    hippocampus = study / "hippocampus"
    results = hippocampus / "results"
    if results.is_dir():
        target = out / HIPPOCAMPUS_RESULTS
        target.mkdir(parents=True, exist_ok=True)
        for per_case in sorted(results.glob("*_f*.csv")):
            shutil.copy(per_case, target / per_case.name)
            variant, fold = per_case.stem.rsplit("_f", 1)
            network, seed = variant.rsplit("_s", 1)
            curves += _curve_rows("hippocampus", network, int(seed), int(fold), hippocampus / per_case.stem / "runs")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "curves.csv", "w", newline="") as f:
        csv.writer(f).writerows(curves)


def lgg_seed_means(per_patient_csv: str | Path) -> dict[str, dict[int, float]]:
    """``{network: {seed: mean per-patient Dice}}`` from a ``per_patient.csv`` of ``research.lgg_study compare``."""
    values: dict[str, dict[int, list[float]]] = {}
    with open(per_patient_csv) as f:
        for row in csv.DictReader(f):
            values.setdefault(row["network"], {}).setdefault(int(row["seed"]), []).append(float(row["dice"]))
    return {n: {s: statistics.fmean(v) for s, v in seeds.items()} for n, seeds in values.items()}


def hippocampus_seed_means(results_dir: str | Path, folds: Sequence[int] = (0,)) -> dict[str, dict[int, float]]:
    """``{network: {seed: mean Dice over cases}}`` from a screen's ``<network>_s<seed>_f<fold>.csv`` files."""
    values: dict[str, dict[int, list[float]]] = {}
    for path in sorted(Path(results_dir).glob("*_s*_f*.csv")):
        variant, fold = path.stem.rsplit("_f", 1)
        if int(fold) not in folds:
            continue
        network, seed = variant.rsplit("_s", 1)
        cases = read_per_case(path)[1]
        values.setdefault(network, {}).setdefault(int(seed), []).extend(row[-1] for row in cases.values())
    return {n: {s: statistics.fmean(v) for s, v in seeds.items()} for n, seeds in values.items()}


def _bars(means: dict[str, dict[int, float]], title: str, ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _ordered(means)
    centre = [statistics.fmean(means[n].values()) for n in names]
    spread = [statistics.stdev(means[n].values()) if len(means[n]) > 1 else 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.75 * len(names)), 3.6))
    colours = ["#7f7f7f" if n == "basicunet" else ("#d62728" if n.startswith("xunet") else "#1f77b4") for n in names]
    ax.bar(range(len(names)), centre, yerr=spread, capsize=4, color=colours, alpha=0.8)
    for i, n in enumerate(names):
        seeds = sorted(means[n])
        ax.scatter([i] * len(seeds), [means[n][s] for s in seeds], color="black", s=10, zorder=3)
    low = min(min(v.values()) for v in means.values())
    ax.set_ylim(max(0.0, low - 0.1), min(1.0, max(max(v.values()) for v in means.values()) + 0.05))
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, 60), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _curves(rows: list[dict], dataset: str, networks: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for network in _ordered(networks):
        runs = [r for r in rows if r["dataset"] == dataset and r["network"] == network]
        if not runs:
            continue
        epochs = sorted({int(r["epoch"]) for r in runs})
        for ax, key in zip(axes, ("train_dice", "train_loss")):
            by_epoch = [[float(r[key]) for r in runs if int(r["epoch"]) == e and r[key] != ""] for e in epochs]
            mean = [statistics.fmean(v) if v else float("nan") for v in by_epoch]
            sd = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in by_epoch]
            line = ax.plot(epochs, mean, label=network, linewidth=2 if network in ("xunet", "basicunet") else 1)
            ax.fill_between(
                epochs,
                [m - s for m, s in zip(mean, sd)],
                [m + s for m, s in zip(mean, sd)],
                alpha=0.15,
                color=line[0].get_color(),
            )
    axes[0].set_ylabel("training Dice (per epoch)")
    axes[1].set_ylabel("training loss (mean per epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(results_dir: str = "research/results") -> list[str]:
    """Bars of Dice per network (mean over seeds, error bar: SD over seeds, dots: each seed) and training curves,
    from the committed files of :func:`collect` and ``research.lgg_study compare``; returns the files written."""
    results = Path(results_dir)
    out = results / FIGURES
    out.mkdir(parents=True, exist_ok=True)
    written = []
    lgg = results / LGG_RESULTS / "patient_split"
    for name, what, only in (
        ("per_patient.csv", "XUNet against BasicUNet", ("xunet", "basicunet")),
        ("family_per_patient.csv", "the family", None),
    ):
        if (lgg / name).is_file():
            with open(lgg / name) as f:
                patients = len({row["patient"] for row in csv.DictReader(f)})
            means = {n: v for n, v in lgg_seed_means(lgg / name).items() if only is None or n in only}
            if not means:
                continue
            seeds = max(len(v) for v in means.values())
            title = f"LGG FLAIR, {what}: mean per-patient Dice over {patients} held-out patients, {seeds} seeds"
            path = out / f"lgg_{name.replace('per_patient.csv', 'dice').strip('_')}.png"
            _bars(means, title, "per-patient Dice", path)
            written.append(str(path))
    hippocampus = results / HIPPOCAMPUS_RESULTS
    fold_0 = sorted(hippocampus.glob("*_s*_f0.csv")) if hippocampus.is_dir() else []
    if fold_0:
        cases = len(read_per_case(fold_0[0])[1])
        means = hippocampus_seed_means(hippocampus)
        seeds = max(len(v) for v in means.values())
        path = out / "hippocampus_family_dice.png"
        title = f"Hippocampus, the family: mean Dice (anterior, posterior) over {cases} held-out cases, {seeds} seeds"
        _bars(means, title, "mean Dice per case", path)
        written.append(str(path))
    curves = results / "curves.csv"
    if curves.is_file():
        with open(curves) as f:
            rows = list(csv.DictReader(f))
        for dataset, title in (
            ("lgg", "LGG FLAIR: every run (mean, shaded: SD over runs)"),
            ("hippocampus", "Hippocampus: every run (mean, shaded: SD over runs)"),
        ):
            networks = {r["network"] for r in rows if r["dataset"] == dataset}
            if networks:
                path = out / f"{dataset}_training_curves.png"
                _curves(rows, dataset, networks, path, title)
                written.append(str(path))
    return written  # the command line prints it


def _cost(name: str, spatial_dims: int, out_channels: int, features: Sequence[int], shape: Sequence[int]) -> str:
    """Parameters and GFLOPs of one network at a study's setting, counted on meta tensors."""
    from research.summary import count_flops
    from scripts.networks import create_network

    with torch.device("meta"):
        net = create_network(name, spatial_dims, 1, out_channels, {name: {"features": list(features)}}).eval()
        x = torch.empty(list(shape))
    params = sum(p.numel() for p in net.parameters())
    return f"{params / 1e6:.2f} M, {count_flops(net, x) / 1e9:.2f}"


def _seed_cell(seeds: dict[int, float] | None) -> str:
    if not seeds:
        return "not run"
    values = [seeds[s] for s in sorted(seeds)]
    sd = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.3f}{sd} ({len(values)})"


def family_table(results_dir: str = "research/results", reference: str = "basicunet") -> str:
    """The family on both data sets in one markdown table: per network, Dice as mean ± SD over seeds (number of
    seeds), parameters and GFLOPs at each study's setting, and whether its difference from ``reference`` exceeds
    seed noise: more than twice the larger of the two networks' SDs over seeds (the seeds' spread, not a test)."""
    results = Path(results_dir)
    lgg_csv = results / LGG_RESULTS / "patient_split" / "family_per_patient.csv"
    lgg = lgg_seed_means(lgg_csv) if lgg_csv.is_file() else {}
    hippocampus = hippocampus_seed_means(results / HIPPOCAMPUS_RESULTS)
    settings = json.loads((results / LGG_RESULTS / "patient_split" / "settings.json").read_text())
    variants = {v.name: v for v in load_variants(BUNDLE_ROOT / HIPPOCAMPUS_SCREEN)}
    lines = [
        "| network | LGG per-patient Dice (seeds) | vs BasicUNet | LGG params, GFLOPs per slice | hippocampus Dice "
        "(seeds) | vs BasicUNet | hippocampus params, GFLOPs per patch |",
        "|---|---:|---|---:|---:|---|---:|",
    ]

    def versus(data: dict[str, dict[int, float]], name: str) -> str:
        if name == reference or name not in data or reference not in data:
            return ""
        a, b = list(data[name].values()), list(data[reference].values())
        difference = statistics.fmean(a) - statistics.fmean(b)
        noise = 2 * max(statistics.stdev(a) if len(a) > 1 else 0.0, statistics.stdev(b) if len(b) > 1 else 0.0)
        verdict = "exceeds seed noise" if abs(difference) > noise else "within seed noise"
        return f"{difference:+.3f}, {verdict}"

    patch = [1, 1, *json.loads((BUNDLE_ROOT / "configs" / "train.json").read_text())["patch_size"]]
    for name in _ordered(set(lgg) | set(hippocampus)):
        variant = variants.get(f"{name}_s0")
        hippocampus_features = variant.overrides["network_options"][name]["features"] if variant else None
        lgg_cost = _cost(name, 2, 2, settings["features"], [1, 1, *settings["patch_size"]])
        hippocampus_cost = _cost(name, 3, 3, hippocampus_features, patch) if hippocampus_features else ""
        lines.append(
            f"| {name} | {_seed_cell(lgg.get(name))} | {versus(lgg, name)} | {lgg_cost} | "
            f"{_seed_cell(hippocampus.get(name))} | {versus(hippocampus, name)} | {hippocampus_cost} |"
        )
    return "\n".join(lines) + "\n"


def _load_network(parser, run_dir: Path) -> torch.nn.Module:
    net = parser.get_parsed_content("network_def")
    state = torch.load(run_dir / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


def _parser(config_files: list[str], overrides: dict):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE_ROOT / f) for f in config_files])
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _predict(parser, nets: dict[str, torch.nn.Module], item: dict) -> dict:
    """The preprocessed image and label of one datalist item, and each network's argmax prediction."""
    data = parser.get_parsed_content("validate#preprocessing")(item)
    inferer = parser.get_parsed_content("sliding_window")
    image = data["image"].as_tensor()[None] if hasattr(data["image"], "as_tensor") else data["image"][None]
    out = {"image": image[0, 0], "label": torch.as_tensor(data["label"])[0]}
    with torch.no_grad():
        for name, net in nets.items():
            out[name] = inferer(image, net).argmax(1)[0]
    return out


def _overlay_figure(panels: list[dict], names: Sequence[str], foreground: Sequence[int], path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = ListedColormap(["red", "deepskyblue"][: len(foreground)])
    fig, axes = plt.subplots(len(panels), 1 + len(names), figsize=(2.6 * (1 + len(names)), 2.6 * len(panels)))
    for row, panel in zip(axes, panels):
        image = panel["image"].T
        label = panel["label"].T
        row[0].imshow(image, cmap="gray")
        row[0].contour(label > 0, levels=[0.5], colors="lime", linewidths=1)
        row[0].set_title(f"{panel['case']}\nground truth (green)", fontsize=7)
        for ax, name in zip(row[1:], names):
            pred = panel[name].T
            ax.imshow(image, cmap="gray")
            shown_classes = torch.where(pred > 0, pred.float(), float("nan"))
            ax.imshow(shown_classes, cmap=colours, alpha=0.45, vmin=1, vmax=max(1, len(foreground)))
            ax.contour(label > 0, levels=[0.5], colors="lime", linewidths=1)
            scores = []
            for c in foreground:
                tp = float(((pred == c) & (label == c)).sum())
                fp = float(((pred == c) & (label != c)).sum())
                fn = float(((pred != c) & (label == c)).sum())
                scores.append(dice(tp, fp, fn))
            shown = ", ".join("-" if s != s else f"{s:.2f}" for s in scores)
            legend = "red" if len(foreground) == 1 else "red, blue"
            ax.set_title(f"{name} ({legend})\nDice on this slice {shown}", fontsize=7)
        for ax in row:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def overlays(
    study_dir: str = "/tmp/cpu_study",
    lgg_dir: str = "../shared/data/lgg_kaggle_3m_subset/kaggle_3m",
    msd_dir: str = "../shared/data/Task04_Hippocampus",
    out_dir: str = "research/results/figures",
    seed: int = 0,
    cases: int = 3,
) -> list[str]:
    """Prediction overlays of XUNet and BasicUNet (fold 0, ``seed``) on held-out slices: on LGG, the slice with the
    largest abnormality of each of the ``cases`` held-out patients with the largest abnormalities; on the
    hippocampus, the axial slice with the most hippocampus of the first ``cases`` held-out volumes."""
    study, out = Path(study_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = ("xunet", "basicunet")
    written = []

    lgg_runs = study / "lgg" / "patient_split"
    settings = json.loads((lgg_runs / "settings.json").read_text())
    features = settings["features"]
    overrides = {k: v for k, v in settings.items() if k not in ("features", "train#trainer#max_epochs")}
    overrides.update({"dataset_dir": lgg_dir, "fold": 0, "num_workers": 0})
    panels_by_patient: dict[str, dict] = {}
    parsers = {}
    for name in names:
        parsers[name] = _parser(
            ["configs/train.json", "research/configs/lgg.json"],
            {**overrides, "network_name": name, "network_options": {name: {"features": features}}},
        )
    nets = {name: _load_network(parsers[name], lgg_runs / f"{name}_f0_s{seed}") for name in names}
    held_out = parsers["xunet"].get_parsed_content("datalist")(split="validation")
    loader = parsers["xunet"].get_parsed_content("validate#preprocessing")
    sizes = []
    for item in held_out:
        label = loader(dict(item))["label"]
        sizes.append((float(label.sum()), item))
    best: dict[str, tuple[float, dict]] = {}
    for size, item in sizes:
        patient = Path(item["image"]).parent.name
        if size > best.get(patient, (0.0, None))[0]:
            best[patient] = (size, item)
    chosen = sorted(best.items(), key=lambda kv: -kv[1][0])[:cases]
    for patient, (_, item) in chosen:
        panel = _predict(parsers["xunet"], nets, dict(item))
        panel["case"] = Path(item["image"]).stem
        panels_by_patient[patient] = panel
    path = out / "lgg_overlays.png"
    _overlay_figure(
        list(panels_by_patient.values()),
        names,
        [1],
        path,
        f"LGG FLAIR, held-out patients (fold 0), seed {seed}; images: TCGA-LGG (TCIA), masks: Buda et al. 2019, "
        "CC BY-NC-SA 4.0",
    )
    written.append(str(path))

    runs = study / "hippocampus"
    variants = {v.name: v for v in load_variants(BUNDLE_ROOT / HIPPOCAMPUS_SCREEN)}
    parsers = {}
    nets = {}
    for name in names:
        variant = variants[f"{name}_s{seed}"]
        parsers[name] = _parser(
            ["configs/train.json", *variant.config_files],
            {**variant.overrides, "dataset_dir": msd_dir, "fold": 0, "num_workers": 0},
        )
        nets[name] = _load_network(parsers[name], runs / f"{variant.name}_f0")
    held_out = parsers["xunet"].get_parsed_content("datalist")(split="validation")[:cases]
    panels = []
    for item in held_out:
        volume = _predict(parsers["xunet"], nets, dict(item))
        axis_counts = (volume["label"] > 0).sum(dim=(0, 1))
        z = int(axis_counts.argmax())
        panel = {key: value[..., z] for key, value in volume.items()}
        panel["case"] = Path(item["image"]).name
        panels.append(panel)
    path = out / "hippocampus_overlays.png"
    _overlay_figure(panels, names, [1, 2], path, f"Hippocampus, held-out volumes (fold 0), seed {seed}")
    written.append(str(path))
    return written  # the command line prints it


if __name__ == "__main__":
    fire.Fire({"collect": collect, "plot": plot, "overlays": overlays, "family_table": family_table})
