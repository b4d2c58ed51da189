"""Model files: weights as safetensors plus a JSON config that says how to rebuild the network.

`save_model(model, "run/model")` writes `run/model.safetensors` and `run/model.json`; `load_model`
accepts either file, the stem, or a folder holding `model.safetensors`. Nothing here needs the
training code, so a shipped model loads with `mpimamba.models` alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .. import __version__
from ..fileutil import atomic_path, write_text_atomic
from .base import Restorer
from .registry import build


def _stem(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        return path / "model"
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix("")
    return path


def save_model(model: Restorer, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `<stem>.safetensors` and `<stem>.json` atomically; return the weights path."""
    config = getattr(model, "build_config", None)
    if config is None:
        raise ValueError("model has no build_config: build it with mpimamba.models.build(...)")
    stem = _stem(path)
    weights = stem.with_suffix(".safetensors")
    # safetensors refuses shared or non-contiguous storage; store plain contiguous copies
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    meta = {**config, "mpimamba_version": __version__, **(extra or {})}
    write_text_atomic(stem.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return weights


def read_model_config(path: str | Path) -> dict[str, Any]:
    cfg_path = _stem(path).with_suffix(".json")
    if not cfg_path.is_file():
        raise FileNotFoundError(f"model config {cfg_path} not found (expected beside the .safetensors weights)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"model config {cfg_path} is not valid JSON: {err}") from err
    for key in ("method", "preset"):
        if key not in cfg:
            raise ValueError(f"model config {cfg_path} lacks the key {key!r}")
    return cfg


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> Restorer:
    """Rebuild the network from its JSON config and load its weights (eval mode)."""
    stem = _stem(path)
    weights = stem.with_suffix(".safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"model weights {weights} not found")
    cfg = read_model_config(stem)
    model = build(cfg["method"], cfg["preset"], **cfg.get("overrides", {}))
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"cannot read model weights {weights}: {err}") from err
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensors of other shapes: another preset or overrides; one line, not 270
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err)[:200])
        raise ValueError(f"model weights {weights} do not fit {cfg['method']}/{cfg['preset']} as its "
                         f"{stem.with_suffix('.json').name} describes it ({first})") from None
    if missing or unexpected:
        raise ValueError(
            f"model weights {weights} do not match {cfg['method']}/{cfg['preset']}: "
            f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}"
        )
    return model.eval()
