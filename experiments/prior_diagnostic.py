"""How much does a trained MPI-Mamba's output depend on its latent prior?

    python experiments/prior_diagnostic.py            # the Table 1 runs (run experiments/table1.py first)

Scores each run (a run folder or a .safetensors file) on the Table 1 test set with three priors:
- generated: ẑ from the CL-DM given the input alone — what inference runs, the Table 1 number;
- oracle: z = LFE(ground truth, input), the phase-1 prior, which needs the ground truth. Phase 2
  fine-tunes the backbone on ẑ, so this is not an upper bound for the final network (its SSIM can be
  lower than the generated prior's);
- zero: all-zero prior tokens.
When the three score alike, the backbone does the work and the prior carries little; when zero falls far
below the others, the prior matters. It does not say whether a better CL-DM would help a fine-tuned
backbone.

Writes results/<name>.md (default table1-prior-diagnostic.md; kept unless --overwrite); outputs are scored
unclamped, as in Table 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import common
from mpimamba.data.paired import PairedFolder
from mpimamba.eval.evaluate import METRICS, format_score
from mpimamba.eval.metrics import scores
from mpimamba.fileutil import write_text_atomic
from mpimamba.models.base import pad_to_multiple
from mpimamba.models.checkpoint import load_model

PRIORS = ("generated", "oracle", "zero")


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
    generated, _, oracle_z = model.phase2(lq, gt)  # phase2 pads and crops by itself
    lq_padded, (h, w) = pad_to_multiple(lq, model.size_multiple)  # the backbone needs sides divisible by 8
    outputs = {"generated": generated,
               "oracle": model.backbone(lq_padded, oracle_z)[..., :h, :w],
               "zero": model.backbone(lq_padded, torch.zeros_like(oracle_z))[..., :h, :w]}
    # scores() gives (B,) per metric; the row is their mean
    return {kind: {m: float(v.mean()) for m, v in scores(outputs[kind], gt).items()} for kind in PRIORS}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    table1 = common.REPO / "runs" / "experiments" / "table1"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path,
                        help="MPI-Mamba run folders or .safetensors files (default: Table 1's mpi_mamba/seed*)")
    parser.add_argument("--test", type=Path, default=table1 / "testset-64px-30", help="a dataset root with a test split")
    parser.add_argument("--name", default="table1-prior-diagnostic", help="results file stem")
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    args = parser.parse_args(argv)
    common.check_results(args.name, args.results, args.overwrite)
    runs = args.runs or sorted((table1 / "mpi_mamba").glob("seed*"))
    if not runs:
        raise SystemExit(f"no runs given and none under {table1 / 'mpi_mamba'}: run experiments/table1.py first")

    dataset = PairedFolder(args.test, "test")
    lq, gt = (torch.stack(images) for images in zip(*(dataset[i] for i in range(len(dataset)))))  # (B, 1, H, W) each

    command = " ".join(["python experiments/prior_diagnostic.py", *argv])
    lines = ["# MPI-Mamba: generated vs oracle vs zero prior", "", f"- **command**: `{command}`",
             f"- **git revision**: {common.git_revision()}",
             f"- **test set**: {shown(args.test)} ({len(dataset)} images)", "",
             "| run | prior | PSNR (dB) ↑ | SSIM ↑ | nRMSE ↓ |", "|---|---|---|---|---|"]
    for run in runs:
        for kind, values in score_priors(run, lq, gt).items():
            lines.append(f"| {shown(run)} | {kind} | " + " | ".join(format_score(m, values[m]) for m in METRICS) + " |")
    lines += ["", __doc__.split("\n\n")[2].strip(), ""]  # the docstring's paragraph explaining the rows
    path = args.results / f"{args.name}.md"
    write_text_atomic(path, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
