"""Training batches as a deterministic function of (seed, phase, step, rank), so `--resume` sees the
batches an uninterrupted run would have seen.

Two kinds of training set:
- a map-style dataset (a paired folder): every epoch is a seeded permutation of the items, dealt to the
  ranks; `dataset.set_epoch(key)` (when it has one) makes its random crops/flips a function of the epoch
  too. A run resumed at step s re-derives the epoch and the offset inside it.
- a seeded infinite stream (simulated pairs), given as `make(seed) -> IterableDataset`: the stream is
  re-seeded every `segment` steps (the checkpoint interval), so a resumed run restarts the very segment
  it stopped in. DataLoader workers shard the stream inside the dataset, so keep `--workers` unchanged
  across a resume.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterator, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

Pair = tuple[torch.Tensor, torch.Tensor]
StreamFactory = Callable[[int], IterableDataset]


def derive_seed(*parts: int) -> int:
    """Mix integers into one well-spread 63-bit seed (so seed+1 and phase+1 never collide). numpy's
    SeedSequence ignores trailing zeros, so (s, p) and (s, p, 0) give the same seed: every call site
    passes a fixed number of parts, which keeps them apart."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@dataclass
class TrainData:
    train: Union[Dataset, StreamFactory]  # map-style dataset, or seed -> infinite IterableDataset
    val: list[Pair]  # a small fixed validation set, each (C, H, W)
    batched: bool = False  # the stream yields whole batches (mixed patch sizes) rather than single pairs


def _map_batches(dataset: Dataset, *, seed: int, phase: int, start: int, batch: int, rank: int,
                 world: int, workers: int) -> Iterator[Pair]:
    n = len(dataset)
    per_rank = n // world
    per_epoch = per_rank // batch  # whole batches per rank per epoch (the remainder is dropped)
    if per_epoch == 0:
        raise ValueError(f"the training set has {n} pairs: too few for batch {batch} on {world} process(es)")
    epoch, offset = divmod(start, per_epoch)
    while True:
        g = torch.Generator().manual_seed(derive_seed(seed, phase, epoch))
        order = torch.randperm(n, generator=g)[rank::world][:per_rank]  # this rank's share of the epoch
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(derive_seed(seed, phase, epoch) % 2**31)
        loader = DataLoader(dataset, batch_size=batch, sampler=order[offset * batch:].tolist(),
                            num_workers=workers, drop_last=True)
        yield from loader
        epoch, offset = epoch + 1, 0


def _stream_batches(make: StreamFactory, *, seed: int, phase: int, start: int, batch: int | None, rank: int,
                    workers: int, segment: int) -> Iterator[Pair]:
    seg, skip = divmod(start, segment)
    while True:
        loader = DataLoader(make(derive_seed(seed, phase, seg, rank)), batch_size=batch, num_workers=workers)
        # a resume always lands on a segment boundary (checkpoints are written at them); skipping covers
        # the odd case that it does not, at the price of generating the skipped batches
        yield from islice(iter(loader), skip, segment)
        seg, skip = seg + 1, 0


def batches(data: TrainData, *, seed: int, phase: int, start: int, batch: int, rank: int = 0, world: int = 1,
            workers: int = 0, segment: int = 1000) -> Iterator[Pair]:
    """Infinite iterator of (lq, gt) batches, (B, C, H, W) each, for steps start, start + 1, ... (a stream
    with geometry adds each pair's scan geometry, (B, 2)); `batch` is ignored by a stream of whole batches."""
    if isinstance(data.train, Dataset) and not isinstance(data.train, IterableDataset):
        return _map_batches(data.train, seed=seed, phase=phase, start=start, batch=batch, rank=rank,
                            world=world, workers=workers)
    if callable(data.train):
        return _stream_batches(data.train, seed=seed, phase=phase, start=start, batch=None if data.batched else batch,
                               rank=rank, workers=workers, segment=segment)
    raise TypeError("TrainData.train must be a map-style Dataset or a callable seed -> IterableDataset")


def build_data(cfg) -> TrainData:
    """The datasets a TrainConfig names: a paired folder (`cfg.data`) or the simulated stream."""
    if cfg.data is not None:
        from ..data.paired import PairedFolder

        train = PairedFolder(cfg.data, "train", patch=cfg.patch, augment=True, seed=cfg.seed)
        # checked now, before any run folder exists, rather than at the first batch
        if len(train) < cfg.batch:
            raise ValueError(f"{cfg.data}/train holds {len(train)} pair(s), fewer than the batch of {cfg.batch}")
        train.read_pair(0)  # a readable pair, each side at least the patch
        val_set = PairedFolder(cfg.data, "val")
        val = [val_set[i] for i in range(min(cfg.val_images, len(val_set)))]
        return TrainData(train=train, val=val)

    from ..data.synthetic import MixedSizeBatches, SyntheticPairs
    from .terms import switched_on

    protocol = cfg.protocol
    # (protocol, patch, batch) of each size: the first on the protocol as it is (checked against the patch by
    # TrainConfig), the others on its canvas raised to their patch
    sizes = [(protocol, cfg.patch, cfg.batch), *((protocol.for_patch(p), p, b) for p, b in cfg.mixed_patches)]

    geometry = any(term.needs_geometry for term, _ in switched_on(cfg))  # each pair's scan geometry as well

    def make(seed: int) -> IterableDataset:
        # one simulated batch per training batch (the PSF model runs as one batched FFT)
        if cfg.mixed_patches:
            return MixedSizeBatches(sizes, seed=seed, geometry=geometry)
        return SyntheticPairs(protocol, size=cfg.patch, seed=seed, batch=cfg.batch, geometry=geometry)

    # a fixed validation set of whole canvases (restored as a user's image is), from a stream whose seed no
    # training segment uses
    # (a protocol with a range of canvases is validated at its typical one)
    canvas = protocol.typical_canvas(cfg.patch)
    whole = dataclasses.replace(protocol, canvas=canvas)
    val_stream = SyntheticPairs(whole, size=canvas, seed=derive_seed(cfg.seed, 2**31), batch=cfg.val_images)
    val = list(islice(iter(val_stream), cfg.val_images))
    return TrainData(train=make, val=val, batched=bool(cfg.mixed_patches))
