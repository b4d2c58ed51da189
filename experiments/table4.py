"""Table 4: ablation of MPI-Mamba — backbone, +SSM, +prior (CL-DM), both.

    python experiments/table4.py                     # the CPU budget below, ~1 h on 2 cores
    python experiments/table4.py --preset paper --steps 100000 --batch 32 --device cuda

Rows (network overrides through `TrainConfig.overrides`):
- backbone: `use_ssm=False, use_prior=False` — the U-Net with Restormer-style transposed channel
  attention in place of the SS2D scan, and no latent prior;
- +SSM: `use_prior=False` — SS2D selective scans, no prior;
- +prior (CL-DM): `use_ssm=False` — the prior from the LFE / conditional latent diffusion, no SSM;
- +SSM +prior: the full MPI-Mamba.
Rows with the prior train in two phases, the others in one; every phase gets the same --steps.

Data: the authors' setting (`common.AUTHORS`: PSF model, 9 T/m, x-scan, target = phantom,
SNR 30-40 dB) for training and test. Default budget (about an hour on a 2-core CPU at --preset small,
estimated from the per-step times measured for Table 1): 80 steps per phase, batch 4, patch 64, seeds
101 102, 30 test images of 64×64 — a pipeline check, far from convergence.

Writes results/table4.md and .csv; runs go to runs/experiments/table4/<row>/seed<S> and are reused or
resumed when the command is rerun.
"""

from __future__ import annotations

import sys

import common

TITLE = "Table 4: MPI-Mamba ablation (SSM and latent prior)"
NOTES = """
Same data, seeds, steps per phase and schedule for every row; rows with the prior have a second phase
(CL-DM training + backbone fine-tuning), so they train twice as many steps in total, as in the paper.
"""

ROWS = [
    common.Row("backbone", "backbone", {"overrides": {"use_ssm": False, "use_prior": False}}),
    common.Row("ssm", "+SSM", {"overrides": {"use_prior": False}}),
    common.Row("prior", "+prior (CL-DM)", {"overrides": {"use_ssm": False}}),
    common.Row("ssm_prior", "+SSM +prior (MPI-Mamba)", {"overrides": {}}),
]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = common.parser(__doc__, steps=80, batch=4, seeds=[101, 102], test_count=30)
    p.add_argument("--patch", type=int, default=64, help="training patch")
    args = p.parse_args(argv)

    data = {"method": "mpi_mamba", "patch": args.patch,
            "protocol": common.AUTHORS}
    common.run_table("table4", TITLE, ROWS, args, argv, common.AUTHORS, data,
                     {"patch": args.patch,
                      "training data": "simulated stream, " + common.describe(common.AUTHORS)}, NOTES)


if __name__ == "__main__":
    common.run_script(main)
