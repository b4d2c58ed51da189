"""What Wiener and Richardson–Lucy share: the full-field x-space PSF of one scan, and choosing the one
setting on validation pairs.

The kernel is the PSF at every pixel offset of the image (`physics.psf.psf_kernel`, (2H−1) × (2W−1)), not
a small truncated window: the tangential envelope of the x-space PSF falls off slowly, and a truncated
kernel misses most of it. Its spectrum lives on a 2H × 2W grid (`physics.psf.kernel_spectrum`), where
circular convolution of a zero-padded image is the simulator's linear one.

Scale: a deconvolved image is divided by its maximum, the data's own rule for targets (each image in
[0, 1] with the peak at 1); `infer.Restoration` multiplies it back into the input's scale.

Choosing the setting (`fit`, run by `mpimamba train` on at least 32 validation pairs, or all of a smaller
validation split): every value of `GRID` restores the validation pairs, and the one with the highest mean PSNR (data range 1, outputs clamped at zero as `Restoration` does) is kept; ties go to the
first, the most regularised. The test split is never looked at.
"""

from __future__ import annotations

import numpy as np
import torch

from ...physics.psf import kernel_spectrum, psf_kernel
from ..base import Restorer


class PSFDeconvolution(Restorer):
    """(B, 1, H, W) -> (B, 1, H, W): deconvolution with the PSF of a scan along `drive` ("x" or "z") at
    `gradient` T/m and `spacing_mm` per pixel. Subclasses define `SETTING` (the name of their one
    setting), `GRID` (its candidate values) and `deconvolve(y, spectrum)`."""

    phases = ()  # nothing to optimise: `fit` picks the setting
    SETTING: str = ""
    GRID: tuple = ()

    def __init__(self, drive: str = "x", gradient: float = 9.0, spacing_mm: float = 0.25):
        super().__init__()
        if drive not in ("x", "z"):
            raise ValueError(f"drive must be 'x' or 'z', got {drive!r}")
        if not gradient > 0 or not spacing_mm > 0:
            raise ValueError(f"gradient and spacing_mm must be positive, got {gradient} and {spacing_mm}")
        self.drive, self.gradient, self.spacing_mm = drive, float(gradient), float(spacing_mm)
        self._spectra: dict[tuple, torch.Tensor] = {}

    def spectrum(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(2H, W+1) complex64 spectrum of the full-field kernel, cached per image size."""
        key = (height, width, str(device))
        if key not in self._spectra:
            kernel = psf_kernel((height, width), self.drive, self.spacing_mm, self.gradient)
            self._spectra[key] = kernel_spectrum(kernel).to(device)
        return self._spectra[key]

    def deconvolve(self, y: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def restore(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = self.deconvolve(x.float(), self.spectrum(h, w, x.device))  # (B, C, H, W)
        peak = out.amax(dim=(-2, -1), keepdim=True)
        return out / torch.where(peak > 0, peak, torch.ones_like(peak))

    @torch.no_grad()
    def fit(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """Set `SETTING` to the value of `GRID` with the best mean PSNR on `pairs` of (C, H, W) tensors;
        return {value: mean PSNR} for every value tried."""
        from ...eval.metrics import psnr

        if not pairs:
            raise ValueError(f"{type(self).__name__}.fit needs validation pairs to choose {self.SETTING}")
        scores = {}
        for value in self.GRID:
            setattr(self, self.SETTING, value)
            values = [float(psnr(self(lq[None]).clamp(min=0)[0], gt)) for lq, gt in pairs]
            scores[value] = float(np.mean(values))
        best = max(self.GRID, key=lambda v: (scores[v], -self.GRID.index(v)))
        setattr(self, self.SETTING, best)
        config = getattr(self, "build_config", None)
        if config is not None:  # saved with the model, so load_model rebuilds it with the choice
            config["overrides"] = {**config["overrides"], self.SETTING: best}
        return scores
