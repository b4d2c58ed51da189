"""`calibrate`: restore image files or whole folders with a trained model, keeping names and formats.

Each image goes through `infer.Restoration`, the path `evaluate` scores: divided by its maximum before
the network (the authors' normalisation) and multiplied back, so outputs are in the input's own scale,
and clamped at zero (concentrations are never negative). Output paths: an input file
goes to OUT/NAME; a folder is searched recursively and each image goes to OUT/<path inside the folder>.
With a single input file, an OUT that ends in an image suffix is the output file itself.

Outputs give back what the user gave (`data.io.ImageInfo`): the input's dtype and value range (a uint16
TIFF comes back uint16, an 8-bit PNG as 8-bit; integers are rounded and clipped to what the dtype holds,
and the clipped pixels counted), its shape, and its metadata (MDF header groups, DICOM patient/study tags
and pixel spacing, TIFF resolution). 3-D stacks and volumes (multi-page TIFF, 3-D NPY/NPZ, MDF volumes or
several frames) are restored slice by slice along `slice_axis`, each slice normalised by its own maximum
as a 2-D image is. An output written in another format than its input's gets that format's defaults.
"""

from __future__ import annotations

import os

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .data.io import SUFFIXES, Written, read_image_with_info, write_image_with_info
from . import pretrained
from .infer import Restoration, resolve_device
from .refine import RefinedRestoration, ScanGeometry
from .locks import folder_lock
from .models.checkpoint import load_model


def _is_temporary(path: Path) -> bool:
    """A temp file of `fileutil.atomic_path` (`.NAME.XXXX.tmp.EXT`), which an interrupted run may leave."""
    return path.name.startswith(".") and ".tmp" in path.name


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _files_below(folder: Path) -> list[Path]:
    """Every file below `folder`, following symlinked subfolders (a lab's data tree is often linked
    together) but entering each real folder once, so a link cycle cannot loop."""
    seen, files = set(), []
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        files += [Path(root) / n for n in names if (Path(root) / n).is_file()]
    return files


def plan_outputs(inputs: list[str | Path], out: str | Path) -> list[tuple[Path, Path]]:
    """(input file, output file) pairs for files and folders (recursively); checks for clashes.

    A folder's images inside OUT (an earlier run's outputs, when OUT lies in the input folder) and
    temp files of interrupted writes are never taken as inputs.
    """
    out = Path(out)
    if not inputs:
        raise ValueError("calibrate needs at least one input file or folder")
    if len(inputs) > 1 and out.suffix.lower() in SUFFIXES:
        raise ValueError(f"-o {out} names one image file, but {len(inputs)} inputs were given; "
                         "pass a folder as -o")
    pairs: list[tuple[Path, Path]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in _files_below(item) if p.suffix.lower() in SUFFIXES
                           and not _is_temporary(p) and not _inside(p, out))
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


class PartialCalibration(ValueError):
    """Some inputs could not be restored; every other one was written. `failed`: [(input, reason)];
    `written`: the `Written` records (path, clipped pixels) of the others."""

    def __init__(self, failed: list[tuple[Path, str]], written: list[Written]):
        self.failed, self.written = failed, written
        listed = "; ".join(f"{src}: {reason}" for src, reason in failed[:5])
        more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
        super().__init__(f"{len(failed)} of {len(failed) + len(written)} image(s) could not be restored "
                         f"({listed}{more}); the other {len(written)} were written")


def restore_slices(restore, image: np.ndarray, slice_axis: int = 0, name: str = "image") -> np.ndarray:
    """A 2-D image restored whole; a 3-D stack restored slice by slice along `slice_axis` and stacked back.

    `restore(image, name=...)` restores one 2-D image (a `Restoration`); each slice is normalised by its
    own maximum, as the model saw its training images.
    """
    if image.ndim == 2:
        return restore(image, name=name)
    if image.ndim != 3:
        raise ValueError(f"{name}: expected a 2-D image or a 3-D stack, got shape {image.shape}")
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {slice_axis}")
    slices = [restore(np.take(image, i, axis=slice_axis), name=f"{name} (slice {i} along axis {slice_axis})")
              for i in range(image.shape[slice_axis])]
    return np.stack(slices, axis=slice_axis)


def calibrate(
    inputs: list[str | Path],
    out: str | Path,
    model_path: str | Path | None = None,
    tile: int | None = 256,
    overlap: int = 32,
    device: str | None = None,
    overwrite: bool = False,
    normalise: str = "max",
    skip_existing: bool = False,
    slice_axis: int = 0,
    physics: ScanGeometry | None = None,
    physics_iterations: int = 100,
    flip_average: bool = False,
) -> list[Written]:
    """Restore every input image (see the module docstring for paths, scaling and stacks); return what
    was written: each file's path and the number of its pixels clipped to the input's dtype.

    `physics` (the scan's drive axis, gradient and pixel spacing) adds the physics-consistency refinement of
    `mpimamba.refine` after the network, at most `physics_iterations` steps per image (or slice).
    `flip_average` averages the restorations of each image's mirror images (`infer.Restoration`).
    `skip_existing` leaves outputs that exist as they are and restores the rest (to continue an interrupted
    run). An input that cannot be read or restored is skipped; the others are still written, and
    `PartialCalibration` lists the failures at the end. Clipped pixels are reported, one line per file.
    """
    if overwrite and skip_existing:
        raise ValueError("--overwrite and --skip-existing exclude each other")
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"--slice-axis must be 0, 1 or 2, got {slice_axis}")
    if physics_iterations < 1:
        raise ValueError(f"--physics-iterations must be at least 1, got {physics_iterations}")
    with folder_lock(out, "output"):  # one calibrate at a time writes into OUT
        return _calibrate(inputs, out, model_path, tile, overlap, device, overwrite, normalise, skip_existing,
                          slice_axis, physics, physics_iterations, flip_average)


def _calibrate(inputs, out, model_path, tile, overlap, device, overwrite, normalise, skip_existing,
               slice_axis, physics, physics_iterations, flip_average) -> list[Written]:
    pairs = plan_outputs(inputs, out)
    existing = [str(dst) for _, dst in pairs if dst.exists()]
    if existing and not (overwrite or skip_existing):
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise FileExistsError(f"{shown} exist; pass --skip-existing to keep them and restore the rest, "
                              "or --overwrite to replace them")
    if skip_existing:
        pairs = [(src, dst) for src, dst in pairs if not dst.exists()]
    device = resolve_device(device)
    model = load_model(model_path or pretrained.model_path(), map_location=device)
    restoration = Restoration(model, normalise=normalise, tile=tile, overlap=overlap, device=device,
                              flip_average=flip_average)
    if physics is not None:
        restoration = RefinedRestoration(restoration, physics, physics_iterations)
    written, failed = [], []
    for src, dst in tqdm(pairs, desc="calibrate", unit="img"):
        try:
            image, info = read_image_with_info(src)
            restored = restore_slices(restoration, image, slice_axis, name=str(src))
        except (ValueError, OSError) as err:  # an unreadable or unusable input: skip it, say so at the end
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            failed.append((src, reason.removeprefix(f"{src}: ")))  # listed as "FILE: reason" already
            continue
        written.append(write_image_with_info(dst, restored, info, overwrite=overwrite))
        if written[-1].clipped:
            tqdm.write(written[-1].clip_message(), file=sys.stderr)
    if failed:
        raise PartialCalibration(failed, written)
    return written
