"""`calibrate`: restore image files or whole folders with a trained model, keeping names and formats.

Each image is divided by its maximum before the network (the authors' normalisation: the network sees
[0, 1] with the peak at 1) and the result multiplied back, so outputs are in the input's own scale
(an image whose maximum is <= 0 is passed through the network unscaled). Output paths: an input file
goes to OUT/NAME; a folder is searched recursively and each image goes to OUT/<path inside the folder>.
With a single input file, an OUT that ends in an image suffix is the output file itself. Outputs keep
the input's format (PNG is written 16-bit, so an 8-bit PNG comes back as 16-bit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from .data.io import SUFFIXES, read_image, write_image
from .infer import default_model_path, resolve_device, restore
from .models.base import Restorer
from .models.checkpoint import load_model


def plan_outputs(inputs: list[str | Path], out: str | Path) -> list[tuple[Path, Path]]:
    """(input file, output file) pairs for files and folders (recursively); checks for clashes."""
    out = Path(out)
    if not inputs:
        raise ValueError("calibrate needs at least one input file or folder")
    pairs: list[tuple[Path, Path]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                raise ValueError(f"folder {item} holds no images ({', '.join(SUFFIXES)})")
            pairs += [(p, out / p.relative_to(item)) for p in found]
        elif item.is_file():
            if item.suffix.lower() not in SUFFIXES:
                raise ValueError(f"{item}: unknown image format {item.suffix!r}; expected one of {', '.join(SUFFIXES)}")
            single = len(inputs) == 1 and out.suffix.lower() in SUFFIXES
            pairs.append((item, out if single else out / item.name))
        else:
            raise FileNotFoundError(f"input {item} not found")
    targets: dict[Path, Path] = {}
    for src, dst in pairs:
        if dst in targets:
            raise ValueError(f"{src} and {targets[dst]} would both be written to {dst}")
        if dst.resolve() == src.resolve():
            raise ValueError(f"output {dst} is the input itself; choose another -o")
        targets[dst] = src
    return pairs


def calibrate_image(
    model: Restorer, image: np.ndarray, tile: int | None = None, overlap: int = 32, device=None
) -> np.ndarray:
    """Restore one image in its own scale: divide by the maximum, run the network, multiply back."""
    peak = float(image.max())
    scale = peak if peak > 0 else 1.0
    return restore(model, image / scale, tile=tile, overlap=overlap, device=device) * np.float32(scale)


def calibrate(
    inputs: list[str | Path],
    out: str | Path,
    model_path: str | Path | None = None,
    tile: int | None = 256,
    overlap: int = 32,
    device: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Restore every input image (see the module docstring for paths and scaling); return the written files."""
    pairs = plan_outputs(inputs, out)
    existing = [str(dst) for _, dst in pairs if dst.exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise FileExistsError(f"{shown} exist; pass --overwrite to replace them")
    device = resolve_device(device)
    model = load_model(model_path or default_model_path(), map_location=device)
    written = []
    for src, dst in tqdm(pairs, desc="calibrate", unit="img"):
        restored = calibrate_image(model, read_image(src), tile=tile, overlap=overlap, device=device)
        written.append(write_image(dst, restored, overwrite=overwrite))
    return written
