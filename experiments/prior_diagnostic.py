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

Writes results/<name>.md (default table1-prior-diagnostic.md; kept unless --overwrite). Every variant is
restored through `mpimamba.infer.Restoration` (max normalisation, tiling, the clamp at zero), as Table 1
and `calibrate` restore, and scored like Table 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import common
from mpimamba.data.paired import PairedFolder
from mpimamba.eval.evaluate import METRICS, format_score
from mpimamba.eval.metrics import scores
from mpimamba.fileutil import write_text_atomic
from mpimamba.infer import Restoration
from mpimamba.models.base import Restorer, pad_to_multiple
from mpimamba.models.checkpoint import load_model

PRIORS = ("generated", "oracle", "zero")


def shown(path: Path) -> Path:
    """A path as the results file shows it: relative to the repository when inside it."""
    full = path.resolve()
    return full.relative_to(common.REPO) if full.is_relative_to(common.REPO) else full


class ChosenPrior(Restorer):
    """An MPI-Mamba whose backbone gets the prior chosen here instead of the CL-DM's: "oracle" = the phase-1
    LFE of (target, input), which needs `self.target` set to the image's target before each call; "zero"
    = all-zero tokens. The Restoration around it pads, tiles and normalises as for the real network."""

    def __init__(self, model, kind: str):
        super().__init__()
        self.model, self.kind, self.size_multiple = model, kind, model.size_multiple
        self.target: torch.Tensor | None = None  # (1, 1, H, W), the image being restored's target

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "zero":
            cfg = self.model.config  # the prior is group² tokens of width 4·embed_dim
            return self.model.backbone(x, x.new_zeros(x.shape[0], cfg.group**2, 4 * cfg.embed_dim))
        gt, _ = pad_to_multiple(self.target.to(x), self.model.size_multiple)
        if gt.shape != x.shape:
            raise ValueError("the oracle prior needs whole images (no tiling): the target must match the input")
        return self.model.phase1(x, gt)[0]


@torch.no_grad()
def score_priors(run: Path, dataset: PairedFolder) -> dict[str, dict[str, float]]:
    """prior kind -> metric -> mean over the test images."""
    model = load_model(run).eval()
    if not model.config.use_prior:
        raise ValueError(f"{run} is an MPI-Mamba without the latent prior: nothing to diagnose")
    variants = {"generated": model, "oracle": ChosenPrior(model, "oracle"), "zero": ChosenPrior(model, "zero")}
    restorations = {kind: Restoration(net) for kind, net in variants.items()}
    per_image: dict[str, list[dict]] = {kind: [] for kind in PRIORS}
    for i in range(len(dataset)):
        lq, gt = dataset.read_pair(i)
        peak = float(lq.max()) if lq.max() > 0 else 1.0
        # the oracle sees the target on the scale the network sees the input (Restoration divides by the peak)
        variants["oracle"].target = torch.from_numpy(gt / peak)[None, None]
        for kind in PRIORS:
            per_image[kind].append(scores(restorations[kind](lq), gt))
    return {kind: {m: float(np.mean([s[m] for s in rows])) for m in METRICS} for kind, rows in per_image.items()}


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

    command = " ".join(["python experiments/prior_diagnostic.py", *argv])
    lines = ["# MPI-Mamba: generated vs oracle vs zero prior", "", f"- **command**: `{command}`",
             f"- **git revision**: {common.git_revision()}",
             f"- **test set**: {shown(args.test)} ({len(dataset)} images)", "",
             "| run | prior | PSNR (dB) ↑ | SSIM ↑ | nRMSE ↓ |", "|---|---|---|---|---|"]
    for run in runs:
        for kind, values in score_priors(run, dataset).items():
            lines.append(f"| {shown(run)} | {kind} | " + " | ".join(format_score(m, values[m]) for m in METRICS) + " |")
    lines += ["", __doc__.split("\n\n")[2].strip(), ""]  # the docstring's paragraph explaining the rows
    path = args.results / f"{args.name}.md"
    write_text_atomic(path, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
