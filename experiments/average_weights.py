"""Average the weights of fine-tunes of one network: (1 - share) * first + share * second of two, or a uniform mean.

    .venv/bin/python experiments/average_weights.py runs/default-model/v8/model.safetensors \
        runs/default-model/mse3/polish6/model.safetensors --share 0.5 --out /tmp/average
    .venv/bin/python experiments/average_weights.py A.safetensors B.safetensors C.safetensors --uniform --out /tmp/soup

Why: a stage fine-tuned from the installed model may gain PSNR and lose what the installed model had (the
drive-axis sharpness of a point, `results/mse3-polish.md`); the average of the two weights sits between them.
`--uniform` averages any number of fine-tunes with equal weights (a "model soup": stages that started from the
same weights and moved it in different directions, `results/points-polish.md`).
Only meaningful for models that share their starting weights (stages and the model they started from):
the average of independently trained networks is not a network of any of them. All must be the same method,
preset and overrides; the result is written as `OUT/model.safetensors` and `.json` (the last model's
config, with `averaged_from` and `shares` added), and an existing one is kept unless --overwrite.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mpimamba.models.checkpoint import load_model, read_model_config, save_model


def average_states(states: list[dict[str, torch.Tensor]], shares: list[float]) -> dict:
    """sum_i shares[i] * states[i] for each floating-point tensor (in float64, stored in its dtype); other
    tensors (integer buffers) are taken from the last state."""
    last = states[-1]
    if any(state.keys() != last.keys() for state in states):
        raise ValueError("the models hold different tensors: not fine-tunes of one network")
    averaged = {}
    for key, tensor in last.items():
        shapes = {tuple(state[key].shape) for state in states}
        if len(shapes) > 1:
            raise ValueError(f"tensor {key!r} has different shapes in the models: {sorted(shapes)}")
        if tensor.is_floating_point():
            total = sum(share * state[key].double() for share, state in zip(shares, states))
            averaged[key] = total.to(tensor.dtype)
        else:
            averaged[key] = tensor
    return averaged


def _architecture(path: Path) -> tuple:
    cfg = read_model_config(path)
    return cfg["method"], cfg["preset"], cfg.get("overrides", {})


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+",
                        help="model files (.safetensors); the last one's config is kept")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--share", type=float, help="two models only: the weight of the second, between 0 and 1")
    how.add_argument("--uniform", action="store_true", help="every model weighted 1 / (number of models)")
    parser.add_argument("--out", type=Path, required=True, help="folder for model.safetensors and model.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT/model.safetensors")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error(f"models: give at least two model files to average, got {len(args.models)}")
    if args.share is not None:
        if len(args.models) != 2:
            parser.error(f"--share weighs the second of two models; {len(args.models)} given (use --uniform)")
        if not 0.0 <= args.share <= 1.0:
            parser.error(f"--share must be between 0 and 1, got {args.share}")
        shares = [1.0 - args.share, args.share]
    else:
        shares = [1.0 / len(args.models)] * len(args.models)
    for path in args.models[1:]:
        if _architecture(path) != _architecture(args.models[0]):
            parser.error(f"{args.models[0]} and {path} are different networks (method, preset or overrides differ)")
    target = args.out / "model.safetensors"
    if target.exists() and not args.overwrite:
        parser.error(f"{target} exists; pass --overwrite to replace it")
    models = [load_model(path) for path in args.models]
    last = models[-1]
    last.load_state_dict(average_states([model.state_dict() for model in models], shares))
    args.out.mkdir(parents=True, exist_ok=True)
    extra = {key: value for key, value in read_model_config(args.models[-1]).items()
             if key not in ("method", "preset", "overrides", "mpimamba_version", "averaged_from", "share", "shares")}
    extra.update(averaged_from=[str(path) for path in args.models], shares=shares)
    written = save_model(last, target, extra=extra)
    print(f"wrote {written} (" + " + ".join(f"{share:g} x {path}" for share, path in zip(shares, args.models)) + ")")
    return written


if __name__ == "__main__":
    main()
