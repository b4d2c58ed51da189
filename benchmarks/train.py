"""Training-loop throughput on this machine, all measured in one run:

- the simulated data stream alone (pairs/s, one process, no workers);
- whole training steps through `mpimamba.train.train` (img/s: data + forward + backward + clipping +
  AdamW, the median over the steps of the run's log.csv), per method and phase;
- the ratio stream / training: above 1 the simulator keeps up with the network in the main process;
  below 1 use `--workers`.

    python benchmarks/train.py [--methods nafnet mpi_mamba] [--preset tiny] [--patch 64] [--batch 8] [--steps 6]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

from mpimamba.train import TrainConfig, train
from mpimamba.train.data import batches, build_data


def stream_rate(cfg: TrainConfig, n_batches: int) -> float:
    data = build_data(cfg)
    it = batches(data, seed=cfg.seed, phase=0, start=0, batch=cfg.batch)
    next(it)  # first batch pays one-off set-up costs
    t = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * cfg.batch / (time.perf_counter() - t)


def train_rates(cfg: TrainConfig) -> dict[str, float]:
    train(cfg)
    with open(Path(cfg.out) / "log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["img_per_s"]]
    rates: dict[str, list[float]] = {}
    for r in rows:
        if int(r["step"]) > 1:  # step 1 pays warm-up (allocations, lazy inits)
            rates.setdefault(r["phase"], []).append(float(r["img_per_s"]))
    return {phase: statistics.median(v) for phase, v in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["nafnet", "mpi_mamba"])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = dict(preset=args.preset, patch=args.patch, batch=args.batch, steps=args.steps, val_images=1,
                    val_every=args.steps, ckpt_every=args.steps, device=args.device)
        stream = stream_rate(TrainConfig(method=args.methods[0], **base), n_batches=args.steps)
        print(f"simulated stream, patch {args.patch}, batch {args.batch}: {stream:.1f} pairs/s")
        for method in args.methods:
            cfg = TrainConfig(method=method, out=str(Path(tmp) / method), **base)
            for phase, rate in train_rates(cfg).items():
                print(f"{method:10s} {args.preset:6s} {phase:7s} {rate:8.2f} img/s   "
                      f"stream/train = {stream / rate:6.1f}x")


if __name__ == "__main__":
    main()
