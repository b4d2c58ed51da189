"""Data-parallel training across processes started by `torchrun`; one plain process needs nothing.

`torchrun --nproc_per_node N -m mpimamba.cli train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; we join
the process group (nccl on GPUs, gloo on CPUs) and wrap the network in DistributedDataParallel, which
averages gradients across processes so every replica takes the same step. Each rank reads its own data
shard (the loop passes `rank` into the data stream); only rank 0 writes files and shows the progress bar.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..infer import resolve_device


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device
    owns_group: bool = False  # we joined the process group, so we leave it; a caller's group stays

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Context:
    """Join torchrun's process group when WORLD_SIZE > 1 (unless the caller already has); else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    owns_group = world > 1 and not dist.is_initialized()
    if owns_group:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Context(rank=rank, world=world, device=dev, owns_group=owns_group)


def wrap(module: nn.Module, ctx: Context, find_unused: bool) -> nn.Module:
    """DDP-wrap `module` when running on several processes (broadcasts rank 0's weights)."""
    if ctx.world == 1:
        return module
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def any_rank(ctx: Context, flag: bool) -> bool:
    """True on every rank when `flag` is true on any: a decision to stop (Ctrl-C, a diverged loss) must be
    taken by all ranks at the same step, or those still stepping wait in the next all-reduce forever."""
    if ctx.world == 1:
        return flag
    agreed = torch.tensor([1 if flag else 0], dtype=torch.int32, device=ctx.device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return bool(agreed.item())


def barrier(ctx: Context) -> None:
    if ctx.world > 1:
        dist.barrier()


def teardown(ctx: Context) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
