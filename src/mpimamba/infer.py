"""The one path from a trained network to a restored image: `Restoration`.

`calibrate`, `evaluate`, `demo`, training validation and the experiments all restore through a
`Restoration` (model, input normalisation, non-negative output, tiling, device), so that `evaluate` scores
exactly what `calibrate` would write for the same model and input:

- normalisation `max` (the default, the authors' rule): the image is divided by its maximum before the
  network, which then sees [0, 1] with the peak at 1 as in training, and the output is multiplied back, so
  it is in the input's own scale; an image whose maximum is <= 0 goes through unscaled. `none` feeds the
  image as it is and refuses data outside [0, 1] (what a model trained on [0, 1] images was never shown);
- non-negative output: the restored image is clamped at 0. It is a concentration map, which cannot be
  negative; against a non-negative target the clamp can only lower the error (each clamped pixel moves
  towards every admissible value), so it costs no PSNR;
- tiling: small images go through the network whole, larger ones in overlapping tiles (below);
- flip averaging (`flip_average`, off by default): the output is the mean of the restorations of the image
  and of its mirror images along x, along z and along both, each mirrored back. The x-space PSF is even in
  each coordinate separately (h(x, z) = h(−x, z) = h(x, −z): the normal and tangential envelopes depend on
  x² and z² only), so a mirrored input is an input of the same physics, and the average of the four
  restorations cancels part of the network's own errors (a self-ensemble). The symmetry is exact for the
  simulator's PSF; on a scanner, particle relaxation skews the PSF along the drive axis of a one-directional
  scan, so there a mirrored image is only approximately of the same physics. It costs 4× the time; the gain
  on the demo's pairs is in the model card. Off by default so that the benchmark tables, which score every
  method without it, stay comparable with what `evaluate` gives unless asked.

Tiling: images no larger than the tile go through the network whole; larger ones are cut into overlapping
`tile` x `tile` tiles (the last tile in each row/column sits flush with the image edge), run in batches,
and blended: each tile
is weighted by a window that is 0 within overlap/4 of an edge it shares with a neighbour, rises as a
raised cosine over the middle half of the overlap, and is 1 elsewhere (and up to the image border); the
blend divides by the summed weights. Pixels a tile sees too close to its cut edge therefore never count,
so where the network's receptive-field radius is below overlap/4 the tiled result equals the whole-image
result (to float rounding); for larger receptive fields the cosine ramp hides the seams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .models.base import Restorer

MIRRORS = ((), (0,), (1,), (0, 1))  # flip_average: the image, mirrored along z (rows), x (columns), both
AUTO_TILE = 256  # tile used when `tile=None` and the image is larger than WHOLE_MAX
WHOLE_MAX = 512  # images up to this many pixels per side go through whole when `tile=None`


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def edge_window(size: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D weights of one tile: 0 / raised-cosine / 1 ramps at edges shared with a neighbour, 1 at image borders."""
    w = np.ones(size, dtype=np.float64)
    quarter, half = overlap // 4, overlap - 2 * (overlap // 4)
    t = (np.arange(half) + 0.5) / half
    ramp = np.concatenate([np.zeros(quarter), 0.5 - 0.5 * np.cos(np.pi * t)])  # (quarter + half,)
    if not at_start:
        w[: ramp.size] = ramp
    if not at_end:
        w[size - ramp.size :] = np.minimum(w[size - ramp.size :], ramp[::-1])
    return w


NORMALISATIONS = ("max", "none")


def resolve_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """`None`/"auto" -> CUDA when available, else CPU; a requested CUDA device must exist. A bare "cuda"
    under torchrun means the process's own GPU (`local_rank`). The one device rule of the package."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a device name; expected auto, cpu or cuda[:N]") from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is not supported; expected auto, cpu or cuda[:N]")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu")
        if device.index is None:  # one GPU per process under torchrun
            device = torch.device("cuda", local_rank)
    return device


def _model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _run(model: Restorer, batch: np.ndarray, device: torch.device) -> np.ndarray:
    x = torch.from_numpy(batch)[:, None].to(device)  # (B, 1, h, w)
    return model(x)[:, 0].float().cpu().numpy()  # (B, h, w)


@torch.no_grad()
def restore(
    model: Restorer,
    image: np.ndarray,
    tile: int | None = None,
    overlap: int = 32,
    device: str | torch.device | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """Restore one (H, W) image in [0, 1] with `model` (run in eval mode); returns float32 (H, W).

    `tile=None` runs images up to WHOLE_MAX per side whole and larger ones in AUTO_TILE tiles; an explicit
    `tile` tiles any image larger than it. `device=None` uses the model's device; otherwise the model is
    moved there.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected an (H, W) image, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("image contains NaN or infinite values")
    if tile is None:
        tile = AUTO_TILE if max(image.shape) > WHOLE_MAX else max(image.shape)
    if tile < 1:
        raise ValueError(f"tile must be a positive size, got {tile}")
    if max(image.shape) > tile and not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.to(device).eval()
    try:
        return _restore_tiled(model, image, tile, overlap, device, batch_size)
    finally:
        model.train(was_training)


