"""`PairedFolder`: the on-disk paired dataset ROOT/{train,val,test}/{lq,gt}/NAME.ext, matched by file stem.

Each item is (lq, gt) as float32 tensors (1, H, W). With `patch` and/or `augment` every item is a random
crop / flip-rotation, drawn from a generator seeded by (seed, epoch, index): the same item in the same
epoch is always the same patch, in any process and any worker, so a resumed run sees exactly the data an
uninterrupted run would. Call `set_epoch(e)` before each pass, like `DistributedSampler.set_epoch`
(with DataLoader workers, call it before the loader's iterator is created; `persistent_workers=True`
would keep stale copies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import SUFFIXES, read_image
from .splits import SPLITS
from .transforms import paired_patch


def _images_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} not found (expected ROOT/{{train,val,test}}/{{lq,gt}})")
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in SUFFIXES]
    if not files:
        raise ValueError(f"folder {folder} holds no images ({', '.join(SUFFIXES)})")
    by_stem: dict[str, Path] = {}
    for p in files:
        if p.stem in by_stem:
            raise ValueError(f"{folder}: two images share the name {p.stem!r} ({by_stem[p.stem].name}, {p.name})")
        by_stem[p.stem] = p
    return by_stem


class PairedFolder(Dataset):
    def __init__(self, root: str | Path, split: str, patch: int | None = None, augment: bool = False, seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if patch is not None and patch < 1:
            raise ValueError(f"patch must be a positive size, got {patch}")
        self.root, self.split = Path(root), split
        folder = self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"split folder {folder} not found")
        lq, gt = _images_by_stem(folder / "lq"), _images_by_stem(folder / "gt")
        only_lq, only_gt = sorted(lq.keys() - gt.keys()), sorted(gt.keys() - lq.keys())
        if only_lq or only_gt:
            raise ValueError(
                f"{folder}: unmatched names: {len(only_lq)} only in lq/ {only_lq[:5]}, "
                f"{len(only_gt)} only in gt/ {only_gt[:5]}"
            )
        self.names = sorted(lq)
        self.pairs = [(lq[n], gt[n]) for n in self.names]
        self.patch, self.augment, self.seed = patch, augment, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the crops/augmentations of pass `epoch` (item i's randomness is a function of seed, epoch, i)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The full-size (lq, gt) images of item `index` as float32 (H, W) arrays."""
        lq_path, gt_path = self.pairs[index]
        lq, gt = read_image(lq_path), read_image(gt_path)
        if lq.shape != gt.shape:
            raise ValueError(f"pair {self.names[index]!r}: {lq_path} is {lq.shape} but {gt_path} is {gt.shape}")
        if self.patch is not None and self.patch > min(lq.shape):
            raise ValueError(f"patch {self.patch} is larger than {lq_path} ({lq.shape[0]}x{lq.shape[1]})")
        return lq, gt

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        lq, gt = self.read_pair(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        lq, gt = paired_patch(lq, gt, rng, self.patch, self.augment)
        return torch.from_numpy(lq)[None], torch.from_numpy(gt)[None]  # (1, H, W) each
