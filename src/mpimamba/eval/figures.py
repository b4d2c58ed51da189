"""Figures as PNG: one image restored by one method (input | output | target | error map), and the
multi-method grid of the paper's Figure 6 (rows = images; columns = input, each method, target; each
image row followed by a row of error maps). Matplotlib's object API with the Agg canvas: no pyplot, no
global state, safe in scripts and on headless machines. Writes are atomic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..fileutil import atomic_path

IMAGE_CMAP, ERROR_CMAP = "inferno", "viridis"
PANEL_INCHES = 2.2


def _save(fig: Figure, path: str | Path, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def _panel(fig: Figure, ax, image: np.ndarray, title: str, cmap: str, vmax: float, colorbar: bool = False):
    shown = ax.imshow(image, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)


def _comparison_row(fig: Figure, axes, lq: np.ndarray, output: np.ndarray, gt: np.ndarray, name: str = "") -> None:
    """input | output | target | |output - target| on four axes (the error map with its own colour bar)."""
    vmax = float(max(lq.max(), output.max(), gt.max(), 1e-12))  # one intensity scale for the three images
    error = np.abs(output - gt)
    prefix = f"{name}: " if name else ""
    for ax, image, label in zip(axes, (lq, output, gt), (f"{prefix}input", "output", "target")):
        _panel(fig, ax, image, label, IMAGE_CMAP, vmax)
    _panel(fig, axes[3], error, "|output - target|", ERROR_CMAP, float(max(error.max(), 1e-12)), colorbar=True)


def save_comparison(
    path: str | Path, lq: np.ndarray, output: np.ndarray, gt: np.ndarray, title: str = "", overwrite: bool = False
) -> Path:
    """input | output | target | |output - target| (the error map with its own colour bar)."""
    fig = Figure(figsize=(4 * PANEL_INCHES + 0.6, PANEL_INCHES + 0.4))
    _comparison_row(fig, fig.subplots(1, 4), lq, output, gt)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, overwrite)


def save_rows(
    path: str | Path, rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], overwrite: bool = False
) -> Path:
    """One comparison row (input | output | target | error map) per (name, input, output, target)."""
    if not rows:
        raise ValueError("save_rows needs at least one row")
    fig = Figure(figsize=(4 * PANEL_INCHES + 0.6, len(rows) * (PANEL_INCHES + 0.2)))
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for ax_row, (name, lq, output, gt) in zip(axes, rows):
        _comparison_row(fig, ax_row, lq, output, gt, name)
    return _save(fig, path, overwrite)


def save_grid(
    path: str | Path,
    rows: list[tuple[str, np.ndarray, dict[str, np.ndarray], np.ndarray]],
    overwrite: bool = False,
) -> Path:
    """Rows of (image name, input, {method: output}, target); methods in dict order, the same for every row.

    Under each image row the error maps |output - target| share one scale per image (colour bar at right).
    """
    if not rows:
        raise ValueError("save_grid needs at least one image row")
    methods = list(rows[0][2])
    ncols = len(methods) + 2
    fig = Figure(figsize=(ncols * PANEL_INCHES + 0.6, 2 * len(rows) * PANEL_INCHES))
    axes = fig.subplots(2 * len(rows), ncols, squeeze=False)
    for r, (name, lq, outputs, gt) in enumerate(rows):
        if list(outputs) != methods:
            raise ValueError(f"image {name!r} has methods {list(outputs)}, expected {methods}")
        top, bottom = axes[2 * r], axes[2 * r + 1]
        vmax = float(max(lq.max(), gt.max(), *(o.max() for o in outputs.values()), 1e-12))
        errors = {m: np.abs(o - gt) for m, o in outputs.items()}
        emax = float(max(*(e.max() for e in errors.values()), 1e-12))
        _panel(fig, top[0], lq, f"{name}: input", IMAGE_CMAP, vmax)
        _panel(fig, top[-1], gt, "target", IMAGE_CMAP, vmax)
        for c, method in enumerate(methods, start=1):
            _panel(fig, top[c], outputs[method], method, IMAGE_CMAP, vmax)
            _panel(fig, bottom[c], errors[method], f"{method} error", ERROR_CMAP, emax, colorbar=c == len(methods))
        bottom[0].axis("off")
        bottom[-1].axis("off")
    return _save(fig, path, overwrite)


def save_profiles(
    path: str | Path,
    images: dict[str, np.ndarray],
    spacing_mm: float,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Line profiles through the centre of each (S, S) image ({curve name: image}, e.g. input, output,
    target of one point source): along x (the row) and along z (the column), each curve scaled to its own
    peak so that widths compare, with the half-maximum level drawn."""
    if not images:
        raise ValueError("save_profiles needs at least one image")
    fig = Figure(figsize=(2 * PANEL_INCHES * 1.6, PANEL_INCHES * 1.3))
    axes = fig.subplots(1, 2)
    for ax, axis in zip(axes, ("x", "z")):
        for name, image in images.items():
            c = image.shape[0] // 2
            profile = np.asarray(image[c, :] if axis == "x" else image[:, c], np.float64)
            offsets = (np.arange(len(profile)) - c) * spacing_mm
            ax.plot(offsets, profile / max(profile.max(), 1e-12), label=name, lw=1.2,
                    drawstyle="steps-mid" if name == "target" else "default")
        ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
        ax.set_xlim(-min(c * spacing_mm, 8.0), min(c * spacing_mm, 8.0))  # wide enough for 4 T/m's 4.9 mm FWHM
        ax.set_xlabel(f"offset along {axis} (mm)", fontsize=9)
        ax.set_title(f"profile along {axis}", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0].set_ylabel("signal / peak", fontsize=9)
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10, y=1.04)
    return _save(fig, path, overwrite)
