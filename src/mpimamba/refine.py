"""Physics consistency: does the restored image, blurred again by the scan's own PSF, give back the input?

The forward model of a Cartesian x-space scan is known once the user gives the drive axis, the gradient
and the pixel spacing (`ScanGeometry`): native image = c ⊛ h (`physics.psf`). A restoration x is
consistent with the measured input y when s·A(x) + b ≈ y for one scale s and one constant offset b,
both fitted in closed form by least squares: the images are max-normalised, so their absolute scale is
unknown, and scanners leave a background offset that no concentration map could explain (the design
asks for the scale alone; without the offset, a background of a few per cent would be "explained" by
adding tracer everywhere).

`refine(x0, y, geometry)` fits s and b once to the network's output x0, then takes a bounded number of
projected gradient steps on

    ½‖s·A(x) + b − y‖² + ½·μ·‖x − x0‖²,   subject to x ≥ 0 and x = 0 outside the support,

re-fitting only b. s stays fixed: with s free, a hollow output is "consistent" at a larger s, and the
map's scale (which the network learned: the brightest pixel is 1) would drift. It stops as soon as the
residual RMS falls to the input's noise level (Morozov's discrepancy principle: fitting the noise as well
would only amplify it), or after `iterations` steps. μ (`stay`) keeps the result near the network's
output where the data say nothing (the PSF's null space: fine detail the blur erased). The support
(`support_of`) is where the network put tracer, grown by two pixels, with enclosed holes filled: without
it the steps add speckle to the empty background (measured: SSIM falls by 0.05); with it a hollow
outline may still fill in. The noise level is estimated from the input itself (`noise_sigma`) unless
given.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .physics.psf import PSFForward, fft_convolve

SUPPORT_LEVEL, SUPPORT_GROW = 0.05, 2


@dataclass(frozen=True)
class ScanGeometry:
    scan: str  # drive axis, "x" (columns) or "z" (rows)
    gradient: float  # T/m
    spacing_mm: float

    @classmethod
    def from_blur(cls, scan: str, blur: float) -> "ScanGeometry":
        """The geometry of a scan known by gradient·spacing (T/m·mm) alone, which is all the x-space PSF
        depends on (ξ = k·G·r, r = pixel offset·spacing): pixels of 1 mm at that gradient."""
        return cls(scan, float(blur), 1.0)

    def __post_init__(self):
        if self.scan not in ("x", "z"):
            raise ValueError(f"scan axis must be 'x' or 'z', got {self.scan!r}")
        for name, flag in (("gradient", "--gradient"), ("spacing_mm", "--spacing")):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} ({flag}) must be a positive number, got {value!r}")


@dataclass(frozen=True)
class Refinement:
    image: np.ndarray  # the refined image, float32 (H, W), >= 0
    iterations: int
    residual_before: float  # RMS of s·A(x) + b − y for the network's output
    residual_after: float
    noise_sigma: float
    scale: float  # the final s
    offset: float  # the final b


class Forward(PSFForward):
    """x -> A(x) for (H, W) images of one geometry: the simulator's PSF model; A is self-adjoint because the
    x-space PSF is symmetric, h(−r) = h(r)."""

    def __init__(self, shape: tuple[int, int], geometry: ScanGeometry):
        super().__init__(shape, geometry.scan, geometry.spacing_mm, geometry.gradient)
        self.norm2 = float(self.spectrum.abs().max()) ** 2  # ‖A‖² <= max |ĥ|²: a safe step size


def noise_sigma(image: np.ndarray) -> float:
    """Gaussian noise level of an image from the median absolute deviation of neighbouring-pixel
    differences (robust to the few pixels where the signal itself changes fast). Pairs of pixels that
    are both exactly zero are left out: a background clipped or thresholded to 0 carries no noise
    to measure, and would make the estimate 0 (and the refinement fit the noise elsewhere)."""
    a = np.asarray(image, np.float64)
    pairs = [(np.diff(a, axis=k), (a[1:] != 0) | (a[:-1] != 0) if k == 0 else (a[:, 1:] != 0) | (a[:, :-1] != 0))
             for k in (0, 1)]
    d = np.concatenate([diff[kept] for diff, kept in pairs])
    if d.size == 0:
        return 0.0
    mad = np.median(np.abs(d - np.median(d)))
    return float(1.4826 * mad / np.sqrt(2.0))  # differences of two samples carry twice the variance


def support_of(x0: np.ndarray, level: float = SUPPORT_LEVEL, grow: int = SUPPORT_GROW) -> np.ndarray:
    """Where tracer may be: the network output above `level` of its peak, grown by `grow` pixels, with
    enclosed holes filled (a hollow outline's interior is inside its support). float32 0/1 mask."""
    from scipy import ndimage

    peak = float(np.max(x0))
    if peak <= 0:
        return np.ones(x0.shape, np.float32)
    mask = ndimage.binary_dilation(x0 > level * peak, iterations=grow)
    return ndimage.binary_fill_holes(mask).astype(np.float32)


def best_fit(ax: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(s, b) minimising ‖s·ax + b − y‖² (s = 0, b = mean y when ax is constant)."""
    ax_c, y_c = ax - ax.mean(), y - y.mean()
    energy = float((ax_c * ax_c).sum())
    s = float((ax_c * y_c).sum()) / energy if energy > 0 else 0.0
    return s, float(y.mean()) - s * float(ax.mean())


def _rms(ax: torch.Tensor, y: torch.Tensor, s: float, b: float) -> float:
    return float((s * ax + b - y).pow(2).mean().sqrt())


@lru_cache(maxsize=8)
def _forward(shape: tuple[int, int], geometry: ScanGeometry) -> Forward:
    """One forward model per (shape, geometry): scoring a set builds each pair's PSF spectrum once for every
    model restoring it."""
    return Forward(shape, geometry)


def fit_to_input(x, y, geometry: ScanGeometry) -> tuple[float, float, float]:
    """(s, b, RMS of s·A(x) + b − y) with the best scale s and offset b of x's blur to the input y."""
    x_t, y_t = (torch.as_tensor(np.asarray(a, np.float32)) for a in (x, y))
    ax = _forward(tuple(y_t.shape), geometry)(x_t)
    s, b = best_fit(ax, y_t)
    return s, b, _rms(ax, y_t, s, b)


def residual_rms(x, y, geometry: ScanGeometry) -> float:
    """RMS of s·A(x) + b − y with the best s and b: how far x is from explaining the input."""
    return fit_to_input(x, y, geometry)[2]


def refine(x0, y, geometry: ScanGeometry, iterations: int = 100, stay: float = 0.05,
           sigma: float | None = None, use_support: bool = True) -> Refinement:
    """Refine the network output `x0` towards consistency with the input `y` (both (H, W)); see the module doc."""
    x0 = np.asarray(x0, np.float32)
    y = np.asarray(y, np.float32)
    if x0.shape != y.shape or x0.ndim != 2:
        raise ValueError(f"refine needs an output and an input of one (H, W) shape, got {x0.shape} and {y.shape}")
    if iterations < 0 or stay < 0:
        raise ValueError(f"iterations and stay must be >= 0, got {iterations} and {stay}")
    sigma = noise_sigma(y) if sigma is None else float(sigma)
    forward = Forward(y.shape, geometry)
    y_t, start = torch.from_numpy(y), torch.from_numpy(np.clip(x0, 0, None))
    support = torch.from_numpy(support_of(x0)) if use_support else None
    x = start.clone()
    ax = forward(x)
    s, b = best_fit(ax, y_t)
    before = rms = _rms(ax, y_t, s, b)
    done = 0
    while done < iterations and rms > sigma and s > 0:
        step = 1.0 / (s * s * forward.norm2 + stay)
        grad = s * forward(s * ax + b - y_t) + stay * (x - start)  # Aᵀ = A (symmetric PSF)
        x = (x - step * grad).clamp_(min=0.0)
        if support is not None:
            x = x * support
        ax = forward(x)
        b = float((y_t - s * ax).mean())  # s stays the network's: the refinement may not rescale the map
        rms = _rms(ax, y_t, s, b)
        done += 1
    return Refinement(x.numpy(), done, before, rms, sigma, s, b)


class RefinedRestoration:
    """A restoration followed by `refine` against its own input: what `calibrate --physics` runs per image."""

    def __init__(self, restoration, geometry: ScanGeometry, iterations: int = 100):
        if iterations < 1:
            raise ValueError(f"--physics-iterations must be at least 1, got {iterations}")
        self.restoration, self.geometry, self.iterations = restoration, geometry, iterations

    def __call__(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        return refine(self.restoration(image, name=name), image, self.geometry, self.iterations).image


def consistency_loss(out: torch.Tensor, lq: torch.Tensor, geometry: torch.Tensor, margin: int | None = None) -> torch.Tensor:
    """The physics-consistency training term: mean over the batch of ‖s·A(out) + b − lq‖² / ‖lq − mean lq‖²
    on the interior (`margin` pixels in from every edge, default an eighth of the side), with each pair's own PSF and its closed-form
    least-squares s and b (not differentiated: the term asks the output to explain the input's shape, not
    to change its scale). out, lq: (B, 1, P, P); geometry: (B, 2) from `Protocol.geometry` (scan axis,
    gradient·spacing); pairs with a NaN geometry (no single PSF) count 0.

    The interior: the input patch also holds blur from tracer outside the patch, which no output of the
    patch can explain; the margin cuts the worst of it (the normal envelope's reach), the offset b the
    rest of the smooth tail.
    """
    from .physics.pairs import psf_spectra  # the simulator's own batched kernel spectra: one PSF definition

    b, _, h, w = out.shape
    if h != w:
        raise ValueError(f"consistency_loss expects square patches, got {h}x{w}")
    margin = h // 8 if margin is None else margin
    valid = torch.isfinite(geometry[:, 1])
    losses = out.new_zeros(b)
    for is_x in (True, False):
        sel = valid & ((geometry[:, 0] > 0.5) == is_x)
        if not sel.any():
            continue
        blur = geometry[sel, 1].double().cpu().numpy()
        spectra = psf_spectra(h, "x" if is_x else "z", np.ones_like(blur), blur).to(out.device)  # (n|1, 2P, P+1)
        ax = fft_convolve(out[sel, 0], spectra)  # (n, P, P)
        y = lq[sel, 0]
        inner = (slice(None), slice(margin, h - margin), slice(margin, w - margin))
        ax, y = ax[inner], y[inner]
        with torch.no_grad():
            ax_c, y_c = ax - ax.mean(dim=(1, 2), keepdim=True), y - y.mean(dim=(1, 2), keepdim=True)
            s = (ax_c * y_c).sum(dim=(1, 2)) / (ax_c * ax_c).sum(dim=(1, 2)).clamp_min(1e-12)
            offset = y.mean(dim=(1, 2)) - s * ax.mean(dim=(1, 2))
            energy = (y_c * y_c).sum(dim=(1, 2)).clamp_min(1e-12)
        residual = s[:, None, None] * ax + offset[:, None, None] - y
        losses[sel] = (residual * residual).sum(dim=(1, 2)) / energy
    return losses.mean()
