"""Run under `torchrun --nproc_per_node 2 tests/ddp_worker.py OUT`: trains nafnet tiny (one phase) and the
two-phase stand-in with DDP (gloo) on CPU; every rank writes the digest of its trained weights and of its first
batch to OUT/<method>.rank<r>.txt for the test to compare."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import train_helpers as th  # noqa: E402

from mpimamba.train import TrainConfig, train  # noqa: E402
from mpimamba.train.data import batches  # noqa: E402

out = Path(sys.argv[1])
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
torch.set_num_threads(1)
# one process group for both runs (train() leaves a group it did not create alone)
torch.distributed.init_process_group("gloo")
th.register()
for method in ("nafnet", "twophase"):
    cfg = TrainConfig(method=method, preset="tiny", steps=3, batch=2, patch=16, lr=1e-3, ckpt_every=3,
                      val_every=3, device="cpu", out=str(out / method))
    data = th.blob_data(size=16, val=1)
    model = train(cfg, data=data)
    lq, _ = next(batches(data, seed=cfg.seed, phase=0, start=0, batch=cfg.batch, rank=rank, world=world))
    first_batch = th.state_digest(torch.nn.ParameterList([torch.nn.Parameter(lq)]))
    (out / f"{method}.rank{rank}.txt").write_text(f"{th.state_digest(model)}\n{first_batch}\n")
