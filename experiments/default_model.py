"""Train the model shipped in `src/mpimamba/weights/` (MPI-Mamba `small`) and install it there.

    .venv/bin/python experiments/default_model.py [--steps N] [--batch B] [--out runs/default-model]

Data: the simulated stream of `mpimamba.pretrained.PROTOCOL` (see `mpimamba.physics.protocols`). The run
is resumable: rerun the same command after an interruption and it continues from RUN/checkpoint.pt (the
loop writes one every 50 steps and at the end of each phase). When both phases are done the weights are
installed with `pretrained.install` (atomic) and the training settings and wall time recorded in the JSON;
`experiments/model_card.py` then regenerates docs/model-card.md from the installed model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import common
from mpimamba import pretrained
from mpimamba.physics.protocols import PROTOCOLS
from mpimamba.threads import configure_threads
from mpimamba.train.config import TrainConfig
from mpimamba.train.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1700, help="optimiser steps in each of the two phases")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4, help="higher than the released 2e-4: the CPU budget is ~100x shorter")
    parser.add_argument("--out", type=Path, default=Path("runs/default-model"))
    parser.add_argument("--overwrite", action="store_true", help="start over instead of continuing RUN")
    parser.add_argument("--protocol", default=pretrained.PROTOCOL.name, choices=sorted(PROTOCOLS),
                        help="training data (default: the recipe's, pretrained.PROTOCOL)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--no-install", action="store_true", help="train only; leave the shipped weights alone")
    args = parser.parse_args()
    configure_threads(args.threads)

    cfg = TrainConfig(
        method=pretrained.METHOD, preset=pretrained.PRESET, protocol=PROTOCOLS[args.protocol], steps=args.steps,
        batch=args.batch, patch=args.patch, lr=args.lr, ckpt_every=50, val_every=100, val_images=16,
        out=str(args.out), label="mpi_mamba", device="cpu",
    )
    start = time.perf_counter()
    if args.overwrite:
        train(cfg, overwrite=True)
    else:  # reuse a finished run of these settings, resume an interrupted one, refuse one of others
        common.run_training(cfg)
    wall = time.perf_counter() - start
    if args.no_install:
        return
    installed = pretrained.install(args.out, {
        **cfg.to_dict(), "recipe": pretrained.RECIPE, "wall_seconds_last_invocation": round(wall),
        "torch_threads": torch.get_num_threads(),
    })
    print(f"installed {installed} ({installed.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
