"""Simulator speed, all measured in one run (issue 2 targets in brackets):

- PSF model at 128×128: pairs/s of the batched FFT forward model alone [>= 200], and of whole pairs
  (phantom drawing + forward model + noise + normalisation, one process);
- time-domain x-space simulator on the authors' protocol (Lissajous 25 / 24.75 kHz, 9,900 samples,
  120×120 at 0.25 mm, G = 9 T/m): operator build time, then images/s [>= 20];
- the operator form against the plain per-pixel loop of the same physics on a small grid [>= 100×].

    python benchmarks/simulate.py [--batch 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from _timing import best_of
from mpimamba.physics.pairs import PairConfig, make_pairs
from mpimamba.physics.phantoms import random_phantom
from mpimamba.physics.psf import PSFForward
from mpimamba.physics.xspace import XSpaceOperator, lissajous, simulate_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")

    # --- PSF model, 128×128
    phantoms = torch.from_numpy(np.stack([random_phantom(rng, 128) for _ in range(args.batch)]))
    forward = PSFForward((128, 128), "x")
    with torch.no_grad():
        t = best_of(args.repeats, lambda: forward(phantoms))
    psf_rate = args.batch / t
    t = best_of(args.repeats, lambda: make_pairs(rng, PairConfig(snr_db=30.0), 128, args.batch))
    pair_rate = args.batch / t
    print(f"PSF model 128x128: forward {psf_rate:8.0f} pairs/s ({psf_rate / 200:.1f}x the 200/s target); "
          f"whole pairs incl. phantoms {pair_rate:6.0f} pairs/s (one process)")

    # --- time-domain simulator, the authors' 120×120 Lissajous protocol
    trajectory = lissajous()
    t0 = time.perf_counter()
    operator = XSpaceOperator(trajectory, (120, 120), 0.25, 9.0)
    build = time.perf_counter() - t0
    batch120 = np.stack([random_phantom(rng, 120) for _ in range(args.batch)])
    xs_rate = args.batch / best_of(args.repeats, lambda: operator(batch120))
    print(f"time-domain 120x120 Lissajous ({len(trajectory.position)} samples): build {build:.1f} s "
          f"(operator {operator.native.numel() * 4 / 2**20:.0f} MiB), then {xs_rate:.1f} images/s "
          f"({xs_rate / 20:.1f}x the 20/s target)")
    del operator

    # --- operator vs per-pixel loop, same protocol on a 24×24 grid (1.25 mm pixels over the same ±15 mm)
    small = rng.random((args.batch, 24, 24)).astype(np.float32)  # dense: the loop skips no pixel
    loop_s = best_of(1, lambda: simulate_loop(small[0], trajectory, 1.25, 9.0))
    t0 = time.perf_counter()
    op_small = XSpaceOperator(trajectory, (24, 24), 1.25, 9.0)
    build_small = time.perf_counter() - t0
    apply_s = best_of(args.repeats, lambda: op_small(small)) / args.batch
    diff = np.abs(op_small(small[:1])[0] - simulate_loop(small[0], trajectory, 1.25, 9.0)).max()
    print(f"24x24 grid: per-pixel loop {loop_s * 1e3:.0f} ms/image, operator {apply_s * 1e3:.3f} ms/image "
          f"-> {loop_s / apply_s:.0f}x (target >= 100x); operator build {build_small:.2f} s, so build + one "
          f"image is {loop_s / (build_small + apply_s):.1f}x one loop image; max |difference| {diff:.1e}")


if __name__ == "__main__":
    main()
