"""Richardson–Lucy deconvolution with the full-field x-space PSF (see deconvolution.py).

    c ← c · Kᵀ(y / K c) / Kᵀ1,    c₀ = y (clamped at a small positive floor)

K is convolution with the PSF (zero padding), Kᵀ its adjoint (the x-space PSF is symmetric, h(r) = h(−r),
so Kᵀ = K) and Kᵀ1 the normalisation for an image of finite extent. Iterates stay non-negative. The
number of iterations is the regulariser (more: sharper and noisier); `fit` picks it on the validation pairs.
"""

from __future__ import annotations

import torch

from ...physics.psf import fft_convolve
from .deconvolution import PSFDeconvolution

FLOOR = 1e-6  # keeps K c and c positive so that the ratios stay finite


class RichardsonLucy(PSFDeconvolution):
    SETTING = "iterations"
    GRID = (5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560)  # fewest (most regularised) first

    def __init__(self, iterations: int = 40, **psf):
        super().__init__(**psf)
        if int(iterations) < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        self.iterations = int(iterations)

    def deconvolve(self, y: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
        y = y.clamp(min=0)
        norm = fft_convolve(torch.ones_like(y[..., :1, :, :]), spectrum).clamp(min=FLOOR)  # Kᵀ1
        c = y.clamp(min=FLOOR)
        for _ in range(self.iterations):
            ratio = y / fft_convolve(c, spectrum).clamp(min=FLOOR)
            c = c * fft_convolve(ratio, spectrum) / norm
        return c


PRESETS = {name: {} for name in ("tiny", "small", "paper")}  # one method at every size: nothing to scale
MODEL = RichardsonLucy
