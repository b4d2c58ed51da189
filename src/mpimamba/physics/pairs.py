"""Training pairs (anisotropic input, target) from phantoms, with either forward model.

Recipe for one pair, every random choice drawn from the caller's generator in a fixed order:
1. a phantom p of a category drawn uniformly (max 1) and the per-pair draws: scan axis, gradient, concentration c,
   background b, pixel spacing, SNR (each a fixed value or a (low, high) range sampled uniformly; a fixed
   value draws nothing, so adding a range never changes the pairs of a protocol without one);
2. the clean native image n = A_scan(p) for the forward model A (PSF: c ⊛ h by FFT; x-space: a Cartesian
   raster along the scan axis imaged by the time-domain operator, "scanner-like");
3. the input lq = c·n + b·max(n) + noise, noise ~ N(0, σ²) with σ = max(n)·10^(−SNR/20): the SNR is set
   at unit concentration, so a dilute sample (c < 1) is noisier relative to its own signal, as on a
   scanner; b is a background offset as a fraction of the same unit peak;
4. the target gt: "phantom" = p (the authors' choice), or "isotropic" = (A_x(p) + A_z(p))/2, the mean of
   the two scan directions of a two-direction scanner mode (noise-free);
5. normalisation (the authors' rule): each image is divided by its own maximum, then clipped to [0, 1]
   (noise can dip below 0). The absolute concentration therefore only shows through the noise and the
   background level. What the normalisation removes is kept for scoring as `target_scale`: the factor
   that puts the normalised target into the normalised input's units, c·max(gt)/max(lq) before either is
   divided (for the phantom target, lq = A(target_scale·gt) + offset + noise with the forward model A of
   step 2, whose PSF is 1 at its centre): a restoration's mass can then be compared with the target's in the
   units the input measured (`eval.quantitative.input_units_mass_ratio`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .langevin import Particle
from .phantoms import CATEGORIES, DEFAULT_CATEGORIES, glyphs
from .psf import fft_convolve, kernel_spectrum, psf, psf_kernel
from .xspace import XSpaceOperator, lissajous, raster

Range = float | tuple[float, float]


@dataclass(frozen=True)
class PairConfig:
    """How pairs are made. Ranges are (low, high) tuples sampled uniformly per pair."""

    scan: str = "x"  # drive axis of the input: "x", "z" or "random" (each pair picks one)
    target: str = "phantom"  # "phantom" (the concentration map) or "isotropic" (mean of x and z scans)
    model: str = "psf"  # "psf" (fast FFT model) or "xspace" (time-domain simulator, built once per protocol)
    trajectory: str = "raster"  # xspace model: "raster" (Cartesian, along the scan axis) or "lissajous" (the
    # authors' 25 / 24.75 kHz figure over the whole field of view; the scan axis then plays no part)
    gradient: Range = 9.0  # T/m, isotropic; a range is sampled per pair (psf model only)
    snr_db: Range | None = None  # None = noise-free
    background: Range = 0.0  # constant offset, fraction of the unit-concentration peak
    concentration: Range = 1.0  # relative to the concentration at which snr_db holds
    spacing_mm: Range = 0.25  # pixel spacing; a range is sampled per pair (psf model only)
    categories: tuple[str, ...] | None = None  # phantom categories (None = DEFAULT_CATEGORIES, + "glyphs")
    font: str | None = None  # a TrueType font file: adds the "glyphs" category (text in that font)

    def __post_init__(self):
        for name, value, allowed in (("scan", self.scan, ("x", "z", "random")),
                                     ("target", self.target, ("phantom", "isotropic")),
                                     ("model", self.model, ("psf", "xspace")),
                                     ("trajectory", self.trajectory, ("raster", "lissajous"))):
            if value not in allowed:
                raise ValueError(f"PairConfig.{name} must be one of {allowed}, got {value!r}")
        if self.trajectory == "lissajous" and self.model != "xspace":
            raise ValueError("PairConfig: a Lissajous trajectory needs the time-domain model (model='xspace')")
        if self.trajectory == "lissajous" and self.target == "isotropic":
            raise ValueError("PairConfig: target 'isotropic' (the mean of an x and a z scan) needs Cartesian scans; "
                             "a Lissajous scan has no scan axis")
        for name in ("gradient", "spacing_mm"):
            if self.model == "xspace" and not np.isscalar(getattr(self, name)):
                flag = {"gradient": "--gradient G", "spacing_mm": "--spacing MM"}[name]
                raise ValueError(f"PairConfig: the xspace model builds one operator per protocol, so it needs a "
                                 f"single {name}, got the range {getattr(self, name)!r} (pass {flag})")
        for name in ("gradient", "concentration", "spacing_mm"):
            _check_range(name, getattr(self, name), lambda v: v > 0, "positive")
        _check_range("background", self.background, lambda v: v >= 0, "non-negative")
        if self.snr_db is not None:
            _check_range("snr_db", self.snr_db, lambda v: True, "finite")
        known = set(CATEGORIES) | ({"glyphs"} if self.font else set())
        unknown = set(self.categories or ()) - known
        if unknown:
            raise ValueError(f"PairConfig.categories: unknown {sorted(unknown)}; expected {sorted(known)}"
                             + ("" if self.font else " (\"glyphs\" needs a font)"))
        if self.font:
            _glyph_generator(self.font)  # a missing or unreadable font fails here, not mid-stream


@lru_cache(maxsize=4)
def _glyph_generator(font: str):
    return glyphs(font)


def _phantom_pool(config: PairConfig) -> list[str]:
    """The category names to draw phantoms from."""
    return list(config.categories or (*DEFAULT_CATEGORIES, *(["glyphs"] if config.font else [])))


def _phantom(rng: np.random.Generator, size: int, pool: list[str], config: PairConfig) -> tuple[str, np.ndarray]:
    """(category, phantom): a category drawn uniformly from `pool`, then its phantom (the draws of
    `random_phantom`, which this unpacks to learn the category)."""
    name = pool[int(rng.integers(len(pool)))]
    generator = _glyph_generator(config.font) if name == "glyphs" else CATEGORIES[name]
    return name, generator(rng, size)


def _check_range(name: str, value, valid, kind: str) -> None:
    """A number, or a (low, high) pair with low <= high, every value finite and `valid`."""
    values = [value] if np.isscalar(value) else list(value)
    ok = len(values) in (1, 2) and all(np.isfinite(v) and valid(v) for v in values)
    if not ok or (len(values) == 2 and values[0] > values[1]):
        raise ValueError(f"PairConfig.{name} must be a {kind} number or a (low, high) range, got {value!r}")


def _draw(rng: np.random.Generator, value: Range, count: int) -> np.ndarray:
    """`count` values: the constant, or uniform draws in the (low, high) range."""
    if np.isscalar(value):
        return np.full(count, float(value))
    return rng.uniform(value[0], value[1], count)


@lru_cache(maxsize=8)
def _fixed_spectrum(size: int, drive: str, spacing_mm: float, gradient: float) -> torch.Tensor:
    return kernel_spectrum(psf_kernel((size, size), drive, spacing_mm, gradient))  # (2S, S+1)


def psf_spectra(size: int, drive: str, spacings: np.ndarray, gradients: np.ndarray) -> torch.Tensor:
    """Kernel spectra for each pair's (spacing, gradient): (1, 2S, S+1) when all pairs agree (cached),
    else (N, 2S, S+1)."""
    if np.ptp(spacings) == 0 and np.ptp(gradients) == 0:
        return _fixed_spectrum(size, drive, float(spacings[0]), float(gradients[0]))[None]
    # ξ = k·G·r with r = (pixel offset)·spacing: the kernel depends on G·spacing only, so every pair's
    # kernel is the unit-gradient kernel at pixel offsets scaled by its G·spacing (one call for all)
    unique, inverse = np.unique(gradients * spacings, return_inverse=True)
    off = np.arange(-(size - 1), size, dtype=np.float64)
    g = unique[:, None, None]
    kernels = psf(off[None, :, None] * g, off[None, None, :] * g, drive, gradient=1.0)  # (U, 2S-1, 2S-1)
    return kernel_spectrum(kernels)[torch.from_numpy(inverse.ravel())]


@lru_cache(maxsize=2)
def xspace_raster_operator(size: int, drive: str, spacing_mm: float, gradient: float) -> XSpaceOperator:
    """The scanner-like protocol: a raster of one line per pixel row, one sample per pixel and line.

    Memory 4·size⁴ bytes (67 MB at 64×64, 1 GB at 128×128); cached, so a stream builds it once.
    """
    fov = size * spacing_mm
    trajectory = raster(drive, (fov, fov), lines=size, samples_per_line=size)
    return XSpaceOperator(trajectory, (size, size), spacing_mm, gradient, Particle())


@lru_cache(maxsize=2)
def xspace_lissajous_operator(size: int, spacing_mm: float, gradient: float) -> XSpaceOperator:
    """The authors' protocol: their Lissajous figure (25 / 24.75 kHz, 9,900 samples at 2.475 MHz) sweeping
    the whole field of view, ±size·spacing/2 (±15 mm for their 120 px of 0.25 mm). Memory 4·9,900·size²
    bytes (162 MB at 64×64, 570 MB at 120×120); cached."""
    return XSpaceOperator(lissajous(amplitude_mm=size * spacing_mm / 2), (size, size), spacing_mm, gradient,
                          Particle())


def _native(phantoms: np.ndarray, drives: np.ndarray, gradients: np.ndarray, spacings: np.ndarray,
            config: PairConfig) -> np.ndarray:
    """Clean native images (N, S, S) of phantoms (N, S, S), pair i scanned along drives[i] at gradients[i]
    with pixels of spacings[i] mm."""
    size = phantoms.shape[-1]
    if config.trajectory == "lissajous":  # one 2-D trajectory for every pair: no scan axis
        return xspace_lissajous_operator(size, float(spacings[0]), float(gradients[0]))(phantoms)
    out = np.empty_like(phantoms)
    for drive in ("x", "z"):
        sel = drives == drive
        if not sel.any():
            continue
        if config.model == "psf":
            spectra = psf_spectra(size, drive, spacings[sel], gradients[sel])
            out[sel] = fft_convolve(torch.from_numpy(phantoms[sel]), spectra).numpy()  # one batched FFT
        else:  # PairConfig guarantees a single gradient and spacing for the x-space model
            operator = xspace_raster_operator(size, drive, float(spacings[0]), float(gradients[0]))
            out[sel] = operator(phantoms[sel])
    return out


def _peaks(images: np.ndarray) -> np.ndarray:
    """(N,) maximum of each image."""
    return images.reshape(len(images), -1).max(axis=1)


def _inverse_peaks(images: np.ndarray) -> np.ndarray:
    """(N,) 1 / maximum of each image, 0 where the maximum is not positive (all-zero images stay zero)."""
    peak = _peaks(images)
    return np.where(peak > 0, 1.0 / np.where(peak > 0, peak, 1.0), 0.0)


def _normalise(images: np.ndarray) -> np.ndarray:
    """Divide each image by its maximum and clip to [0, 1] (all-zero images stay zero)."""
    return np.clip(images * _inverse_peaks(images)[:, None, None], 0.0, 1.0).astype(np.float32)


def make_pairs(rng: np.random.Generator, config: PairConfig, size: int, count: int, details: bool = False):
    """`count` pairs (lq, gt), each float32 (count, size, size) in [0, 1]; see the module doc for the recipe.

    With `details`, also what each pair was drawn with: (lq, gt, {"categories": [name, ...], "scans":
    (N,) "x"/"z", "gradients": (N,) T/m, "spacings": (N,) mm, "snr_db": (N,) dB, inf when noise-free,
    "target_scale": (N,) the target in the input's units, see the module doc}).
    """
    if size < 8 or count < 1:
        raise ValueError(f"make_pairs: need size >= 8 and count >= 1, got size={size}, count={count}")
    pool = _phantom_pool(config)
    drawn = [_phantom(rng, size, pool, config) for _ in range(count)]
    categories = [name for name, _ in drawn]
    phantoms = np.stack([phantom for _, phantom in drawn])
    scans = rng.choice(["x", "z"], count) if config.scan == "random" else np.full(count, config.scan)
    gradients = _draw(rng, config.gradient, count)
    conc = _draw(rng, config.concentration, count)
    background = _draw(rng, config.background, count)
    spacings = _draw(rng, config.spacing_mm, count)

    native = _native(phantoms, scans, gradients, spacings, config)  # (N, S, S) at unit concentration
    peak = _peaks(native)[:, None, None]
    lq = conc[:, None, None] * native + background[:, None, None] * peak
    snr_db = np.full(count, np.inf)
    if config.snr_db is not None:
        snr_db = _draw(rng, config.snr_db, count)
        sigma = peak * 10.0 ** (-snr_db[:, None, None] / 20.0)
        lq = lq + sigma * rng.standard_normal(lq.shape)
    if config.target == "phantom":
        gt = phantoms
    else:
        gt = 0.5 * sum(_native(phantoms, np.full(count, d), gradients, spacings, config) for d in ("x", "z"))
    if details:
        # the concentration map in the input's units is c·gt_raw / max(lq_raw) = target_scale · (normalised gt)
        target_scale = conc * _peaks(gt) * _inverse_peaks(lq)
        drawn = {"categories": categories, "scans": scans, "gradients": gradients, "spacings": spacings,
                 "snr_db": snr_db, "target_scale": target_scale}
        return _normalise(lq), _normalise(gt), drawn
    return _normalise(lq), _normalise(gt)


def make_pair(rng: np.random.Generator, config: PairConfig, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One pair (lq, gt), float32 (size, size) in [0, 1]."""
    lq, gt = make_pairs(rng, config, size, 1)
    return lq[0], gt[0]