def _restore_tiled(model, image, tile, overlap, device, batch_size) -> np.ndarray:
    h, w = image.shape
    th, tw = min(tile, h), min(tile, w)
    zs, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    if len(zs) == 1 and len(xs) == 1:
        return _run(model, image[None], device)[0]
    out = np.zeros((h, w), dtype=np.float64)
    weight = np.zeros((h, w), dtype=np.float64)
    boxes = [(z, x) for z in zs for x in xs]
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        preds = _run(model, np.stack([image[z : z + th, x : x + tw] for z, x in chunk]), device)  # (b, th, tw)
        for (z, x), pred in zip(chunk, preds):
            wz = edge_window(th, overlap, z == 0, z + th == h)
            wx = edge_window(tw, overlap, x == 0, x + tw == w)
            win = wz[:, None] * wx[None, :]  # (th, tw)
            out[z : z + th, x : x + tw] += win * pred
            weight[z : z + th, x : x + tw] += win
    return (out / weight).astype(np.float32)


@dataclass
class Restoration:
    """Restore (H, W) images with `model`: see the module docstring for the normalisation and the clamp.

    Images larger than `tile` per side are restored in tiles overlapping by `overlap` (the same defaults
    as calibrate's and evaluate's options, so every caller restores alike); `tile=None` runs every image
    whole. `device=None` keeps the model where it is. `flip_average` averages the restorations of the
    image's four mirror images (module docstring).
    """

    model: Restorer
    normalise: str = "max"
    nonnegative: bool = True
    tile: int | None = AUTO_TILE
    overlap: int = 32
    device: str | torch.device | None = None
    batch_size: int = 8
    flip_average: bool = False

    def __post_init__(self):
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {self.normalise!r}")
        if self.tile is not None and self.tile < 1:
            raise ValueError(f"tile must be a positive size, got {self.tile}")
        if self.tile is not None and not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap must be in [0, tile={self.tile}), got {self.overlap}")
        if self.device is not None:
            self.device = resolve_device(self.device)
            self.model.to(self.device)

    def __call__(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        """The restored image, float32 (H, W), in the input's scale; `name` is used in error messages."""
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise ValueError(f"{name}: expected an (H, W) image, got shape {image.shape}")
        if not np.all(np.isfinite(image)):
            raise ValueError(f"{name}: image contains NaN or infinite values")
        scale = 1.0
        if self.normalise == "max":
            peak = float(image.max())
            scale = peak if peak > 0 else 1.0
        elif image.min() < 0 or image.max() > 1:
            raise ValueError(f"{name}: values span [{image.min():.4g}, {image.max():.4g}], outside [0, 1]; "
                             "use normalisation 'max' (divide by the maximum) or rescale the data")
        out = self._network(image / np.float32(scale)) * np.float32(scale)
        return np.maximum(out, 0.0) if self.nonnegative else out

    def _network(self, image: np.ndarray) -> np.ndarray:
        """The network's (H, W) restoration of a normalised image; with flip averaging, the mean over MIRRORS."""
        tile = self.tile if self.tile is not None else max(image.shape)

        def run(x: np.ndarray) -> np.ndarray:
            return restore(self.model, x, tile=tile, overlap=self.overlap, device=self.device,
                           batch_size=self.batch_size)

        if not self.flip_average:
            return run(image)
        # flipping twice along the same axes is the identity: each restoration is mirrored back before the mean
        restored = [np.flip(run(np.ascontiguousarray(np.flip(image, axes))), axes) for axes in MIRRORS]
        return np.mean(restored, axis=0, dtype=np.float32)
