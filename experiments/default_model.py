"""Train the model shipped in `src/mpimamba/weights/` (MPI-Mamba `small`) and install it there.

    .venv/bin/python experiments/default_model.py [--threads T] [--out runs/default-model]

Three stages, one command:
1. base: both phases from fresh weights on `pretrained.BASE_PROTOCOL` (`default`: 128-px canvases),
   `--base-steps` per phase, in OUT/base;
2. tune: phase 2 only (the parts inference uses: condition encoder, latent denoiser, backbone), starting
   from the base model, on `pretrained.PROTOCOL` (`multiscale`: 64–256-px canvases and point sources),
   `--steps` steps, in OUT/tune. Why a second stage instead of starting over: the base model alone lost
   to the first shipped model on 64-px scans and point sources (docs/model-card.md), and the new data fixes
   what it lacks without paying again for what it learned;
3. polish: phase 2 again from the tune model, same data, `--polish-steps` steps with a fresh schedule at
   `--polish-lr`, in OUT/polish: the tune stage's validation PSNR was still rising when its cosine ended,
   and 300 more plain steps at 2e-4 gained +0.34 dB on the demo pairs while the physics-consistency term
   lost SSIM at every weight tried (experiments/results/physics-weight.md), so this stage has no such term
   by default (`--polish-<term>-weight` switches on any of train.terms.TERMS).
Each stage is resumable: rerun the same command after an interruption and it continues from the stage's
checkpoint (written every 50 steps, every 10 minutes and at the end); a finished stage is reused.
`--after-shipped` skips stages 1 and 2 and starts a polish stage from the installed model, for when the run
folders that made it are gone (they are never committed): from a tune stage's output (the shipped v3) it is
stage 'polish', from a polish stage's output (v4) the next one, 'polish2', 'polish3', ... in OUT/<stage>;
the earlier stages' settings are then taken from the installed JSON, in training order (`stage_order`).
When the last stage is done its weights are installed with `pretrained.install` (atomic), with every
stage's settings and the wall time in the JSON; `experiments/model_card.py` then regenerates
docs/model-card.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import common
from mpimamba import pretrained
from mpimamba.cli import category_names, patch_and_batch
from mpimamba.physics.phantoms import CATEGORIES
from mpimamba.physics.protocols import PROTOCOLS
from mpimamba.threads import configure_threads
from mpimamba.train.config import TrainConfig
from mpimamba.train.terms import TERMS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-steps", type=int, default=1700, help="optimiser steps in each phase of the base stage")
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps of the tune stage (phase 2)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4,
                        help="base stage; higher than the released 2e-4: the CPU budget is ~100x shorter")
    parser.add_argument("--tune-lr", type=float, default=3e-4, help="tune stage")
    parser.add_argument("--polish-steps", type=int, default=2000, help="optimiser steps of the polish stage (phase 2)")
    parser.add_argument("--polish-lr", type=float, default=2e-4, help="polish stage")
    parser.add_argument("--polish-warmup", type=int, default=0,
                        help="polish stage: steps of linear lr warmup (TrainConfig.warmup_steps; default 0)")
    parser.add_argument("--polish-ema", type=float, default=0.0,
                        help="polish stage: decay of the weight average it validates and writes "
                             "(TrainConfig.ema_decay, e.g. 0.999; default 0 = off)")
    parser.add_argument("--polish-patch", type=int, default=None,
                        help="polish stage's patch side (default: --patch); a patch larger than the protocol's "
                             "smallest canvas raises that canvas to the patch (Protocol.for_patch)")
    parser.add_argument("--polish-batch", type=int, default=None, help="polish stage's batch (default: --batch)")
    for term in TERMS:
        parser.add_argument(f"--polish-{term.name}-weight", type=float, default=0.0, dest=f"polish_{term.field}",
                            help=f"polish stage: weight of the {term.title} term (train.terms.TERMS; "
                                 "default 0 = off)")
    parser.add_argument("--polish-mixed-patch", type=patch_and_batch, action="append", default=[], metavar="PxB",
                        help="polish stage: also batches of B patches of P px, taking turns with the polish patch and "
                             "batch (TrainConfig.mixed_patches), e.g. 128x2 beside 64-px batches of 8")
    parser.add_argument("--after-shipped", action="store_true",
                        help="skip base and tune: polish the installed model (the tune stage's output of an earlier run)")
    parser.add_argument("--out", type=Path, default=Path("runs/default-model"), help="OUT/base, OUT/tune, OUT/polish")
    parser.add_argument("--protocol", default=pretrained.PROTOCOL.name, choices=sorted(PROTOCOLS),
                        help="data of the tune and polish stages (default: the recipe's, pretrained.PROTOCOL)")
    parser.add_argument("--categories", type=category_names, default=None, metavar="A,B,...",
                        help="the tune and polish stages' phantom categories instead of the protocol's, from "
                             f"{', '.join(sorted(CATEGORIES))}; a category named n times is drawn n times as often "
                             "(e.g. points,points,mouse,...)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--no-install", action="store_true", help="train only; leave the shipped weights alone")
    args = parser.parse_args()
    configure_threads(args.threads)
    # the tune and polish stages' data; --categories changes one field and the protocol's name records it
    try:
        data = PROTOCOLS[args.protocol].replace(**({"categories": args.categories} if args.categories else {}))
    except ValueError as error:  # an unknown category name
        parser.error(f"--categories: {error}")

    shared = dict(method=pretrained.METHOD, preset=pretrained.PRESET, batch=args.batch, patch=args.patch,
                  ckpt_every=50, val_every=100, val_images=16, label="mpi_mamba", device="cpu")
    base = TrainConfig(protocol=pretrained.BASE_PROTOCOL, steps=args.base_steps, lr=args.lr,
                       out=str(args.out / "base"), **shared)
    tune = TrainConfig(protocol=data, steps=args.steps, lr=args.tune_lr,
                       init=str(args.out / "base" / "model.safetensors"), phases=("phase2",),
                       out=str(args.out / "tune"), **shared)
    # recorded as the recipe's other paths are, relative to the repository it runs in (not this machine's path)
    shipped = pretrained.model_path().relative_to(common.REPO)
    if args.after_shipped:
        earlier = _installed_stages()
        stage, polish_init = next_polish_stage(list(earlier)), str(shipped)
    else:
        earlier = {"base": base.to_dict(), "tune": tune.to_dict()}
        stage, polish_init = "polish", str(args.out / "tune" / "model.safetensors")
    polish_patch = args.polish_patch or args.patch
    polish = TrainConfig(protocol=data.for_patch(polish_patch), steps=args.polish_steps,
                         lr=args.polish_lr, init=polish_init, phases=("phase2",), out=str(args.out / stage),
                         mixed_patches=tuple(args.polish_mixed_patch), warmup_steps=args.polish_warmup, ema_decay=args.polish_ema,
                         **{t.field: getattr(args, f"polish_{t.field}") for t in TERMS},
                         **{**shared, "patch": polish_patch, "batch": args.polish_batch or args.batch})
    start = time.perf_counter()
    if not args.after_shipped:
        common.run_training(base)  # reuse a finished stage of these settings, resume an interrupted one
        common.run_training(tune)
    common.run_training(polish)
    wall = time.perf_counter() - start
    if args.no_install:
        return
    installed = pretrained.install(Path(polish.out), {
        **polish.to_dict(), "stage": stage, **earlier, "stage_order": list(earlier), "recipe": pretrained.RECIPE,
        "wall_seconds_last_invocation": round(wall), "torch_threads": torch.get_num_threads(),
    })
    print(f"installed {installed} ({installed.stat().st_size / 1e6:.1f} MB)")


# keys of an installed record that describe how it was made rather than its own stage's settings
_RECORD_META = ("recipe", "wall_seconds_last_invocation", "torch_threads", "stage", "stage_order")


def _installed_stages() -> dict[str, dict]:
    """{stage name: settings} of every stage that made the installed model, itself last, in training order.

    A v3 record (base + tune, before stages were named) is a tune stage's output; a later one names its stage
    and lists the earlier ones in `stage_order` (a v4 record without that key: base, tune)."""
    training = json.loads(pretrained.model_path().with_suffix(".json").read_text()).get("training", {})
    order, stage = pretrained.recorded_stages(training)
    missing = [name for name in order if name not in training]
    if stage != "tune" and not stage.startswith("polish") or missing:
        raise ValueError(f"--after-shipped: the installed model is not a tune or polish stage's output with its "
                         f"earlier stages recorded (its JSON has stage {stage!r}, missing {missing or 'nothing'}); "
                         "run the whole recipe instead")
    own = {k: v for k, v in training.items() if k not in (*order, *_RECORD_META)}
    return {**{name: training[name] for name in order}, stage: own}


def next_polish_stage(done: list[str]) -> str:
    """The name of the polish stage after `done`: 'polish' after tune, then 'polish2', 'polish3', ..."""
    count = sum(1 for name in done if name.startswith("polish"))
    return "polish" if count == 0 else f"polish{count + 1}"


if __name__ == "__main__":
    common.run_script(main)
