"""PSNR, SSIM and nRMSE on images in [0, 1] (DESIGN §5), for numpy arrays or batched torch tensors.

Inputs: (H, W) or (C, H, W) -> a float; (B, C, H, W) -> one value per image (a tensor for torch input,
an array for numpy input). Everything is computed in float64, on bands of rows converted one at a time
(SSIM's bands overlap by the window's radius), so memory stays bounded for any image size: no float64
copy of a whole image is made.

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
               identical channels leave every metric unchanged, so they are not materialised; the 8-bit
               images are kept as uint8 codes k and read as k / 255.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import correlate1d

CONVENTIONS = ("ours", "authors")
SSIM_SIGMA, SSIM_RADIUS, SSIM_K1, SSIM_K2 = 1.5, 5, 0.01, 0.03  # radius = int(3.5 σ + 0.5): 11 taps
# float64 working memory per band of rows: the images are read a band at a time, so no float64 copy of a
# whole image is made and the metrics of a 3000x3000 pair take a few tens of MB above the images themselves
BAND_BYTES = 16 * 2**20
_SSIM_MAPS = 14  # float64 arrays of a band alive at once in `_ssim_plane` (inputs, 5 maps, blurs, terms)
_CODE_LEVELS = 255.0  # the authors' convention scores 8-bit codes k, read as k / 255


def _array(a) -> np.ndarray:
    """The values of a numpy array or torch tensor as a numpy array, without a copy where possible."""
    if isinstance(a, torch.Tensor):
        a = a.detach()
        if a.dtype == torch.bfloat16:  # numpy has no bfloat16
            a = a.float()
        return a.cpu().numpy()
    return np.asanyarray(a)  # keeps the _Codes marking of the authors' convention


class _Codes(np.ndarray):
    """uint8 codes k of the authors' convention, read as k / 255: marked by type, not by dtype, so that a
    caller's own uint8 images are never silently rescaled."""


def _batch(out, gt) -> tuple[np.ndarray, np.ndarray, str, torch.device | None]:
    """Both images as (B, C, H, W) views in their own dtype, plus how to return results ("float", "numpy",
    "torch") and, for torch, on which device."""
    if tuple(out.shape) != tuple(gt.shape):
        raise ValueError(f"output {tuple(out.shape)} and target {tuple(gt.shape)} differ in shape")
    ndim = len(out.shape)
    if ndim not in (2, 3, 4):
        raise ValueError(f"expected (H, W), (C, H, W) or (B, C, H, W) images, got shape {tuple(out.shape)}")
    kind = "float" if ndim < 4 else ("torch" if isinstance(out, torch.Tensor) else "numpy")
    device = out.device if isinstance(out, torch.Tensor) else None
    x, y = _array(out), _array(gt)
    x, y = x.reshape((1,) * (4 - ndim) + x.shape), y.reshape((1,) * (4 - ndim) + y.shape)
    return x, y, kind, device


def _result(values: list[float], kind: str, device):
    if kind == "float":
        return float(values[0])
    values = np.asarray(values, dtype=np.float64)
    return torch.from_numpy(values).to(device) if kind == "torch" else values


def _float64(band: np.ndarray) -> np.ndarray:
    """A band of rows in float64 (8-bit codes of the authors' convention as k / 255)."""
    if isinstance(band, _Codes):
        return band.astype(np.float64) / _CODE_LEVELS
    return band.astype(np.float64)


def _rows(height: int, width: int, arrays: int) -> int:
    """Rows per band so that `arrays` float64 arrays of a band fit in BAND_BYTES (at least one row)."""
    return max(1, min(height, BAND_BYTES // (8 * max(1, width) * arrays)))


def _squared_error(x: np.ndarray, y: np.ndarray) -> float:
    """sum((x - y)^2) over one (C, H, W) image, accumulated in float64 band by band."""
    total = 0.0
    for xc, yc in zip(x, y):
        step = _rows(*xc.shape, 3)
        for r in range(0, xc.shape[0], step):
            d = (_float64(xc[r:r + step]) - _float64(yc[r:r + step])).ravel()
            total += float(np.dot(d, d))
    return total


def _mse(x: np.ndarray, y: np.ndarray) -> list[float]:
    return [_squared_error(xi, yi) / xi.size for xi, yi in zip(x, y)]  # (B,)


def psnr(out, gt, data_range: float = 1.0):
    x, y, kind, device = _batch(out, gt)
    with np.errstate(divide="ignore"):  # MSE 0 -> inf
        values = [float(10 * np.log10(np.float64(data_range) ** 2 / np.float64(m))) for m in _mse(x, y)]
    return _result(values, kind, device)


def _gaussian_kernel() -> np.ndarray:
    t = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / SSIM_SIGMA) ** 2)
    return k / k.sum()  # (11,)


