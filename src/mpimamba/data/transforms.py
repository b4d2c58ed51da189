"""Training patches: a random crop and one of the 8 flip/rotation modes, applied identically to lq and gt.

Every random choice comes from an explicit `np.random.Generator`, so a caller that derives the generator
from (seed, epoch, index) gets the same patch every time it asks (see `PairedFolder.set_epoch`).
"""

from __future__ import annotations

import numpy as np

N_MODES = 8  # the dihedral group of the square: 4 rotations x (flip or not)


def apply_mode(image: np.ndarray, mode: int) -> np.ndarray:
    """Mode 0..7 on the last two axes: rotate by 90° * (mode % 4), then flip left-right if mode >= 4."""
    if not 0 <= mode < N_MODES:
        raise ValueError(f"augmentation mode must be in 0..{N_MODES - 1}, got {mode}")
    out = np.rot90(image, k=mode % 4, axes=(-2, -1))
    if mode >= 4:
        out = np.flip(out, axis=-1)
    return out


def random_crop_box(rng: np.random.Generator, shape: tuple[int, int], patch: int) -> tuple[int, int]:
    """Top-left corner of a uniformly placed `patch` x `patch` window inside an image of `shape` (H, W)."""
    h, w = shape
    if patch > h or patch > w:
        raise ValueError(f"patch {patch} is larger than the image ({h}x{w})")
    return int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))


def paired_patch(
    lq: np.ndarray, gt: np.ndarray, rng: np.random.Generator, patch: int | None = None, augment: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Crop (if `patch`) and flip/rotate (if `augment`) both images the same way; returns contiguous copies."""
    if lq.shape[-2:] != gt.shape[-2:]:
        raise ValueError(f"lq {lq.shape} and gt {gt.shape} differ in size")
    if patch is not None:
        top, left = random_crop_box(rng, lq.shape[-2:], patch)
        window = (..., slice(top, top + patch), slice(left, left + patch))
        lq, gt = lq[window], gt[window]
    if augment:
        mode = int(rng.integers(N_MODES))
        lq, gt = apply_mode(lq, mode), apply_mode(gt, mode)
    return np.ascontiguousarray(lq), np.ascontiguousarray(gt)
