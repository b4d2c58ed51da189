"""PSNR, SSIM and nRMSE on images in [0, 1] (DESIGN §5), for numpy arrays or batched torch tensors.

Inputs: (H, W) or (C, H, W) -> a float; (B, C, H, W) -> one value per image (a tensor for torch input,
an array for numpy input). Everything is computed in float64.

    PSNR  = 10 log10(data_range² / MSE)
    SSIM  = Gaussian window (σ 1.5, 11 taps), K1 0.01, K2 0.03, population covariances, averaged over the
            pixels whose window lies inside the image (as scikit-image's structural_similarity with
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, which crops that border away
            after filtering), then over channels.
    nRMSE = RMSE / (max(gt) - min(gt))

Two conventions (`scores(..., convention=...)`); the tables use "ours" unless told otherwise:
    "ours"     the formulas above on the float images.
    "authors"  what the MPI-Mamba code does: both images rounded to 8 bits (round(clip(x) * 255) / 255)
               and copied into 3 channels, nRMSE divided by the range of the *restored* image. The three
               identical channels leave every metric unchanged, so they are not materialised.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

CONVENTIONS = ("ours", "authors")
SSIM_SIGMA, SSIM_RADIUS, SSIM_K1, SSIM_K2 = 1.5, 5, 0.01, 0.03  # radius = int(3.5 σ + 0.5): 11 taps


def _batch(out, gt) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Both images as float64 (B, C, H, W) tensors, plus how to return results ("float", "numpy", "torch")."""
    if tuple(out.shape) != tuple(gt.shape):
        raise ValueError(f"output {tuple(out.shape)} and target {tuple(gt.shape)} differ in shape")
    ndim = len(out.shape)
    if ndim not in (2, 3, 4):
        raise ValueError(f"expected (H, W), (C, H, W) or (B, C, H, W) images, got shape {tuple(out.shape)}")
    kind = "float" if ndim < 4 else ("torch" if isinstance(out, torch.Tensor) else "numpy")
    x, y = (torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a) for a in (out, gt))
    x, y = x.to(torch.float64), y.to(x.device, torch.float64)
    while x.ndim < 4:
        x, y = x[None], y[None]
    return x, y, kind


def _result(values: torch.Tensor, kind: str):
    if kind == "float":
        return float(values[0])
    return values.cpu().numpy() if kind == "numpy" else values


def _mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x - y) ** 2).mean(dim=(1, 2, 3))  # (B,)


def psnr(out, gt, data_range: float = 1.0):
    x, y, kind = _batch(out, gt)
    return _result(10 * torch.log10(data_range**2 / _mse(x, y)), kind)  # MSE 0 -> inf


def _gaussian_kernel(device) -> torch.Tensor:
    t = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64, device=device)
    k = torch.exp(-0.5 * (t / SSIM_SIGMA) ** 2)
    return k / k.sum()  # (11,)


def ssim(out, gt, data_range: float = 1.0):
    x, y, kind = _batch(out, gt)
    b, c, h, w = x.shape
    size = 2 * SSIM_RADIUS + 1
    if h < size or w < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {h}x{w}")
    k = _gaussian_kernel(x.device)
    # separable 'valid' filtering: only windows inside the image, i.e. exactly the pixels skimage keeps
    rows, cols = k.view(1, 1, size, 1), k.view(1, 1, 1, size)

    def blur(z: torch.Tensor) -> torch.Tensor:  # (B*C*5, 1, H, W) -> (B*C*5, 1, H-10, W-10)
        return F.conv2d(F.conv2d(z, rows), cols)

    stack = torch.stack([x, y, x * x, y * y, x * y], dim=2).reshape(b * c * 5, 1, h, w)
    ux, uy, uxx, uyy, uxy = blur(stack).reshape(b, c, 5, h - 2 * SSIM_RADIUS, w - 2 * SSIM_RADIUS).unbind(2)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return _result(s.mean(dim=(2, 3)).mean(dim=1), kind)  # mean over pixels, then channels: (B,)


def nrmse(out, gt, normalise_by: str = "target"):
    """RMSE divided by the range of the target ("target", DESIGN §5) or of the output ("output", authors)."""
    if normalise_by not in ("target", "output"):
        raise ValueError(f"normalise_by must be 'target' or 'output', got {normalise_by!r}")
    x, y, kind = _batch(out, gt)
    ref = (y if normalise_by == "target" else x).flatten(1)
    return _result(_mse(x, y).sqrt() / (ref.amax(1) - ref.amin(1)), kind)


def quantise_8bit(image):
    """Round to the 256 levels of an 8-bit image, back in [0, 1] (the authors' evaluation does this)."""
    if isinstance(image, torch.Tensor):
        return torch.round(image.clamp(0, 1) * 255) / 255
    return np.round(np.clip(np.asarray(image, dtype=np.float64), 0, 1) * 255) / 255


def scores(out, gt, convention: str = "ours") -> dict:
    """{"psnr", "ssim", "nrmse"} for one image or a batch, under `convention` ("ours" or "authors")."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    if convention == "authors":
        out, gt = quantise_8bit(out), quantise_8bit(gt)
    return {
        "psnr": psnr(out, gt),
        "ssim": ssim(out, gt),
        "nrmse": nrmse(out, gt, "target" if convention == "ours" else "output"),
    }


__all__ = ["psnr", "ssim", "nrmse", "scores", "quantise_8bit", "CONVENTIONS"]
