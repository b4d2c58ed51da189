"""Table 1 and Figure 6: the 8 networks and the 2 training-free deconvolutions on the simulation test set.

    python experiments/table1.py                     # the CPU budget below, ~1 h on 2 cores
    python experiments/table1.py --preset paper --steps 100000 --batch 32 --device cuda   # the paper's

Data (training stream and test set alike): the authors' setting — PSF model, isotropic gradient 9 T/m,
x-scan, target = the phantom, Gaussian noise at an SNR drawn per pair in 30-40 dB, all phantom
categories (`common.AUTHORS`). Every method sees the same simulated batches (same seeds), patch 64,
the same steps per phase (MPI-Mamba and DiffIR have two phases) and the same AdamW / constant-then-cosine
schedule. Rows are mean ± std over the seeds (default 101 102 103).

Default budget (all 24 runs at --preset small on a 2-core CPU, idle, 2 torch threads: about 65 min):
200 steps per phase, batch 4, 30 test images of 64×64. Measured per seed: MPI-Mamba ~540 s (two phases,
~1.35 s/step), SwinIR ~145 s, Restormer ~130 s, DiffIR ~220 s (two phases), SFM ~85 s, AEPNet ~40 s,
FDS ~33 s, NAFNet ~23 s. That is far too short for the networks to converge; the table it gives checks
the pipeline and shows how fast each network learns early on, not the paper's ranking — use a GPU and
--steps in the thousands for that.

Writes results/table1.md, results/table1.csv and results/figure6.png (the first 4 test images restored by
each method's first-seed run, with error maps). Runs go to runs/experiments/table1/<method>/seed<S>;
rerunning the command reuses finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import sys

import common
from mpimamba.models.registry import METHODS

TITLE = "Table 1: all methods on the simulation test set (PSF model, G = 9 T/m, x-scan)"
NOTES = """
The paper's Table 1 protocol at the budget above. Same data, steps, batch, patch and schedule for every
method; the published comparison trains each for 100k steps at batch 32, so at a CPU budget the ranking
reflects how fast each network learns early on as much as how good it is. Figure: figure6.png.
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = common.parser(__doc__, steps=200, batch=4, seeds=[101, 102, 103], test_count=30)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                   help="a subset of the methods (default: all 8 networks and wiener, richardson_lucy)")
    p.add_argument("--patch", type=int, default=64, help="training patch (the paper: 64)")
    args = p.parse_args(argv)

    rows = [common.Row(m, m, {"method": m}) for m in args.methods]
    data = {"protocol": common.AUTHORS, "patch": args.patch}
    runs, test_root = common.run_table(
        "table1", TITLE, rows, args, argv, common.AUTHORS, data,
        {"patch": args.patch, "training data": "simulated stream, " + common.describe(common.AUTHORS)}, NOTES,
        focus="mpi_mamba" if "mpi_mamba" in args.methods else None)
    figure = common.save_figure({m: seeds[0] for m, seeds in runs.items()}, {r.key: r.label for r in rows},
                                test_root, args.results / "figure6.png", args.device)
    print(f"wrote {figure}")


if __name__ == "__main__":
    common.run_script(main)
