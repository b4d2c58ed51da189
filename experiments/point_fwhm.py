"""How sharp does each model restore a point source? The model card's resolution chart, for several models side by side.

    .venv/bin/python experiments/point_fwhm.py v8=runs/default-model/v8/model.safetensors \
        w10=runs/experiments/mse-weight/w10/model.safetensors

Each model restores the noise-free point-source chart (`mpimamba.eval.resolution`) at the model card's scan
settings (`model_card.CHART_SETTINGS`: x and z scans at 9 T/m and 0.25 mm, and x scans outside and at the edge
of the training ranges) through `infer.Restoration`, as `calibrate` does. Why: a fine-tuning stage can widen
the restored point while its PSNR rises (`results/mse-polish2.md`: 0.90 -> 1.08 mm along the drive axis), which
PSNR and the mass ratio do not show and the FWHM does. Prints a table (FWHM and smallest resolved spacing in mm,
the input's row first); ~25 s per model on a 2-core CPU.
"""

from __future__ import annotations

import argparse

import numpy as np

import common
from model_card import CHART_SETTINGS, chart_cells
from mpimamba.eval import resolution
from mpimamba.infer import Restoration
from mpimamba.models.checkpoint import load_model
from mpimamba.threads import configure_threads


def _row(label: str, setting: tuple, images: np.ndarray, chart: resolution.Chart) -> str:
    scan, gradient, spacing = setting
    cells = chart_cells(resolution.measure(images, chart))
    return f"| {scan} | {gradient:g} T/m | {spacing:g} mm | {label} | {cells} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=common.labelled_model, help="NAME=PATH of each model (.safetensors)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    configure_threads(args.threads)
    restorations = [(name, Restoration(load_model(path))) for name, path in args.models]
    lines = ["| scan | gradient | pixel | image | FWHM x | FWHM z | resolved x | resolved z | z/x |",
             "|---|---|---|---|---|---|---|---|---|"]
    for setting in CHART_SETTINGS:
        chart = resolution.make_chart(resolution.ChartSetting(*setting))
        lines.append(_row("input", setting, chart.inputs, chart))
        for name, restoration in restorations:
            outputs = np.stack([restoration(image) for image in chart.inputs])  # (N, S, S)
            lines.append(_row(name, setting, outputs, chart))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
