"""Name + preset -> network. Every method module defines `PRESETS` (preset -> keyword arguments)
and `MODEL` (the `Restorer` subclass); `build` merges a preset with overrides and records both on
the model as `model.build_config`, which checkpoints store so a model can be rebuilt without code.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Restorer

METHODS: dict[str, str] = {
    "mpi_mamba": "mpimamba.models.mpi_mamba",
    "aepnet": "mpimamba.models.baselines.aepnet",
    "fds": "mpimamba.models.baselines.fds",
    "sfm": "mpimamba.models.baselines.sfm",
    "nafnet": "mpimamba.models.baselines.nafnet",
    "restormer": "mpimamba.models.baselines.restormer",
    "swinir": "mpimamba.models.baselines.swinir",
    "diffir": "mpimamba.models.baselines.diffir",
    # training-free: deconvolution with the known x-space PSF
    "wiener": "mpimamba.models.classical.wiener",
    "richardson_lucy": "mpimamba.models.classical.richardson_lucy",
}

PRESET_NAMES = ("tiny", "small", "paper")


def _module(name: str):
    key = name.lower().replace("-", "_")
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[key]), key


def presets(name: str) -> dict[str, dict[str, Any]]:
    return dict(_module(name)[0].PRESETS)


def build(name: str, preset: str = "small", **overrides: Any) -> Restorer:
    """Build method `name` at size `preset` ("tiny", "small", "paper"); `overrides` replace preset values."""
    module, key = _module(name)
    if preset not in module.PRESETS:
        raise ValueError(f"unknown preset {preset!r} for {key}; expected one of {', '.join(module.PRESETS)}")
    kwargs = {**module.PRESETS[preset], **overrides}
    model = module.MODEL(**kwargs)
    model.build_config = {"method": key, "preset": preset, "overrides": dict(overrides)}
    return model
