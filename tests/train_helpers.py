"""Stand-ins for the training tests: a seeded stream of anisotropically blurred blobs, a tiny paired
folder on disk, a one-phase and a two-phase conv `Restorer` registered under test-only method names."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset

from mpimamba.models import registry
from mpimamba.models.base import Restorer


def blob_pair(g: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """gt = a few Gaussian blobs; lq = gt blurred along x only (the anisotropy MPI restores)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    gt = torch.zeros(size, size)
    for _ in range(3):
        cy, cx = torch.rand(2, generator=g) * size
        r = 1.0 + 2.0 * torch.rand(1, generator=g)
        gt += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    gt = gt / gt.max()
    kernel = torch.exp(-torch.arange(-4, 5.0) ** 2 / 8.0)
    lq = F.conv2d(gt[None, None], (kernel / kernel.sum())[None, None, None], padding=(0, 4))[0]
    return lq, gt[None]  # (1, S, S) each


class BlobStream(IterableDataset):
    def __init__(self, seed: int, size: int = 16):
        self.seed, self.size = seed, size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        while True:
            yield blob_pair(g, self.size)


def watched_stream(on_pair, size: int = 16):
    """A blob stream factory (as `blob_data`'s) that calls `on_pair(n)` before yielding the n-th pair drawn,
    n counted from 1 over the whole run (every stream the factory makes): the place to inject a kill, a
    Ctrl-C or a clock tick at a known point of training."""
    drawn = [0]

    def make(seed):
        class Stream(BlobStream):
            def __iter__(self):
                for pair in super().__iter__():
                    drawn[0] += 1
                    on_pair(drawn[0])
                    yield pair

        return Stream(seed, size)

    return make


def write_blob_folder(root: Path, counts=(12, 2), size: int = 24) -> Path:
    from mpimamba.data.io import write_image

    g = torch.Generator().manual_seed(5)
    for split, n in zip(("train", "val"), counts):
        for i in range(n):
            lq, gt = blob_pair(g, size)
            write_image(root / split / "lq" / f"im{i}.npy", lq[0].numpy())
            write_image(root / split / "gt" / f"im{i}.npy", gt[0].numpy())
    return root


class TinyConv(Restorer):
    def __init__(self, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, (3, 9), padding=(1, 4)), nn.GELU(), nn.Conv2d(width, 1, 3, padding=1))

    def restore(self, x):
        return x + self.body(x)


class TwoPhase(Restorer):
    """Phase 1 trains `first`; phase 2 trains `second` on top of the frozen `first`."""

    phases = ("phase1", "phase2")

    def __init__(self, width: int = 4):
        super().__init__()
        self.first = nn.Conv2d(1, 1, (1, 9), padding=(0, 4))
        self.second = nn.Conv2d(1, 1, 3, padding=1)

    def restore(self, x):
        y = self.first(x)
        return y + self.second(y)

    def training_loss(self, lq, gt, phase="phase2"):
        out = self.first(lq) if phase == "phase1" else self(lq)
        return {"loss": F.l1_loss(out, gt), "output": out}

    def phase_parameters(self, phase="phase2"):
        return (self.first if phase == "phase1" else self.second).parameters()


def register(monkeypatch=None) -> None:
    """Register `tinyconv` and `twophase` as methods (via pytest's monkeypatch when given)."""
    for name, cls in (("tinyconv", TinyConv), ("twophase", TwoPhase)):
        module = types.ModuleType(f"_test_{name}")
        module.PRESETS, module.MODEL = {"tiny": {}}, cls
        if monkeypatch is None:
            sys.modules[module.__name__] = module
            registry.METHODS[name] = module.__name__
        else:
            monkeypatch.setitem(sys.modules, module.__name__, module)
            monkeypatch.setitem(registry.METHODS, name, module.__name__)


def state_digest(model: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def blob_data(size: int = 16, val: int = 4):
    from mpimamba.train import TrainData

    val_stream = iter(BlobStream(seed=999, size=size))
    return TrainData(train=lambda seed: BlobStream(seed, size), val=[next(val_stream) for _ in range(val)])
