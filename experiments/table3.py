"""Table 3: mixing "scanner-like" pairs into PSF-model training, tested on scanner-like pairs (MPI-Mamba).

    python experiments/table3.py                     # the CPU budget below, ~1 h on 2 cores
    python experiments/table3.py --preset paper --steps 100000 --batch 32 --device cuda

Training data: the authors' PSF-model stream (`common.AUTHORS`: 9 T/m, x-scan, target = phantom,
SNR 30-40 dB) with a fraction of its pairs (0, 10, 30, 50, 80, 100 %; `--fractions`) replaced by
"scanner-like" pairs: the same phantoms and noise imaged by the time-domain x-space model (a Cartesian
raster, one line per pixel row, Langevin particle response; `PairConfig(model="xspace")`). Test set:
scanner-like pairs only, from a seed no training stream uses. The paper mixes time-domain Lissajous
simulations; our scanner-like protocol is a raster with the same x-space physics (DESIGN §2).

Default budget (about an hour on a 2-core CPU at --preset small, estimated from the per-step times
measured for Table 1): 40 steps per phase, batch 4, patch 64, seeds 101 102, 30 test images of 64×64 —
a check of the pipeline, far from convergence.

Writes results/table3.md and .csv; runs go to runs/experiments/table3/xspace<PCT>/seed<S> and are reused
or resumed when the command is rerun.
"""

from __future__ import annotations

import sys

import common

TITLE = "Table 3: share of scanner-like (x-space) pairs in MPI-Mamba's training data, tested on scanner-like pairs"
NOTES = """
Rows: the percentage of training pairs simulated with the time-domain x-space raster model (the rest use
the PSF model). Same seeds, steps and schedule for every row; only the forward model of the mixed-in
pairs differs.
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = common.parser(__doc__, steps=40, batch=4, seeds=[101, 102], test_count=30)
    p.add_argument("--fractions", type=int, nargs="+", default=[0, 10, 30, 50, 80, 100],
                   help="percent of scanner-like pairs in training, one row each")
    p.add_argument("--patch", type=int, default=64, help="training patch")
    args = p.parse_args(argv)
    bad = [f for f in args.fractions if not 0 <= f <= 100]
    if bad:
        p.error(f"--fractions must be percentages in 0..100, got {bad}")

    rows = [common.Row(f"xspace{f:03d}", f"{f} % scanner-like",
                       {"protocol": common.AUTHORS.replace(xspace_fraction=f / 100)}) for f in args.fractions]
    scanner_like = common.AUTHORS.replace(model="xspace")
    common.run_table("table3", TITLE, rows, args, argv, scanner_like,
                     {"method": "mpi_mamba", "patch": args.patch},
                     {"patch": args.patch, "training data": "simulated stream, " + common.describe(common.AUTHORS)
                                       + " with the row's share of model=xspace pairs"}, NOTES)


if __name__ == "__main__":
    common.run_script(main)
