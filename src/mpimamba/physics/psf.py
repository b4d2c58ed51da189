"""The x-space point spread function of a unidirectional (Cartesian) scan, and the fast forward model c ⊛ h.

For a drive along axis a the x-space PSF is (DESIGN §2)

    h_a(r) = L'(|ξ|)·(ξ_a/|ξ|)² + (L(|ξ|)/|ξ|)·(1 − (ξ_a/|ξ|)²),    ξ_i = k·G_i·r_i,

the sharp "normal" envelope L' along the drive axis plus the broad "tangential" envelope L(ξ)/ξ across it.
Both envelopes equal 1/3 at ξ = 0, so h is continuous there whatever direction ξ comes from.

Conventions (shared with `xspace`):
- images are (H, W) = (z, x): rows are z, columns are x; per-axis values are given as one number or a
  (z, x) pair; the public API takes mm and T/m, everything inside is SI (G in A/m² = (T/m)/μ0);
- pixel (i, j) is a point source at its centre, z_i = (i − (H−1)/2)·dz, x_j = (j − (W−1)/2)·dx;
- the kernel is point-sampled at pixel-centre offsets and scaled by 3 so that h(0) = 1: a single pixel of
  concentration 1 gives a peak of 1 (the physical factor m·k·G of the x-space theorem is dropped because
  every image is normalised later; the time-domain simulator uses the same scale so the two agree);
- borders: zero padding — particles outside the field of view are absent. The kernel covers every offset
  between two pixels of the image, (2H−1)×(2W−1), so nothing inside the FOV is truncated (the tangential
  tail decays only like 1/|r|, a short kernel would lose a visible share of it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .langevin import MU0, Particle, langevin_deriv, langevin_over_x

AXES = ("z", "x")  # array axis 0 is z (rows), axis 1 is x (columns)


def per_axis(value, name: str) -> tuple[float, float]:
    """A positive number or a (z, x) pair of them -> (z, x) floats."""
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(np.isfinite(v) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive number or a (z, x) pair of them, got {value!r}")
    return float(pair[0]), float(pair[1])


def drive_axis(drive: str) -> int:
    """'z' -> 0, 'x' -> 1 (the array axis the drive field moves along)."""
    if drive not in AXES:
        raise ValueError(f"drive axis must be 'x' or 'z', got {drive!r}")
    return AXES.index(drive)


def psf(offset_z_mm, offset_x_mm, drive: str, gradient=9.0, particle: Particle = Particle()) -> np.ndarray:
    """h_drive at the given offsets (mm, broadcastable arrays), scaled so that h(0) = 1."""
    gz, gx = per_axis(gradient, "gradient")
    kg = particle.k / MU0  # k·G per (T/m) of gradient, in 1/m
    xi_z = kg * gz * np.asarray(offset_z_mm, np.float64) * 1e-3
    xi_x = kg * gx * np.asarray(offset_x_mm, np.float64) * 1e-3
    xi2 = xi_z**2 + xi_x**2
    xi = np.sqrt(xi2)
    along = (xi_z, xi_x)[drive_axis(drive)]
    # cos² of the angle between ξ and the drive axis; at ξ = 0 both envelopes are 1/3, so any value works
    cos2 = np.divide(along**2, xi2, out=np.zeros_like(xi2), where=xi2 > 0)
    return 3.0 * (langevin_deriv(xi) * cos2 + langevin_over_x(xi) * (1.0 - cos2))


def psf_kernel(shape: tuple[int, int], drive: str, spacing_mm=0.25, gradient=9.0,
               particle: Particle = Particle()) -> np.ndarray:
    """The kernel at every pixel offset of an (H, W) image: (2H−1, 2W−1) float64, offset 0 at the centre."""
    h, w = shape
    dz, dx = per_axis(spacing_mm, "spacing_mm")
    oz = np.arange(-(h - 1), h) * dz
    ox = np.arange(-(w - 1), w) * dx
    return psf(oz[:, None], ox[None, :], drive, gradient, particle)


def kernel_spectrum(centred) -> torch.Tensor:
    """Spectra (..., 2H, W+1) complex64 for FFT convolution of centred kernels (..., 2H−1, 2W−1).

    The kernel goes into a (2H, 2W) array with offset d at index d mod 2H: every offset between two
    pixels, |d| ≤ H−1, lands on a distinct index, so the circular convolution of the zero-padded image
    equals the linear one on the H×W pixels of the field of view.
    """
    centred = torch.as_tensor(centred, dtype=torch.float64)
    h, w = (centred.shape[-2] + 1) // 2, (centred.shape[-1] + 1) // 2
    wrapped = torch.nn.functional.pad(centred, (0, 1, 0, 1))  # (..., 2H, 2W), zero at offset −H
    wrapped = torch.roll(wrapped, (-(h - 1), -(w - 1)), dims=(-2, -1))  # offset 0 -> index (0, 0)
    return torch.fft.rfft2(wrapped).to(torch.complex64)


def fft_convolve(c: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """c ⊛ h with zero padding: c (..., H, W) float32, spectrum from `kernel_spectrum` (broadcastable)."""
    h, w = c.shape[-2:]
    spec = torch.fft.rfft2(c.float(), s=(2 * h, 2 * w))  # (..., 2H, W+1)
    return torch.fft.irfft2(spec * spectrum, s=(2 * h, 2 * w))[..., :h, :w]


class PSFForward(nn.Module):
    """Native image c ⊛ h_drive for batches of concentration maps (..., H, W), float32, differentiable."""

    def __init__(self, shape: tuple[int, int], drive: str, spacing_mm=0.25, gradient=9.0,
                 particle: Particle = Particle()):
        super().__init__()
        self.shape = (int(shape[0]), int(shape[1]))
        spectrum = kernel_spectrum(psf_kernel(self.shape, drive, spacing_mm, gradient, particle))
        self.register_buffer("spectrum", spectrum, persistent=False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if tuple(c.shape[-2:]) != self.shape:
            raise ValueError(f"PSFForward built for images {self.shape}, got {tuple(c.shape[-2:])}")
        return fft_convolve(c, self.spectrum)
