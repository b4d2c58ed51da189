"""Spatial resolution per axis, in millimetres, as MPI papers report it: FWHM and smallest resolved spacing.

A fixed chart of point sources is simulated with a protocol's forward model (noise-free, so the numbers
measure blur, not noise), restored like any input, and measured along x (columns) and z (rows):

    FWHM                 of one isolated point source: the width of its profile at half its peak, the
                         half-maximum crossings found by linear interpolation between pixel centres.
    resolved spacing     the smallest tested separation s (pixels × spacing) of two point sources along the
                         axis such that the pair at s and every larger tested pair are resolved. A pair is
                         resolved by the Rayleigh-like dip criterion: the profile between the two sources
                         falls at least RAYLEIGH_DIP = 26.4 % below the lower of the two peaks (the dip
                         between two Airy patterns at Rayleigh's separation).
    anisotropy           FWHM along z / FWHM along x (1 = isotropic; a x-scan input is broader across the
                         drive axis, so > 1).

The chart: one image with a single-pixel source at the centre, and one image per tested separation and
axis with two single-pixel sources placed symmetrically about the centre. The target of every chart
image is the sources themselves (FWHM one pixel). For a protocol with ranges the chart uses their
midpoints; a "random" scan is charted as an x scan. The chart always uses the PSF model (the x-space
theorem makes the raster simulator agree with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..physics.pairs import PairConfig
from ..physics.psf import PSFForward

RAYLEIGH_DIP = 0.264
CHART_SIZE = 64
SEPARATIONS = tuple(range(2, 25))  # pixels
COLUMNS = ("fwhm_x_mm", "fwhm_z_mm", "resolved_spacing_x_mm", "resolved_spacing_z_mm", "anisotropy_z_x")


@dataclass(frozen=True)
class ChartSetting:
    """The one scan the chart is simulated with."""

    scan: str = "x"
    gradient: float = 9.0  # T/m
    spacing_mm: float = 0.25

    @classmethod
    def of(cls, pairs: PairConfig) -> "ChartSetting":
        def mid(value) -> float:
            return float(value) if np.isscalar(value) else float(np.mean(value))

        return cls(scan="x" if pairs.scan == "random" else pairs.scan, gradient=mid(pairs.gradient),
                   spacing_mm=mid(pairs.spacing_mm))


@dataclass(frozen=True)
class Chart:
    """The chart's images: names, the source images (targets) and the simulated inputs, each (N, S, S)."""

    names: tuple[str, ...]
    targets: np.ndarray
    inputs: np.ndarray
    setting: ChartSetting


def _chart_names() -> list[str]:
    return ["dot", *(f"pair-{axis}-{s}" for axis in ("x", "z") for s in SEPARATIONS)]


def _sources(name: str, size: int) -> np.ndarray:
    image = np.zeros((size, size), np.float32)
    c = size // 2
    if name == "dot":
        image[c, c] = 1.0
        return image
    _, axis, s = name.split("-")
    s = int(s)
    first, second = c - s // 2, c - s // 2 + s  # two sources s pixels apart, straddling the centre
    if axis == "x":
        image[c, first] = image[c, second] = 1.0
    else:
        image[first, c] = image[second, c] = 1.0
    return image


def make_chart(setting: ChartSetting, size: int = CHART_SIZE) -> Chart:
    """Sources and their noise-free simulated inputs (each image divided by its maximum)."""
    names = _chart_names()
    targets = np.stack([_sources(n, size) for n in names])
    forward = PSFForward((size, size), setting.scan, setting.spacing_mm, setting.gradient)
    native = forward(torch.from_numpy(targets)).numpy()
    inputs = (native / native.reshape(len(names), -1).max(axis=1)[:, None, None]).astype(np.float32)
    return Chart(tuple(names), targets, inputs, setting)


def fwhm(profile: np.ndarray, spacing: float = 1.0) -> float:
    """Full width at half maximum of a 1-D profile around its highest sample (NaN if it never halves)."""
    p = np.asarray(profile, np.float64)
    peak = int(np.argmax(p))
    half = p[peak] / 2
    if p[peak] <= 0:
        return float("nan")

    def crossing(step: int) -> float | None:
        i = peak
        while 0 <= i + step < len(p):
            if p[i + step] < half:  # between i and i + step: interpolate linearly
                return i + step * (p[i] - half) / (p[i] - p[i + step])
            i += step
        return None

    left, right = crossing(-1), crossing(1)
    if left is None or right is None:
        return float("nan")
    return float((right - left) * spacing)


def pair_resolved(profile: np.ndarray, first: int, second: int) -> bool:
    """The dip criterion for two sources at samples `first` < `second` (peaks looked for within ±1 sample)."""
    p = np.asarray(profile, np.float64)
    peaks = [p[max(i - 1, 0):i + 2].max() for i in (first, second)]
    low = min(peaks)
    if low <= 0 or second - first < 2:
        return False
    valley = p[first + 1:second].min()
    return bool(valley <= (1.0 - RAYLEIGH_DIP) * low)


def _profiles(image: np.ndarray, axis: str) -> np.ndarray:
    c = image.shape[0] // 2
    return image[c, :] if axis == "x" else image[:, c]


def measure(images: np.ndarray, chart: Chart) -> dict[str, float]:
    """The COLUMNS for one set of chart images (input, target or a model's outputs), (N, S, S)."""
    index = {n: i for i, n in enumerate(chart.names)}
    spacing = chart.setting.spacing_mm
    dot = images[index["dot"]]
    result = {f"fwhm_{a}_mm": fwhm(_profiles(dot, a), spacing) for a in ("x", "z")}
    c = images.shape[-1] // 2
    for axis in ("x", "z"):
        resolved = [pair_resolved(_profiles(images[index[f"pair-{axis}-{s}"]], axis), c - s // 2, c - s // 2 + s)
                    for s in SEPARATIONS]
        smallest = float("nan")
        for s, ok in zip(reversed(SEPARATIONS), reversed(resolved)):  # from the widest pair down
            if not ok:
                break
            smallest = s * spacing
        result[f"resolved_spacing_{axis}_mm"] = smallest
    result["anisotropy_z_x"] = result["fwhm_z_mm"] / result["fwhm_x_mm"]
    return result
