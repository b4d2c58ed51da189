"""Average the weights of two fine-tunes of one network: (1 - share) * FIRST + share * SECOND.

    .venv/bin/python experiments/average_weights.py runs/default-model/v8/model.safetensors \
        runs/default-model/mse3/polish6/model.safetensors --share 0.5 --out /tmp/average

Why: a stage fine-tuned from the installed model may gain PSNR and lose what the installed model had (the
drive-axis sharpness of a point, `results/mse3-polish.md`); the average of the two weights sits between them.
Only meaningful for two models that share their starting weights (a stage and the model it started from):
the average of two independently trained networks is not a network of either. Both must be the same method,
preset and overrides; the result is written as `OUT/model.safetensors` and `.json` (the second model's
config, with `averaged_from` and `share` added), and an existing one is kept unless --overwrite.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mpimamba.models.checkpoint import load_model, read_model_config, save_model


def average_state(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], share: float) -> dict:
    """(1 - share) * first + share * second for each floating-point tensor (in float64, stored in its dtype);
    other tensors (integer buffers) are taken from `second`."""
    if first.keys() != second.keys():
        raise ValueError("the two models hold different tensors: not two fine-tunes of one network")
    averaged = {}
    for key, b in second.items():
        a = first[key]
        if a.shape != b.shape:
            raise ValueError(f"tensor {key!r} has shape {tuple(a.shape)} in one model, {tuple(b.shape)} in the other")
        averaged[key] = ((1 - share) * a.double() + share * b.double()).to(b.dtype) if b.is_floating_point() else b
    return averaged


def _architecture(path: Path) -> tuple:
    cfg = read_model_config(path)
    return cfg["method"], cfg["preset"], cfg.get("overrides", {})


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="model file (.safetensors) weighted 1 - share")
    parser.add_argument("second", type=Path, help="model file (.safetensors) weighted share; its config is kept")
    parser.add_argument("--share", type=float, required=True, help="weight of SECOND, between 0 and 1")
    parser.add_argument("--out", type=Path, required=True, help="folder for model.safetensors and model.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT/model.safetensors")
    args = parser.parse_args(argv)
    if not 0.0 <= args.share <= 1.0:
        parser.error(f"--share must be between 0 and 1, got {args.share}")
    if _architecture(args.first) != _architecture(args.second):
        parser.error(f"{args.first} and {args.second} are different networks (method, preset or overrides differ)")
    target = args.out / "model.safetensors"
    if target.exists() and not args.overwrite:
        parser.error(f"{target} exists; pass --overwrite to replace it")
    first, second = load_model(args.first), load_model(args.second)
    second.load_state_dict(average_state(first.state_dict(), second.state_dict(), args.share))
    args.out.mkdir(parents=True, exist_ok=True)
    extra = {key: value for key, value in read_model_config(args.second).items()
             if key not in ("method", "preset", "overrides", "mpimamba_version")}
    extra.update(averaged_from=[str(args.first), str(args.second)], share=args.share)
    written = save_model(second, target, extra=extra)
    print(f"wrote {written} ({1 - args.share:g} x {args.first} + {args.share:g} x {args.second})")
    return written


if __name__ == "__main__":
    main()
