"""What an MPI lab measures in a restored image besides PSNR: is the tracer where and how much it should be?

All functions take 2-D float images (H, W) in the scoring convention (the target as it is on disk, the
output as `infer.Restoration` gives it) and return plain floats; NaN where a quantity does not apply to
the image (no filled region, fewer than three dots).

    mass ratio          sum(output) / sum(target): 1 when the total amount of tracer is preserved.
    interior fill       mean(output) / mean(target) over the target's filled regions (target >= FILLED of
                        its maximum) eroded by ERODE pixels: 1 when a filled region comes back filled, ~0
                        when it comes back as an outline (hollow).
    negative fraction   share of pixels below zero (concentrations cannot be negative).
    input-units mass    the mass ratio with both images in the units the input measured, for pairs whose
                        forward model and normalisation are known (simulated ones): the output times its
                        least-squares scale s to explain the input through the scan's PSF (with an offset;
                        `refine.fit_to_input`, from the input alone, as a user with the scan geometry could),
                        against the target times the simulator's `target_scale`. Both images are divided by
                        their own maximum, so the plain mass ratio also scores the ratio of the hottest,
                        smallest structure to the rest (the peak the blur determines least); this one does
                        not depend on the output's own scale (its maximum), only on how much tracer it places
                        where (the fitted s also follows the output's shape). Only for the phantom target
                        (a concentration map): an isotropic target is itself a blurred image.
    linearity           on a sensitivity phantom (dots of graded concentration): each dot's mean in the
                        output against its mean in the target, both over the dot (target above 0.1 % of
                        its peak) eroded by one pixel; the
                        least-squares line through the dots gives slope, intercept and R². An image is
                        linear in the concentration when R² ≈ 1 and, with both images on the same scale,
                        the slope ≈ 1.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FILLED = 0.25  # a pixel is "filled" at >= this share of the target's maximum
ERODE = 3  # pixels removed from the edge of filled regions: the blur at edges is resolution, not fill
DOT_ERODE = 1
DOT_LEVEL = 1e-3  # a sensitivity dot is where the target exceeds this share of its peak
QUANTITIES = ("mass_ratio", "interior_fill", "negative_fraction")
INPUT_MASS = "input_mass_ratio"  # input_units_mass_ratio's column: pairs whose PSF and target_scale are known
LINEARITY = ("linearity_slope", "linearity_r2")


def finite_mean(values) -> float:
    """The mean of the finite values (a quantity that does not apply to an image is NaN); NaN if none."""
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    return float(values[finite].mean()) if finite.any() else float("nan")


def _check(out: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out, gt = np.asarray(out), np.asarray(gt)
    if out.shape != gt.shape or out.ndim != 2:
        raise ValueError(f"expected two (H, W) images of one shape, got {out.shape} and {gt.shape}")
    return out, gt


def mass_ratio(out, gt) -> float:
    out, gt = _check(out, gt)
    total = float(gt.sum(dtype=np.float64))
    return float(out.sum(dtype=np.float64)) / total if total > 0 else float("nan")


def input_units_mass_ratio(out, gt, lq, geometry, target_scale: float) -> float:
    """sum(s·out) / sum(target_scale·gt), s the best scale of the output's blur to the input `lq` (see the
    module doc); `geometry` a `refine.ScanGeometry`. NaN when the target holds nothing."""
    from ..refine import fit_to_input  # the forward model (torch) only where this is scored

    out, gt = _check(out, gt)
    total = float(gt.sum(dtype=np.float64)) * float(target_scale)
    if not total > 0:
        return float("nan")
    scale = fit_to_input(out, lq, geometry)[0]
    return scale * float(out.sum(dtype=np.float64)) / total


def interior_mask(gt, filled: float = FILLED, erode: int = ERODE) -> np.ndarray:
    """The target's filled regions, shrunk by `erode` pixels (a boolean (H, W) mask; may be empty)."""
    gt = np.asarray(gt)
    peak = float(gt.max())
    if peak <= 0:
        return np.zeros(gt.shape, bool)
    mask = gt >= filled * peak
    return ndimage.binary_erosion(mask, iterations=erode) if erode > 0 else mask


def interior_fill(out, gt, filled: float = FILLED, erode: int = ERODE) -> float:
    out, gt = _check(out, gt)
    mask = interior_mask(gt, filled, erode)
    if not mask.any():
        return float("nan")
    return float(out[mask].mean(dtype=np.float64) / gt[mask].mean(dtype=np.float64))


def negative_fraction(out) -> float:
    return float(np.mean(np.asarray(out) < 0))


def dot_means(out, gt, erode: int = DOT_ERODE, level: float = DOT_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """(target means, output means) over each dot (connected region of target > `level` of its peak: a
    sensitivity phantom's faintest dot is 1/256 of the brightest, and a blurred or noisy target is above
    zero everywhere), eroded by `erode` pixels. Dots that vanish under the erosion are measured unshrunk,
    so faint small dots still count."""
    out, gt = _check(out, gt)
    peak = float(gt.max())
    if peak <= 0:
        return np.zeros(0), np.zeros(0)
    labels, count = ndimage.label(gt > level * peak)
    if count == 0:
        return np.zeros(0), np.zeros(0)
    index = np.arange(1, count + 1)
    eroded = ndimage.binary_erosion(labels > 0, iterations=erode) if erode > 0 else labels > 0
    core_of = np.where(eroded, labels, 0)  # each remaining pixel keeps its dot's label
    kept = np.asarray(ndimage.sum(eroded, labels, index)) > 0
    regions = np.where(np.isin(labels, index[~kept]), labels, core_of)  # vanished dots: measured unshrunk
    true = np.asarray(ndimage.mean(gt.astype(np.float64), regions, index))
    restored = np.asarray(ndimage.mean(out.astype(np.float64), regions, index))
    return true, restored


def linearity(out, gt) -> dict[str, float]:
    """{"linearity_slope", "linearity_intercept", "linearity_r2"} of the dots of a sensitivity phantom."""
    return fit_line(*dot_means(out, gt))


def fit_line(true: np.ndarray, restored: np.ndarray) -> dict[str, float]:
    """The least-squares line restored ≈ slope·true + intercept and its R² (NaN for fewer than 3 dots)."""
    nan = {"linearity_slope": float("nan"), "linearity_intercept": float("nan"), "linearity_r2": float("nan")}
    if len(true) < 3 or np.ptp(true) == 0:
        return nan
    slope, intercept = np.polyfit(true, restored, 1)
    residual = restored - (slope * true + intercept)
    spread = float(((restored - restored.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / spread if spread > 0 else float("nan")
    return {"linearity_slope": float(slope), "linearity_intercept": float(intercept), "linearity_r2": r2}


def quantities(out, gt, sensitivity: bool = False) -> dict[str, float]:
    """Every quantity above for one image; the linearity ones only on a sensitivity phantom (else NaN)."""
    values = {"mass_ratio": mass_ratio(out, gt), "interior_fill": interior_fill(out, gt),
              "negative_fraction": negative_fraction(out)}
    lin = linearity(out, gt) if sensitivity else {}
    values.update({k: lin.get(k, float("nan")) for k in LINEARITY})
    return values
