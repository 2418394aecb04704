"""Check a dataset folder before training, evaluation or inference, and print a report of every case.

    python -m scripts.check_data <folder> [--output_dir <folder>] [--num_classes 3]

``<folder>`` is an MSD task (``dataset.json`` with ``imagesTr``/``labelsTr``; its ``imagesTs`` too, if present) or a
folder of NIfTI images to segment. Every check is the one the workflows run in ``initialize`` (no second
implementation): dataset.json's form and repeated entries (:func:`scripts.data.read_task`), each case's image and
label map (:func:`scripts.checks.case_problems`: readable, 3-D, one channel, plausible header, intensities float32
holds, label on the image's grid with whole, listed values), the prediction names inference would write
(:func:`scripts.outputs.prediction_names`) and, given ``--output_dir``, whether inference may write there
(:func:`scripts.outputs.check_output_dir`). The exit status is 1 when any case cannot be used, else 0.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .checks import case_problems
from .data import image_datalist, read_task
from .outputs import PredictionNames, check_output_dir


def _report(title: str, items: list[dict], label_values, in_channels: int, channels_from: str, lines: list[str]) -> int:
    """Append one line per case of ``items`` to ``lines``; returns how many cases cannot be used."""
    bad = 0
    lines.append(f"{title}: {len(items)} case(s)")
    for item in items:
        problems = case_problems(item, 3, in_channels, label_values, channels_from)
        name = item.get("case") or os.path.basename(item["image"])
        if problems:
            bad += 1
            lines += [f"  FAIL {name}: {problem}" for problem in problems]
        else:
            lines.append(f"  ok   {name}")
    return bad


def check_data(folder: str, output_dir: str | None = None, num_classes: int = 3) -> int:
    """Check ``folder`` and print a per-case report.

    Args:
        folder: an MSD task folder (with dataset.json) or a folder of NIfTI images.
        output_dir: where inference would write its predictions of ``folder``'s images (checked, nothing written).
        num_classes: the network's outputs (config id ``num_classes``), which dataset.json's labels must fit.

    Returns:
        the number of problems found (cases that cannot be used, and problems of the folder itself).
    """
    root = Path(folder).expanduser()
    lines, bad = [f"Checking '{root}'"], 0
    if not root.exists():
        print(f"'{root}' does not exist: give an MSD task folder or a folder of NIfTI images.")
        return 1
    images_folder = root
    if (root / "dataset.json").is_file():
        try:
            task = read_task(root, num_classes)
        except ValueError as err:  # the workflows stop on these too: nothing per case can be trusted after them
            print("\n".join(lines + [f"  FAIL dataset.json: {err}"]))
            return 1
        lines += [f"  FAIL {message}" for message in task.missing]
        bad += len(task.missing)
        bad += _report(
            "dataset.json 'training' (images and label maps)",
            task.items,
            task.label_values,
            task.in_channels,
            "the modalities listed in dataset.json",
            lines,
        )
        images_folder = root / "imagesTs"
    if images_folder.is_dir() and any(images_folder.iterdir()):
        try:
            datalist = image_datalist(images_folder)  # warns of files it skips
            names = PredictionNames(datalist, output_dir or images_folder)
            title = f"images to segment in '{images_folder}'"
            bad += _report(title, datalist, None, 1, "the network's in_channels", lines)
            if output_dir is not None:
                check_output_dir(output_dir, names, str(images_folder))
                lines.append(
                    f"  ok   output_dir '{output_dir}': the {len(datalist)} prediction(s) may be written " "there"
                )
        except (ValueError, FileNotFoundError) as err:
            bad += 1
            lines.append(f"  FAIL {err}")
    lines.append(
        "All cases can be used." if bad == 0 else f"{bad} problem(s) found: fix them before running the bundle."
    )
    print("\n".join(lines))
    return bad


def main() -> None:
    import fire

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    problems = fire.Fire(check_data, serialize=lambda result: None)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
