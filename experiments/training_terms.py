"""What a training term gives: the physics-consistency term (`--term physics`: `--physics-weight`,
`refine.consistency_loss`), the local-mass term (`--term mass`: `--mass-weight`,
`train.terms.local_mass_loss`), the squared-error term (`--term mse`: `--mse-weight`,
`train.terms.squared_error_loss`), the edge term (`--term edge`: `--edge-weight`, `train.terms.edge_loss`)
or the weight average (`--term ema`: `--ema-decay`, `train.ema`; its
"weights" are decays). The shipped model is fine-tuned with phase 2 only, the same steps, data, patch sizes
and seed, once per weight (weight 0 is the control: the same fine-tuning without the term), each scored on

- the 40 demo pairs (`mpimamba demo --per-category 8`: the shipped model's protocol, 128x128, a seed
  space no training stream uses): PSNR / SSIM gain over the input, mass ratio and interior fill per
  phantom category, and the consistency residual of the output (how well the output, blurred by the
  pair's own PSF, explains the input: `refine.consistency_loss`, 0 = perfectly);
- 20 pairs outside the training ranges (4 T/m, 0.5 mm pixels; same categories), the same figures.

    python experiments/training_terms.py --term physics      # ~35 min on a 2-core CPU at 1 thread
    python experiments/training_terms.py --term mass --weights 0 1 3 --mixed-patch 128x2   # ~45 min
    python experiments/training_terms.py --term mass --weights 0 1 --steps 100
    python experiments/training_terms.py --term ema --weights 0 0.99 --steps 400 --mixed-patch 128x2 \
        --val-every 25                                                                  # ~50 min

The validation PSNR along each run (8 images, `--val-every`) is tabulated too: an average of the weights
differs from the weights most while the learning rate is high.

Runs go to runs/experiments/<term>-weight/w<weight> (resumable; a finished run is reused, never
committed); the results go to experiments/results/<term>-weight.md and .json (refused if they exist,
unless --overwrite).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import common
from mpimamba import pretrained
from mpimamba.cli import patch_and_batch
from mpimamba.demo import demo_pairs
from mpimamba.eval.metrics import psnr, ssim
from mpimamba.eval.quantitative import interior_fill, mass_ratio
from mpimamba.fileutil import write_text_atomic
from mpimamba.infer import Restoration
from mpimamba.models.checkpoint import load_model
from mpimamba.physics.pairs import make_pairs
from mpimamba.refine import consistency_loss
from mpimamba.train.config import TrainConfig
from mpimamba.train.terms import TERMS
from mpimamba.threads import configure_threads

# setting -> (TrainConfig field, the results' title): every training term's weight, and the weight average
SETTINGS = {**{t.name: (t.field, f"The {t.title} training term (`--{t.name}-weight`)") for t in TERMS},
            "ema": ("ema_decay", "The moving average of the weights (`--ema-decay`)")}
OUTSIDE = dict(gradient=4.0, spacing_mm=0.5)  # training: 5-12 T/m, 0.2-0.5 mm (G·spacing 1-6: this is 2)
OUTSIDE_COUNT = 20
OUTSIDE_ENTROPY = 0x0F15_1C5  # a seed space of its own (the demo's is demo.DEMO_ENTROPY)


def outside_pairs(protocol, size: int = 128):
    """[(category, lq, gt, scan, gradient·spacing)]: OUTSIDE_COUNT pairs at 4 T/m and 0.5 mm."""
    config = replace(protocol.pairs, **OUTSIDE)
    rng = np.random.default_rng(np.random.SeedSequence([OUTSIDE_ENTROPY]))
    lq, gt, drawn = make_pairs(rng, config, size, OUTSIDE_COUNT, details=True)
    return [(drawn["categories"][i], lq[i], gt[i], str(drawn["scans"][i]),
             float(drawn["gradients"][i] * drawn["spacings"][i])) for i in range(OUTSIDE_COUNT)]


def residual(out: np.ndarray, lq: np.ndarray, scan: str, blur: float) -> float:
    """consistency_loss of one restored image against its input (the training term's own measure)."""
    geometry = torch.tensor([[1.0 if scan == "x" else 0.0, blur]], dtype=torch.float32)
    as_batch = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]  # noqa: E731
    return float(consistency_loss(as_batch(out), as_batch(lq), geometry))


def score(restore: Restoration, pairs) -> dict:
    """Mean gains, per-category mass / fill and the mean consistency residual over `pairs`."""
    rows = []
    for category, lq, gt, scan, blur in pairs:
        out = restore(lq)
        out_psnr, out_ssim = float(psnr(out, gt)), float(ssim(out, gt))
        rows.append(dict(category=category, dpsnr=out_psnr - float(psnr(lq, gt)), dssim=out_ssim - float(ssim(lq, gt)),
                         psnr=out_psnr, ssim=out_ssim, mass=mass_ratio(out, gt), fill=interior_fill(out, gt),
                         residual=residual(out, lq, scan, blur)))
    cats = sorted({r["category"] for r in rows})
    per = lambda key: {c: float(np.nanmean([r[key] for r in rows if r["category"] == c])) for c in cats}  # noqa: E731
    mean = lambda key: float(np.nanmean([r[key] for r in rows]))  # noqa: E731
    return dict(images=len(rows), psnr=mean("psnr"), ssim=mean("ssim"), psnr_gain=mean("dpsnr"),
                ssim_gain=mean("dssim"), residual=mean("residual"), mass=per("mass"), fill=per("fill"))


