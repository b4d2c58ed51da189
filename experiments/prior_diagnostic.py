"""Where does a trained MPI-Mamba lose: in the prior the CL-DM generates, or in the backbone itself?

    python experiments/prior_diagnostic.py            # the Table 1 runs (run experiments/table1.py first)

Scores each run's backbone on the Table 1 test set with three priors:
- generated: ẑ from the CL-DM given the input alone — what inference runs, the Table 1 number;
- oracle: z = LFE(ground truth, input), the phase-1 prior, which needs the ground truth. Phase 2
  fine-tunes the backbone on ẑ, so this is not an upper bound for the final network (its SSIM can be
  lower); it shows whether handing the backbone ground-truth information would still raise its PSNR;
- zero: all-zero prior tokens (how much the backbone leans on the prior at all).
If oracle ≈ generated in PSNR, a better prior generator would not help and the backbone limits the run.
Writes results/<name>.md (default table1-prior-diagnostic.md); outputs are scored unclamped, as in Table 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import common
from mpimamba.data.paired import PairedFolder
from mpimamba.eval.evaluate import METRICS
from mpimamba.eval.metrics import scores
from mpimamba.fileutil import write_text_atomic
from mpimamba.models.checkpoint import load_model

EXPLANATION = """generated: the CL-DM's prior from the input alone (inference; Table 1's number). oracle: the phase-1
prior LFE(ground truth, input); phase 2 fine-tuned the backbone on the generated prior, so the oracle is not
an upper bound (its SSIM can be lower), but it shows whether ground-truth information in the prior would
still raise PSNR. zero: all-zero prior tokens. If oracle ≈ generated in PSNR, the backbone, not the prior
generator, limits the run."""


def shown(path: Path) -> Path:
    """A path as the results file shows it: relative to the repository when inside it."""
    full = path.resolve()
    return full.relative_to(common.REPO) if full.is_relative_to(common.REPO) else full


@torch.no_grad()
def score_priors(run: Path, lq: torch.Tensor, gt: torch.Tensor) -> dict[str, dict[str, float]]:
    """prior kind -> metric -> mean over the test images; lq, gt: (B, 1, H, W)."""
    model = load_model(run).eval()
    if not model.config.use_prior:
        raise ValueError(f"{run} is an MPI-Mamba without the latent prior: nothing to diagnose")
    generated, _, oracle_z = model.phase2(lq, gt)
    outputs = {"generated": generated, "oracle": model.backbone(lq, oracle_z),
               "zero": model.backbone(lq, torch.zeros_like(oracle_z))}
    return {kind: {m: float(v.mean()) for m, v in scores(out, gt).items()} for kind, out in outputs.items()}  # (B,) each


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    table1 = common.REPO / "runs" / "experiments" / "table1"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path, help="MPI-Mamba run folders (default: Table 1's mpi_mamba/seed*)")
    p.add_argument("--test", type=Path, default=table1 / "testset-64px-30", help="a dataset root with a test split")
    p.add_argument("--name", default="table1-prior-diagnostic", help="results file stem")
    p.add_argument("--results", type=Path, default=common.RESULTS)
    args = p.parse_args(argv)
    runs = args.runs or sorted((table1 / "mpi_mamba").glob("seed*"))
    if not runs:
        raise SystemExit(f"no runs given and none under {table1 / 'mpi_mamba'}: run experiments/table1.py first")

    dataset = PairedFolder(args.test, "test")
    pairs = [dataset.read_pair(i) for i in range(len(dataset))]
    lq, gt = (torch.stack([torch.as_tensor(p[k], dtype=torch.float32).reshape(1, *p[k].shape[-2:]) for p in pairs])
              for k in (0, 1))  # (B, 1, H, W) each

    command = " ".join(["python experiments/prior_diagnostic.py", *argv])
    lines = ["# MPI-Mamba: generated vs oracle vs zero prior", "", f"- **command**: `{command}`",
             f"- **test set**: {shown(args.test)} ({len(dataset)} images)", "",
             "| run | prior | PSNR (dB) ↑ | SSIM ↑ | nRMSE ↓ |", "|---|---|---|---|---|"]
    for run in runs:
        for kind, values in score_priors(run, lq, gt).items():
            lines.append(f"| {shown(run)} | {kind} | "
                         + " | ".join(f"{values[m]:.{2 if m == 'psnr' else 4}f}" for m in METRICS) + " |")
    lines += ["", EXPLANATION, ""]
    path = args.results / f"{args.name}.md"
    write_text_atomic(path, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
