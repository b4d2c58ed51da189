"""Table 5: training patch size 16, 32, 64 for MPI-Mamba, batch fixed.

    python experiments/table5.py                     # the CPU budget below, ~1 h on 2 cores
    python experiments/table5.py --preset paper --steps 100000 --batch 32 --device cuda

The batch is fixed (as in the paper), so a 16×16 patch sees 1/16 of the pixels per step of a 64×64 one.
Patches are random crops (with flips/rotations) of a fixed on-disk training set of full-size simulated
pairs (`--train-count` pairs of --test-size, 8:1:1, written once with write_dataset seed
common.TRAIN_SET_SEED), so only the crop changes between rows — simulating 16×16 phantoms directly would
change the phantoms' scale instead. Data: the authors' setting (`common.AUTHORS`: PSF model,
9 T/m, x-scan, target = phantom, SNR 30-40 dB) for training and test.

Default budget (about an hour on a 2-core CPU at --preset small, estimated from the per-step times
measured for Table 1; a step costs about in proportion to the patch area): 150 steps per phase, batch 4,
seeds 101 102, 1000 training pairs, 30 test images of 64×64 — a pipeline check, far from convergence.

Writes results/table5.md and .csv; runs go to runs/experiments/table5/patch<P>/seed<S> and are reused or
resumed when the command is rerun.
"""

from __future__ import annotations

import sys

import common

TITLE = "Table 5: MPI-Mamba trained on patches of 16, 32 and 64 pixels (batch fixed)"
NOTES = """
Same seeds, steps, batch and schedule for every row; the training patch is the only difference (the
pixels per batch grow with its area). Tested on whole test images.
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = common.parser(__doc__, steps=150, batch=4, seeds=[101, 102], test_count=30)
    p.add_argument("--patches", type=int, nargs="+", default=[16, 32, 64], help="training patch sizes, one row each")
    p.add_argument("--train-count", type=int, default=1000, help="simulated pairs in the on-disk training set")
    args = p.parse_args(argv)
    too_big = [q for q in args.patches if not 8 <= q <= args.test_size]
    if too_big:
        p.error(f"--patches must lie in 8..--test-size ({args.test_size}), got {too_big}")

    common.check_results("table5", args.results, args.overwrite)  # before spending time on the training set
    train_root = common.training_set(common.runs_root("table5", args), common.AUTHORS,
                                     args.train_count, args.test_size)
    rows = [common.Row(f"patch{q}", f"patch {q}", {"patch": q}) for q in args.patches]
    common.run_table("table5", TITLE, rows, args, argv, common.AUTHORS,
                     {"method": "mpi_mamba", "data": str(train_root)},
                     {"patches": " ".join(map(str, args.patches)),
                      "training data": f"{args.train_count} pairs on disk ({train_root.name}), "
                                       f"write_dataset seed {common.TRAIN_SET_SEED}, "
                                       + common.describe(common.AUTHORS)}, NOTES)


if __name__ == "__main__":
    common.run_script(main)
