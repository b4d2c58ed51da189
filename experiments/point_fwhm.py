"""How sharp does each model restore a point source? The model card's resolution chart, for several models side by side.

    .venv/bin/python experiments/point_fwhm.py v8=runs/default-model/v8/model.safetensors \
        w10=runs/experiments/mse-weight/w10/model.safetensors

Each model restores the noise-free point-source chart (`mpimamba.eval.resolution`) at the model card's scan
settings (`model_card.CHART_SETTINGS`: x and z scans at 9 T/m and 0.25 mm, and x scans outside and at the edge
of the training ranges) through `infer.Restoration`, as `calibrate` does. Why: a fine-tuning stage can widen
the restored point while its PSNR rises (`results/mse-polish2.md`: 0.90 -> 1.08 mm along the drive axis), which
PSNR and the mass ratio do not show and the FWHM does. Prints a table (FWHM and smallest resolved spacing in mm,
the input's row first); ~25 s per model on a 2-core CPU.

The chart's point sits on a pixel centre, so its FWHM is one sample of how the model draws a point. With
`--subpixel N` a second table gives the FWHM along x and z over N × N positions of the point within a pixel
(offsets 0, 1/N, ... of a pixel along each axis), at the first chart setting (9 T/m, 0.25 mm, x scan): mean and
range. Each shifted input is the chart's noise-free input moved by a Fourier shift (exact for a band-limited
image; the input's PSF is 3.8 px wide along x and 8.7 px along z at that setting) and divided by its maximum
again; each profile is taken through the point's true position, as the chart's own is.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

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


def shifted_inputs(chart: resolution.Chart, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The chart's point-source input moved by (i/steps, j/steps) px along (z, x), each divided by its maximum
    again, (steps², S, S), and where each point now is, (steps², 2) as (row, column); the first is the chart's own."""
    dot = chart.inputs[chart.names.index("dot")].astype(np.float64)
    centre = dot.shape[0] // 2  # where resolution's chart puts the point
    spectrum = np.fft.fft2(dot)
    images, positions = [], []
    for dz in range(steps):
        for dx in range(steps):
            moved = np.fft.ifft2(ndimage.fourier_shift(spectrum, (dz / steps, dx / steps))).real
            images.append(moved / moved.max())
            positions.append((centre + dz / steps, centre + dx / steps))
    return np.stack(images).astype(np.float32), np.array(positions)


def point_widths(images: np.ndarray, positions: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """FWHM along x and along z (mm) of the point in each (S, S) image, through the point's true (row, column)
    in `positions` (N, 2): the profile between two rows (columns) is interpolated linearly. As the chart
    measures its on-grid point (through the source, not through the output's brightest pixel, which may sit
    a pixel off). Two (N,) arrays."""
    def through(image: np.ndarray, at: float) -> np.ndarray:  # the row at fractional index `at`
        low = int(np.floor(at))
        share = at - low
        return image[low] if share == 0 else (1 - share) * image[low] + share * image[low + 1]

    along_x = [resolution.fwhm(through(image, row), spacing) for image, (row, _) in zip(images, positions)]
    along_z = [resolution.fwhm(through(image.T, col), spacing) for image, (_, col) in zip(images, positions)]
    return np.array(along_x), np.array(along_z)


def subpixel_widths(restore, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """FWHM along x and along z (mm) of the point at steps × steps sub-pixel positions on the first chart setting,
    each restored by `restore` ((H, W) -> (H, W); None = the input itself); two (steps²,) arrays, the on-grid first."""
    chart = resolution.make_chart(resolution.ChartSetting(*CHART_SETTINGS[0]))
    inputs, positions = shifted_inputs(chart, steps)
    images = inputs if restore is None else np.stack([restore(image) for image in inputs])
    return point_widths(images, positions, chart.setting.spacing_mm)


def _spread(values: np.ndarray) -> str:
    return f"{values.mean():.2f} ({values.min():.2f}–{values.max():.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=common.labelled_model, help="NAME=PATH of each model (.safetensors)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--subpixel", type=int, default=0, metavar="N",
                        help="also the FWHM over N x N sub-pixel positions of the point (9 T/m x scan); 0 = off")
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
    if args.subpixel > 0:
        scan, gradient, spacing = CHART_SETTINGS[0]
        lines += ["", f"Point source at {args.subpixel}x{args.subpixel} sub-pixel positions, "
                  f"{scan} scan, {gradient:g} T/m, {spacing:g} mm: mean (range), mm", "",
                  "| image | FWHM x | FWHM z |", "|---|---|---|"]
        for name, restore in [("input", None), *restorations]:
            along_x, along_z = subpixel_widths(restore, args.subpixel)
            lines.append(f"| {name} | {_spread(along_x)} | {_spread(along_z)} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