def scored_pairs(protocol) -> dict[str, list]:
    """The two pair sets, each a list of (category, lq, gt, scan axis, gradient·spacing)."""
    demo = [(c, lq, gt, scan, blur) for c, _, lq, gt, scan, blur, _ in
            demo_pairs(per_category=8, protocol=protocol, geometry=True)]
    return {"demo pairs (40, 128x128)": demo,
            f"outside the training ranges ({OUTSIDE_COUNT}, 4 T/m, 0.5 mm)": outside_pairs(protocol)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--term", choices=sorted(SETTINGS), default="physics")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.1, 1.0])
    p.add_argument("--steps", type=int, default=300, help="phase-2 steps of each fine-tuning")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--mixed-patch", type=patch_and_batch, action="append", default=[], metavar="PxB",
                   help="batches of B patches of P px taking turns with the 64-px ones (as the shipped model's "
                        "last stage: 128x2)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--val-every", type=int, help="validate every K steps (default: at the end only)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=Path, help="default runs/experiments/<term>-weight")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    configure_threads(args.threads)
    name = f"{args.term}-weight"
    field, title = SETTINGS[args.term]
    runs_dir = args.runs or common.REPO / "runs/experiments" / name
    common.check_results(name, common.RESULTS, args.overwrite, suffixes=(".md", ".json"))
    protocol = pretrained.protocol()
    started = time.perf_counter()
    runs, sizes = {}, 1 + len(args.mixed_patch)
    for w in args.weights:
        cfg = TrainConfig(protocol=protocol, init=str(pretrained.model_path()), phases=("phase2",),
                          steps=args.steps, batch=args.batch, lr=args.lr, mixed_patches=tuple(args.mixed_patch),
                          device="cpu", ckpt_every=50 * sizes, val_every=args.val_every or args.steps, val_images=8,
                          out=str(runs_dir / f"w{w:g}"), **{field: w})
        runs[f"weight {w:g}"] = common.run_training(cfg)
    sets = scored_pairs(protocol)
    models = {"shipped (not fine-tuned)": pretrained.load()}
    models.update({label: load_model(run) for label, run in runs.items()})
    table = {label: {set_name: score(Restoration(model), pairs) for set_name, pairs in sets.items()}
             for label, model in models.items()}
    mixed = "".join(f", taking turns with batches of {b} at patch {q}" for q, b in args.mixed_patch)
    meta = {"command": " ".join(["python", "experiments/training_terms.py", *sys.argv[1:]]),
            "git revision": common.git_revision(), "hardware": common._cpu_model(),
            "fine-tuning": f"phase 2 only from the shipped model, {args.steps} steps, batch {args.batch} at patch "
                           f"{cfg.patch}{mixed}, lr {args.lr}, seed {cfg.seed}, {common.describe(protocol)}",
            "wall seconds": f"{time.perf_counter() - started:.0f}"}
    curves = {label: validation_curve(run) for label, run in runs.items()}
    write_text_atomic(common.RESULTS / f"{name}.json",
                      json.dumps(dict(meta=meta, table=table, validation=curves), indent=1) + "\n")
    text = render(table, meta, title, curves)
    write_text_atomic(common.RESULTS / f"{name}.md", text)
    print(text)


def validation_curve(run: Path) -> dict[int, float]:
    """{step: validation PSNR} from a run's log.csv."""
    import csv

    with open(Path(run) / "log.csv", newline="") as f:
        return {int(r["step"]): float(r["val_psnr"]) for r in csv.DictReader(f) if r.get("val_psnr")}


def render(table: dict, meta: dict, title: str, curves: dict | None = None) -> str:
    lines = [f"# {title}", "", "Generated by `experiments/training_terms.py`; do not edit by hand.", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    for name in next(iter(table.values())):
        lines += ["", f"## {name}", "",
                  "| model | PSNR | gain | SSIM | gain | residual | mass ratio per category | interior fill per category |",
                  "|---|---|---|---|---|---|---|---|"]
        for label, sets in table.items():
            r = sets[name]
            per = lambda d: ", ".join(f"{c} {v:.2f}" for c, v in d.items())  # noqa: E731
            lines.append(f"| {label} | {r['psnr']:.2f} | {r['psnr_gain']:+.2f} | {r['ssim']:.3f} | "
                         f"{r['ssim_gain']:+.3f} | {r['residual']:.4f} | {per(r['mass'])} | {per(r['fill'])} |")
    lines += ["", "residual: `refine.consistency_loss` of the output against its input (the training term "
              "itself; 0 when the output blurred by the pair's PSF explains the input up to scale and offset)."]
    if curves and any(len(c) > 2 for c in curves.values()):
        steps = sorted({s for c in curves.values() for s in c})
        lines += ["", "## Validation PSNR along the runs (8 images)", "",
                  "| run | " + " | ".join(str(s) for s in steps) + " |", "|---|" + "---|" * len(steps)]
        lines += [f"| {label} | " + " | ".join(f"{c[s]:.2f}" if s in c else "" for s in steps) + " |"
                  for label, c in curves.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    common.run_script(main)