def _valid_blur(z: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The separable Gaussian of a band, kept only where the whole window lies inside it: (h, w) ->
    (h - 10, w - 10). Inside, the border mode never enters, so these are exactly the pixels skimage keeps."""
    r = SSIM_RADIUS
    rows = correlate1d(z, k, axis=0, mode="constant")[r:-r]
    return correlate1d(rows, k, axis=1, mode="constant")[:, r:-r]


def _ssim_plane(x: np.ndarray, y: np.ndarray, c1: float, c2: float) -> float:
    """Mean SSIM of one (H, W) channel over the pixels whose window lies inside it, computed on bands of
    output rows (each read with its 5-row halo above and below), summed in float64."""
    h, w = x.shape
    r, k = SSIM_RADIUS, _gaussian_kernel()
    out_h, out_w = h - 2 * r, w - 2 * r
    step = _rows(out_h, w, _SSIM_MAPS)
    total = 0.0
    for top in range(0, out_h, step):
        bottom = min(out_h, top + step) + 2 * r  # input rows [top, bottom) give output rows [top, bottom - 10)
        xb, yb = _float64(x[top:bottom]), _float64(y[top:bottom])
        ux, uy = _valid_blur(xb, k), _valid_blur(yb, k)
        vx = _valid_blur(xb * xb, k) - ux * ux
        vy = _valid_blur(yb * yb, k) - uy * uy
        vxy = _valid_blur(xb * yb, k) - ux * uy
        del xb, yb
        numerator = (2 * ux * uy + c1) * (2 * vxy + c2)
        denominator = (ux * ux + uy * uy + c1) * (vx + vy + c2)
        total += float((numerator / denominator).sum())
    return total / (out_h * out_w)


def ssim(out, gt, data_range: float = 1.0):
    x, y, kind, device = _batch(out, gt)
    h, w = x.shape[2:]
    size = 2 * SSIM_RADIUS + 1
    if h < size or w < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {h}x{w}")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    # mean over pixels, then over channels: (B,)
    values = [float(np.mean([_ssim_plane(xc, yc, c1, c2) for xc, yc in zip(xi, yi)])) for xi, yi in zip(x, y)]
    return _result(values, kind, device)


def nrmse(out, gt, normalise_by: str = "target"):
    """RMSE divided by the range of the target ("target", ours) or of the output ("output", the authors');
    NaN where that range is 0 (a constant image has no range to normalise by)."""
    if normalise_by not in ("target", "output"):
        raise ValueError(f"normalise_by must be 'target' or 'output', got {normalise_by!r}")
    x, y, kind, device = _batch(out, gt)
    values = []
    for xi, yi, mse in zip(x, y, _mse(x, y)):
        ref = yi if normalise_by == "target" else xi
        span = float(_float64(ref.max(keepdims=True))[0, 0, 0]) - float(_float64(ref.min(keepdims=True))[0, 0, 0])
        values.append(float(np.sqrt(np.float64(mse)) / span) if span > 0 else float("nan"))
    return _result(values, kind, device)


def _codes(image) -> np.ndarray:
    """The 8-bit codes round(clip(x, 0, 1) * 255) of an image as uint8, computed band by band in float64."""
    a = _array(image)
    flat = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(1, -1)
    codes = np.empty(flat.shape, np.uint8)
    step = _rows(flat.shape[0], flat.shape[1], 2)
    for r in range(0, flat.shape[0], step):
        codes[r:r + step] = np.round(np.clip(flat[r:r + step].astype(np.float64), 0, 1) * _CODE_LEVELS)
    return codes.reshape(a.shape).view(_Codes)


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
        # scored as 8-bit codes (one byte a pixel, read as k / 255 by the metrics), not as float copies
        torch_batch = isinstance(out, torch.Tensor) and len(out.shape) == 4
        device = out.device if torch_batch else None
        result = _scores(_codes(out), _codes(gt), "output")
        if torch_batch:  # the codes are numpy arrays; give back what a torch batch gets
            result = {k: torch.from_numpy(v).to(device) for k, v in result.items()}
        return result
    return _scores(out, gt, "target")


def _scores(out, gt, normalise_by: str) -> dict:
    return {"psnr": psnr(out, gt), "ssim": ssim(out, gt), "nrmse": nrmse(out, gt, normalise_by)}


__all__ = ["psnr", "ssim", "nrmse", "scores", "quantise_8bit", "CONVENTIONS"]
