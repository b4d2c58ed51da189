"""Simulated pairs: an infinite seeded stream for training, and a fixed dataset written to disk.

Both draw pairs from a `mpimamba.physics.protocols.Protocol` in batches (the PSF model then runs as one
batched FFT per batch).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm import tqdm

from .. import __version__
from ..fileutil import write_text_atomic
from ..locks import folder_lock
from ..physics.protocols import PROTOCOLS, Protocol
from .io import write_image
from .splits import SPLITS, split_counts

FORMATS = {"tiff": ".tif", "npy": ".npy", "png": ".png"}


class SyntheticPairs(IterableDataset):
    """Infinite stream of (lq, gt) float32 tensors (1, P, P), reproducible from `seed`.

    Pairs are simulated `batch` at a time on the protocol's canvas and one P×P patch is cropped from each
    (`Protocol.patches`); with `geometry`, each item also carries the pair's scan geometry (2,) float32
    (`Protocol.geometry`: scan axis and gradient·spacing), for the physics-consistency training term. Every DataLoader worker draws from its own generator, seeded with (seed, worker):
    streams are distinct across workers and identical from run to run for the same worker count. The
    training loop gives each (rank, phase, segment) its own `seed` (train.data.derive_seed), so the rank
    enters the seed there and only there. The x-space operator of a protocol with `xspace_fraction` > 0 is
    built on first use in each worker (4·canvas⁴ bytes).
    """

    def __init__(self, protocol: Protocol = PROTOCOLS["default"], size: int = 64, seed: int = 0, batch: int = 32,
                 geometry: bool = False):
        if size < 8 or batch < 1:
            raise ValueError(f"SyntheticPairs: need size >= 8 and batch >= 1, got size={size}, batch={batch}")
        self.protocol, self.size, self.seed, self.batch = protocol, size, seed, batch
        self.geometry = geometry  # also yield each pair's scan geometry (2,) for the physics loss

    def __iter__(self):
        worker = get_worker_info()
        rng = np.random.default_rng([self.seed, worker.id if worker else 0])
        while True:
            lq, gt, geometry = self.protocol.patches(rng, self.size, self.batch, geometry=True)
            for a, b, g in zip(lq, gt, geometry):
                pair = (torch.from_numpy(a)[None], torch.from_numpy(b)[None])
                yield (*pair, torch.from_numpy(g)) if self.geometry else pair


class MixedSizeBatches(IterableDataset):
    """Infinite stream of whole batches that take turns between sizes: (lq, gt) float32 tensors
    (B, 1, P, P), the k-th batch simulated from `sizes[k % len(sizes)]` = (protocol, P, B) (and each pair's
    scan geometry (B, 2) with `geometry`), reproducible from `seed`. Read it with
    `DataLoader(batch_size=None)`; with W workers, worker w yields batches w, w + W, w + 2W, ... of that cycle
    (and the loader deals them out in that order), so the k-th batch has the same size for any worker count
    (with W = len(sizes) each worker simulates one size only, and the largest one sets the pace).
    """

    def __init__(self, sizes: list[tuple[Protocol, int, int]], seed: int = 0, geometry: bool = False):
        if not sizes:
            raise ValueError("MixedSizeBatches: needs at least one (protocol, patch, batch) size")
        self.sizes, self.seed, self.geometry = list(sizes), seed, geometry

    def __iter__(self):
        worker = get_worker_info()
        index, stride = (worker.id, worker.num_workers) if worker else (0, 1)
        rng = np.random.default_rng([self.seed, index])
        while True:
            protocol, patch, batch = self.sizes[index % len(self.sizes)]
            lq, gt, geometry = protocol.patches(rng, patch, batch, geometry=True)
            pair = (torch.from_numpy(lq)[:, None], torch.from_numpy(gt)[:, None])  # (B, P, P) -> (B, 1, P, P)
            yield (*pair, torch.from_numpy(geometry)) if self.geometry else pair
            index += stride


GENERATOR = "mpimamba.data.synthetic.write_dataset"  # the manifest's mark of a dataset this function wrote


def _owned_files(out: Path) -> list[Path]:
    """The pair files of the dataset `write_dataset` wrote in OUT (named by its manifest), or refuse.

    Only a folder whose manifest says this function made it may be overwritten, and only the files that
    manifest accounts for: a user's own dataset, or the user's files beside ours, are never deleted.
    """
    manifest_path = out / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise FileExistsError(f"{out} is not empty and holds no manifest.json; --overwrite replaces only a "
                              "dataset that `mpimamba simulate` wrote, so choose an empty or new folder") from None
    except (OSError, json.JSONDecodeError) as err:
        raise FileExistsError(f"{manifest_path} is unreadable ({err}); --overwrite refuses to replace {out}") from err
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
        raise FileExistsError(f"{manifest_path} was not written by `mpimamba simulate`; --overwrite refuses to "
                              f"replace {out}")
    suffix = FORMATS.get(manifest.get("format"), "")
    counts = manifest.get("counts", {})
    owned, index = [], 0
    for split in SPLITS:
        for _ in range(int(counts.get(split, 0))):
            owned += [out / split / kind / f"{index:06d}{suffix}" for kind in ("lq", "gt")]
            index += 1
    return owned


def _remove_empty_dirs(out: Path) -> None:
    for split in SPLITS:
        for folder in (out / split / "lq", out / split / "gt", out / split):
            try:
                folder.rmdir()  # only when empty: the user's own files keep their folders
            except OSError:
                pass


def _pair_records(drawn: dict) -> list[dict]:
    """One manifest record per pair of a `Protocol.simulate(..., details=True)` batch: its forward model, scan
    axis, gradient (T/m), pixel spacing (mm), SNR (dB; null when noise-free) and `target_scale` (the factor that
    puts its target into its input's units, `physics.pairs`)."""
    snr = [float(v) if np.isfinite(v) else None for v in drawn["snr_db"]]
    return [{"model": str(m), "scan": str(a), "gradient": float(g), "spacing_mm": float(d), "snr_db": n,
             "target_scale": float(k)}
            for m, a, g, d, n, k in zip(drawn["models"], drawn["scans"], drawn["gradients"], drawn["spacings"],
                                        snr, drawn["target_scale"])]


def write_dataset(out: str | Path, count: int, size: int, protocol: Protocol = PROTOCOLS["default"],
                  seed: int = 0, fmt: str = "tiff", overwrite: bool = False, batch: int = 32) -> dict:
    """Write `count` whole size×size pairs of `protocol` to OUT/{train,val,test}/{lq,gt}/NNNNNN.ext (8:1:1)
    and OUT/manifest.json (which holds `protocol.to_dict()`; its canvas is for training streams only).

    Same arguments -> identical files. An existing non-empty OUT is refused (and left untouched) unless
    `overwrite`, which replaces only a dataset this function wrote there (its manifest says so) and only
    the files that manifest names; anything else in OUT stays. The new dataset is written in full to a
    hidden staging folder inside OUT first, so an interruption leaves the old dataset as it was; then the
    old pair files are removed, the new ones moved in, and the manifest written last (a dataset with a
    manifest is complete). OUT's lock (`mpimamba.locks`) is held throughout, so two commands never
    write one dataset. Returns the manifest.
    """
    with folder_lock(out, "dataset folder"):
        return _write_dataset(out, count, size, protocol, seed, fmt, overwrite, batch)


def _write_dataset(out: str | Path, count: int, size: int, protocol: Protocol, seed: int,
                   fmt: str, overwrite: bool, batch: int) -> dict:
    out = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    old_files: list[Path] = []
    if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".simulate-staging")):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite (overwrite=True) to replace its dataset")
        old_files = _owned_files(out)

    counts = split_counts(count)
    # pair i goes to the split whose index range holds it: train first, then val, then test
    splits = [s for s in SPLITS for _ in range(counts[s])]
    rng = np.random.default_rng(seed)
    suffix = FORMATS[fmt]
    staging = out / f".simulate-staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    categories: list[str] = []
    drawn_with: list[dict] = []  # per pair: what evaluate needs to put the target into the input's units
    try:
        with tqdm(total=count, desc=f"simulate -> {out}", unit="pair") as bar:
            for start in range(0, count, batch):
                lq, gt, drawn = protocol.simulate(rng, size, min(batch, count - start), details=True)
                categories += drawn["categories"]
                drawn_with += _pair_records(drawn)
                for i, (a, b) in enumerate(zip(lq, gt), start):
                    name = f"{i:06d}{suffix}"
                    write_image(staging / splits[i] / "lq" / name, a)
                    write_image(staging / splits[i] / "gt" / name, b)
                bar.update(len(lq))
        owned = set(old_files)
        clashes = [out / f.relative_to(staging) for f in staging.rglob("*") if f.is_file()]
        clashes = [str(t) for t in clashes if t.exists() and t not in owned]
        if clashes:
            raise FileExistsError(f"{clashes[0]} is not part of the dataset being replaced; move it away "
                                  f"({len(clashes)} such file(s))")
        for path in old_files:  # the new dataset is complete: now the old one goes
            path.unlink(missing_ok=True)
        _remove_empty_dirs(out)
        for new in sorted(staging.rglob("*")):
            if new.is_file():
                target = out / new.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(new, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = {
        "mpimamba_version": __version__,
        "generator": GENERATOR,
        "size": size,
        "protocol": protocol.to_dict(),
        "seed": seed,
        "format": fmt,
        "counts": {"total": count, **counts},
        "categories": {f"{i:06d}": c for i, c in enumerate(categories)},  # file stem -> phantom category
        "drawn": {f"{i:06d}": record for i, record in enumerate(drawn_with)},  # file stem -> how it was drawn
    }
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest
