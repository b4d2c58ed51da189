"""Training settings as one typed dataclass that round-trips through JSON.

Defaults are the authors' released settings: AdamW lr 2e-4, weight decay 1e-4,
betas (0.9, 0.999), lr constant for the first half of each phase then cosine towards 1e-6,
gradient-norm clipping 0.01, batch 32, patch 64, seed 101, 100k iterations per phase.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..physics.protocols import PROTOCOLS, Protocol
from .terms import TERMS


# settings a resumed run may change without changing what it computes (apart from device numerics; a
# checkpoint at another moment resumes to the same weights)
RUNTIME_FIELDS = ("device", "out", "ckpt_minutes")


@dataclass
class TrainConfig:
    method: str = "mpi_mamba"
    preset: str = "small"
    overrides: dict[str, Any] = field(default_factory=dict)  # constructor kwargs replacing preset values
    data: str | None = None  # paired folder ROOT/{train,val}/{lq,gt}; None = the simulated stream
    protocol: Protocol | None = None  # the simulated stream's protocol (data is None); None there = "default"
    # weights to start from instead of fresh ones (fine-tuning): a model written by train (RUN or
    # RUN/model.safetensors), or "shipped" for the model inside the package; same method, preset and overrides
    init: str | None = None
    phases: tuple[str, ...] | None = None  # the phases to train, in the method's order; None = all of them
    steps: int = 100_000  # optimiser steps in EACH phase
    batch: int = 32  # per process
    patch: int = 64
    # further (patch, batch) sizes the simulated stream takes turns with (patch, batch), one batch each: with
    # patch 64, batch 8 and ((128, 2),) the steps alternate 64×8 and 128×2 batches (the same pixels). Each
    # further size is simulated on the protocol's canvas raised to at least that patch (Protocol.for_patch),
    # the first on the protocol as it is: a polish at 128 px alone learned large filled regions and forgot
    # the 64-px images (experiments/results/patch128-polish.md). () = every batch at (patch, batch)
    mixed_patches: tuple[tuple[int, int], ...] = ()
    lr: float = 2e-4
    min_lr: float = 1e-6
    constant_fraction: float = 0.5  # share of each phase at the full lr before the cosine decay
    # first steps of each phase with the lr rising linearly to its peak: a fine-tune starts a fresh AdamW
    # (no moment estimates) from trained weights, whose first full-size steps cost up to 0.5 dB (README, Train)
    warmup_steps: int = 0
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.01  # max global gradient norm
    ckpt_every: int = 1000
    # weight of the physics-consistency term (refine.consistency_loss: the output, blurred by each pair's own
    # PSF, must explain the input up to a scale and an offset); simulated streams only, 0 = off
    physics_weight: float = 0.0
    # weight of the local-mass term (train.terms.local_mass_loss: L1 between the tracer per 8x8 block of output
    # and target); any training set, 0 = off
    mass_weight: float = 0.0
    # weight of the squared-error term (train.terms.squared_error_loss: mean squared pixel error, asks for the
    # conditional mean where the networks' L1 asks for the median); any training set, 0 = off
    mse_weight: float = 0.0
    # weight of the edge term (train.terms.edge_loss: L1 between the image gradients of output and target, which
    # weighs an error by its spatial frequency: nothing for an offset, most for fine detail); any training
    # set, 0 = off
    edge_weight: float = 0.0
    # an exponential moving average of the weights (train.ema), validated and written as the model; its span
    # is about 1 / (1 − ema_decay) steps; 0 = off (the weights themselves)
    ema_decay: float = 0.0
    ckpt_minutes: float = 10.0  # also a checkpoint at least this often (wall time); inf = only every ckpt_every
    val_every: int = 1000
    val_images: int = 8
    seed: int = 101
    workers: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu
    out: str = "runs/run"
    label: str | None = None  # name evaluation tables group by; None = the method name

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.phases is not None:
            self.phases = tuple(self.phases)
            if not self.phases or not all(isinstance(p, str) and p for p in self.phases):
                raise ValueError(f"phases must be a non-empty list of phase names, got {self.phases!r}")
        if self.data is None and self.protocol is None:
            self.protocol = PROTOCOLS["default"]
        if self.data is not None and self.protocol is not None:
            raise ValueError(f"a run trains on a paired folder ({self.data}) or on a simulated protocol "
                             f"({self.protocol.name}), not both")
        for name in ("steps", "batch", "patch", "ckpt_every", "val_every", "val_images"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        self.mixed_patches = _patch_sizes(self.mixed_patches)
        if self.mixed_patches and self.data is not None:
            raise ValueError("mixed_patches: a paired folder is cropped at one patch size; mixed sizes need the "
                             "simulated stream (--synthetic)")
        if int(self.ckpt_every) % len(self.sizes):  # the stream restarts its cycle at every segment
            raise ValueError(f"ckpt_every ({self.ckpt_every}) must be a multiple of the {len(self.sizes)} patch "
                             "sizes that take turns, so that every size keeps its share of the steps")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if not 0 <= int(self.warmup_steps) < max(1, int(self.steps)):
            raise ValueError(f"warmup_steps must lie in [0, steps={self.steps}), got {self.warmup_steps}")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1) (0 = off), got {self.ema_decay!r}")
        if not 0.0 <= self.constant_fraction <= 1.0:
            raise ValueError(f"constant_fraction must lie in [0, 1], got {self.constant_fraction}")
        for name in ("lr", "min_lr", "grad_clip", "weight_decay"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        for name in (term.field for term in TERMS):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        for term in TERMS:
            if term.needs_geometry and getattr(self, term.field) > 0 and self.data is not None:
                raise ValueError(f"the {term.title} term needs each pair's scan geometry, which only a simulated "
                                 "stream (--synthetic) knows; a paired folder does not record it")
        if self.physics_weight > 0 and self.protocol.pairs.trajectory == "lissajous":
            raise ValueError("--physics-weight: the pairs of a Lissajous protocol have no single PSF, so the term "
                             "would be 0 for every pair; use a Cartesian protocol (e.g. --protocol default)")
        smallest = self.protocol.canvas_range(self.patch)[0] if self.protocol is not None else self.patch
        if smallest < self.patch:
            raise ValueError(f"the protocol's canvas ({smallest} px) is smaller than the patch "
                             f"({self.patch} px): pass --canvas {self.patch} or more, or a smaller --patch")
        if not float(self.ckpt_minutes) > 0:  # inf allowed, NaN not
            raise ValueError(f"ckpt_minutes must be a positive number of minutes, got {self.ckpt_minutes}")
        if self.lr <= 0 or self.min_lr < 0 or self.grad_clip <= 0:
            raise ValueError("lr and grad_clip must be positive and min_lr non-negative")
        if self.patch < 8:  # the smallest side every network accepts after its internal padding is sensible
            raise ValueError(f"patch must be at least 8 pixels, got {self.patch}")
        if not 0 <= int(self.seed) < 2**32:  # numpy's and torch's seeds
            raise ValueError(f"seed must lie in [0, 2**32), got {self.seed}")

    @property
    def run_label(self) -> str:
        return self.label or self.method

    @property
    def sizes(self) -> tuple[tuple[int, int], ...]:
        """The (patch, batch) of the stream's batches in turn: step s of a phase (counted from 0) trains on
        sizes[s % len(sizes)] (the stream restarts its cycle at every checkpoint segment, whose length
        ckpt_every is a multiple of len(sizes))."""
        return ((self.patch, self.batch), *self.mixed_patches)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (from_dict gives back an equal TrainConfig)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["betas"] = list(self.betas)
        d["phases"] = list(self.phases) if self.phases is not None else None
        d["overrides"] = dict(self.overrides)
        d["mixed_patches"] = [list(size) for size in self.mixed_patches]
        d["protocol"] = self.protocol.to_dict() if self.protocol is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        if "synthetic" in d:  # run configs before protocols: {"pairs": {...}, "xspace_fraction": f}
            d["protocol"] = _legacy_protocol(d.pop("synthetic")) if d.get("data") is None else None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; expected some of {sorted(known)}")
        if isinstance(d.get("protocol"), dict):
            d["protocol"] = Protocol.from_dict(d["protocol"])
        return cls(**d)

    def differences(self, other: "TrainConfig") -> list[str]:
        """The settings in which `other` computes something else than this run (RUNTIME_FIELDS aside).

        The one "same run?" check: resume refuses a checkpoint, and the experiments a finished run, when
        this is not empty. Protocols compare by their fields, not by their names.
        """
        mine, theirs = self.identity(), other.identity()
        return [f"{k}: run has {mine[k]!r}, got {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]

    def identity(self, ignore: tuple[str, ...] = RUNTIME_FIELDS) -> dict[str, Any]:
        """The settings that decide what a run computes, JSON-ready: all but `ignore`, the protocol by its
        fields (its name is a label)."""
        d = self.to_dict()
        if d["protocol"] is not None:
            d["protocol"] = {k: v for k, v in d["protocol"].items() if k != "name"}
        return {k: v for k, v in d.items() if k not in ignore}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "TrainConfig":
        """Parse JSON text, or read it from a file path."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))


def _legacy_protocol(synthetic: dict[str, Any]) -> Protocol:
    """The protocol an old run config's `synthetic` dict described (simulated at the patch size)."""
    return Protocol.from_dict({"name": "custom", "canvas": None, "pairs": synthetic.get("pairs", {}),
                               "xspace_fraction": synthetic.get("xspace_fraction", 0.0)})


def _patch_sizes(sizes) -> tuple[tuple[int, int], ...]:
    """`mixed_patches` as a tuple of (patch, batch) int pairs (JSON gives lists), or a clear error."""
    checked = []
    for size in sizes or ():  # JSON null = none
        try:
            patch, batch = size
            if not all(float(v) == int(v) for v in size):  # whole numbers, not silently truncated ones
                raise ValueError
            patch, batch = int(patch), int(batch)
        except (TypeError, ValueError):
            raise ValueError(f"mixed_patches must be a list of [patch, batch] pairs of integers, got {sizes!r}") from None
        if patch < 8 or batch < 1:
            raise ValueError(f"mixed_patches: need patch >= 8 and batch >= 1, got [{patch}, {batch}]")
        checked.append((patch, batch))
    return tuple(checked)
