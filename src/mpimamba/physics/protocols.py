"""Simulation protocols: everything that makes a pair, as one typed, named, JSON-serialisable object.

A `Protocol` is a `PairConfig` (forward model, scan axis, gradient, spacing, noise, background,
concentration, phantom mix) plus how a training stream uses it: the canvas the pairs are simulated on
(patches are cropped from it, so that a patch can lie inside a filled region larger than itself) and the
share of pairs taken from the time-domain x-space model. `simulate` and `train --synthetic` select one by
name (`--protocol NAME`) and change single fields with the same flags; manifests and run configs store
`Protocol.to_dict()`, and `Protocol.from_dict` gives back an equal object (ranges stay tuples).

Named protocols (`PROTOCOLS`):
- `default`: what users scan, broadly: x and z scans, 5–12 T/m, 0.2–0.5 mm pixels,
  SNR 15–45 dB, concentration 0.3–1, background offsets up to 5 %, every phantom category, simulated on
  128-px canvases.
- `multiscale`: `default` on canvases of 64–256 px (drawn per batch, so that one network sees each
  category's structures at several sizes in pixels: what a 64-px scan and a 256-px scan of the same
  phantom show) plus the `points` category (1–3 px point sources and thin lines). The data of the shipped
  model's fine-tuning stage (`pretrained`): `default` alone, on 128-px canvases, made the model worse on
  64-px scans and on point sources than the first model trained at 64 px.
- `multiscale-points`: `multiscale` with `points` named twice in its categories, so a phantom is a point
  source chart 2 times in 7 instead of 1 in 6 (a category named n times is drawn n times as often): for
  fine-tunes that should keep a restored point narrow (experiments/results/edge-polish.md).
- `authors`: the authors' own simulation: the time-domain x-space model with their Lissajous
  trajectory (25 / 24.75 kHz) over a 120-px field of view of 0.25 mm pixels (±15 mm), 9 T/m (their other
  setting: `--gradient 6`), SNR 30–40 dB (our choice: the paper gives no number), every phantom category
  (the authors used binary shapes, characters and digits). Slow to start: the operator is 570 MB.
- `authors-psf`: the authors' setting with the fast PSF model instead (x scan, 9 T/m, 0.25 mm, SNR
  30–40 dB), simulated at the patch size; the paper-table experiments use it.
- `shipped-v1`: the training data of the first shipped model (x and z scans, 6–12 T/m, SNR 25–45 dB,
  simulated at the 64-px patch size).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .pairs import PairConfig, make_pairs
from .phantoms import DEFAULT_CATEGORIES

# PairConfig fields that may hold a (low, high) range or a tuple: JSON gives them back as lists
_TUPLE_FIELDS = ("gradient", "snr_db", "background", "concentration", "spacing_mm", "categories")


@dataclass(frozen=True)
class Protocol:
    name: str = "custom"  # a label for provenance; the fields below define the pairs
    pairs: PairConfig = field(default_factory=PairConfig)
    # side of the simulated training images, cropped to patches: one size, a (low, high) range drawn per batch
    # (uniform integers; structures of every category but `points` scale with it), or None = the patch size
    canvas: int | tuple[int, int] | None = 128
    xspace_fraction: float = 0.0  # share of training pairs from the time-domain x-space model (Table 3)

    def __post_init__(self):
        sides = self.canvas if isinstance(self.canvas, tuple) else (self.canvas,)
        if self.canvas is not None and not (len(sides) in (1, 2) and all(isinstance(v, int) and v >= 8 for v in sides)
                                            and sides[0] <= sides[-1]):
            raise ValueError(f"Protocol.canvas must be an integer >= 8, a (low, high) pair of them or None, "
                             f"got {self.canvas!r}")
        if not 0.0 <= self.xspace_fraction <= 1.0:
            raise ValueError(f"Protocol.xspace_fraction must lie in [0, 1], got {self.xspace_fraction}")
        if self.xspace_fraction > 0:
            _ = self.xspace_pairs  # building it checks the x-space constraints (one gradient, one spacing) now

    def canvas_range(self, patch: int) -> tuple[int, int]:
        """(smallest, largest) canvas side the training stream simulates for patches of `patch` px."""
        if self.canvas is None:
            return patch, patch
        return self.canvas if isinstance(self.canvas, tuple) else (self.canvas, self.canvas)

    def for_patch(self, patch: int) -> "Protocol":
        """This protocol with its canvas raised to at least `patch` px (unchanged when it already is): for
        training at a patch larger than the smallest canvas, e.g. `multiscale` (64–256) at 128-px patches,
        which then simulates canvases of 128–256 px. The name records the change."""
        low, high = self.canvas_range(patch)
        if low >= patch:
            return self
        canvas = patch if high <= patch else (patch, high)
        return self.replace(canvas=canvas)

    def typical_canvas(self, patch: int) -> int:
        """One side standing for the range (its geometric mean, a multiple of 8): validation sets and
        `simulate`'s default size."""
        low, high = self.canvas_range(patch)
        return low if low == high else max(low, min(high, 8 * round((low * high) ** 0.5 / 8)))

    @property
    def xspace_pairs(self) -> PairConfig:
        """The pairs mixed in from the time-domain model: the same protocol with the other forward model."""
        return dataclasses.replace(self.pairs, model="xspace")

    def replace(self, **changes) -> "Protocol":
        """This protocol with some PairConfig or Protocol fields changed; the name records which."""
        if not changes:
            return self
        own = {k: changes.pop(k) for k in ("canvas", "xspace_fraction") if k in changes}
        base, _, earlier = self.name.partition(" (changed: ")  # a protocol changed again names each field once
        changed = sorted({*own, *changes, *(earlier.rstrip(")").split(", ") if earlier else ())})
        return dataclasses.replace(self, name=f"{base} (changed: {', '.join(changed)})",
                                   pairs=dataclasses.replace(self.pairs, **changes), **own)

    def describe(self) -> str:
        """One sentence a person reads: the protocol's pairs in words and units."""
        c = self.pairs

        def span(value, unit: str = "") -> str:
            text = f"{value:g}" if np.isscalar(value) else f"{value[0]:g}–{value[1]:g}"
            return f"{text} {unit}" if unit else text

        scan = "2-D Lissajous scans" if c.trajectory == "lissajous" else {"x": "x scans", "z": "z scans", "random": "x and z scans"}[c.scan]
        noise = "noise-free" if c.snr_db is None else f"SNR {span(c.snr_db, 'dB')}"
        # a category named n times is drawn n times as often as one named once
        cats = (", ".join(name if c.categories.count(name) == 1 else f"{name} (×{c.categories.count(name)})"
                          for name in dict.fromkeys(c.categories)) if c.categories else "every phantom category")
        canvas = ("simulated at the patch size" if self.canvas is None else
                  f"{span(self.canvas)}-px canvases cropped to patches")
        model = "PSF model" if c.model == "psf" else f"time-domain x-space model ({c.trajectory} trajectory)"
        text = (f"{model}, {scan}, {span(c.gradient, 'T/m')}, {span(c.spacing_mm, 'mm')} pixels, {noise}, "
                f"concentration {span(c.concentration)}, background {span(c.background)} of the peak, {cats}, "
                f"target = {c.target}, {canvas}")
        if self.xspace_fraction:
            text += f", {100 * self.xspace_fraction:g} % of the pairs from the x-space model"
        return text

    def to_dict(self) -> dict[str, Any]:
        pairs = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.pairs).items()}
        canvas = list(self.canvas) if isinstance(self.canvas, tuple) else self.canvas
        return {"name": self.name, "canvas": canvas, "xspace_fraction": self.xspace_fraction, "pairs": pairs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Protocol":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown protocol fields {unknown}; expected some of {sorted(known)}")
        pair_fields = {f.name for f in dataclasses.fields(PairConfig)}
        stored = dict(d.get("pairs", {}))
        unknown = sorted(set(stored) - pair_fields)
        if unknown:
            raise ValueError(f"unknown protocol pair fields {unknown}; expected some of {sorted(pair_fields)}")
        pairs = PairConfig(**{k: tuple(v) if k in _TUPLE_FIELDS and isinstance(v, list) else v
                              for k, v in stored.items()})
        canvas = tuple(d["canvas"]) if isinstance(d.get("canvas"), list) else d.get("canvas", cls.canvas)
        return cls(**{**d, "pairs": pairs, "canvas": canvas})

    def simulate(self, rng: np.random.Generator, size: int, count: int, details: bool = False):
        """`count` whole pairs (lq, gt), float32 (count, size, size) in [0, 1], with the x-space share mixed
        in; with `details` also what each pair was drawn with (see `make_pairs`; plus "models")."""
        if self.xspace_fraction == 0:
            lq, gt, drawn = make_pairs(rng, self.pairs, size, count, details=True)
            drawn["models"] = [self.pairs.model] * count
        else:
            n_x = int(rng.binomial(count, self.xspace_fraction))
            parts = [(self.xspace_pairs, make_pairs(rng, self.xspace_pairs, size, n_x, details=True))] if n_x else []
            if n_x < count:
                parts.append((self.pairs, make_pairs(rng, self.pairs, size, count - n_x, details=True)))
            order = rng.permutation(count)  # interleave the two models
            lq, gt = (np.concatenate([part[k] for _, part in parts])[order] for k in (0, 1))
            drawn = {key: np.concatenate([np.asarray(part[2][key]) for _, part in parts])[order]
                     for key in ("categories", "scans", "gradients", "spacings", "snr_db", "target_scale")}
            drawn["categories"] = list(drawn["categories"])
            drawn["models"] = list(np.concatenate([[config.model] * len(part[0]) for config, part in parts])[order])
        return (lq, gt, drawn) if details else (lq, gt)

    def geometry(self, drawn: dict) -> np.ndarray:
        """(N, 2) float32 per pair: [1 for an x scan, 0 for z; gradient·spacing in T/m·mm], the two numbers
        that fix its PSF (ξ = k·G·r depends on G·spacing only); NaN for pairs whose input is not a
        Cartesian scan (the Lissajous trajectory), whose forward model is no single PSF."""
        scan_x = (np.asarray(drawn["scans"]) == "x").astype(np.float32)
        blur = (np.asarray(drawn["gradients"]) * np.asarray(drawn["spacings"])).astype(np.float32)
        if self.pairs.trajectory == "lissajous":
            blur = np.where(np.asarray(drawn["models"]) == "xspace", np.nan, blur).astype(np.float32)
        return np.stack([scan_x, blur], axis=1)

    def patches(self, rng: np.random.Generator, patch: int, count: int, geometry: bool = False):
        """`count` training pairs (count, patch, patch): simulated on the canvas, one random crop from each;
        with `geometry`, also each pair's `geometry` (N, 2).

        Images are normalised on the whole canvas (as a whole scan is), so a patch's maximum may be < 1.
        """
        low, high = self.canvas_range(patch)
        if low < patch:
            raise ValueError(f"protocol {self.name!r}: canvas {low} is smaller than the patch {patch}")
        # a single canvas draws nothing here, so the streams of single-canvas protocols stay as they were
        canvas = low if low == high else int(rng.integers(low, high + 1))
        lq, gt, drawn = self.simulate(rng, canvas, count, details=True)
        if canvas > patch:
            corners = rng.integers(0, canvas - patch + 1, size=(count, 2))
            rows = corners[:, :1, None] + np.arange(patch)[None, :, None]  # (N, P, 1)
            cols = corners[:, None, 1:] + np.arange(patch)[None, None, :]  # (N, 1, P)
            index = np.arange(count)[:, None, None]
            lq, gt = np.ascontiguousarray(lq[index, rows, cols]), np.ascontiguousarray(gt[index, rows, cols])
        return (lq, gt, self.geometry(drawn)) if geometry else (lq, gt)


PROTOCOLS: dict[str, Protocol] = {
    "default": Protocol(
        name="default",
        pairs=PairConfig(scan="random", target="phantom", model="psf", gradient=(5.0, 12.0),
                         spacing_mm=(0.2, 0.5), snr_db=(15.0, 45.0), concentration=(0.3, 1.0),
                         background=(0.0, 0.05)),
        canvas=128,
    ),
    "multiscale": Protocol(
        name="multiscale",
        pairs=PairConfig(scan="random", target="phantom", model="psf", gradient=(5.0, 12.0),
                         spacing_mm=(0.2, 0.5), snr_db=(15.0, 45.0), concentration=(0.3, 1.0),
                         background=(0.0, 0.05), categories=(*DEFAULT_CATEGORIES, "points")),
        canvas=(64, 256),
    ),
    # `multiscale` with the point sources drawn twice as often (2 in 7 phantoms instead of 1 in 6): every
    # fine-tune of the shipped model so far widened its restored point along the drive axis while the other
    # categories' scores rose (experiments/results/edge-polish.md); this asks whether more points keep it
    "multiscale-points": Protocol(
        name="multiscale-points",
        pairs=PairConfig(scan="random", target="phantom", model="psf", gradient=(5.0, 12.0),
                         spacing_mm=(0.2, 0.5), snr_db=(15.0, 45.0), concentration=(0.3, 1.0),
                         background=(0.0, 0.05), categories=(*DEFAULT_CATEGORIES, "points", "points")),
        canvas=(64, 256),
    ),
    "authors": Protocol(
        name="authors",
        pairs=PairConfig(scan="x", target="phantom", model="xspace", trajectory="lissajous", gradient=9.0,
                         snr_db=(30.0, 40.0)),
        canvas=120,
    ),
    "authors-psf": Protocol(
        name="authors-psf",
        pairs=PairConfig(scan="x", target="phantom", model="psf", gradient=9.0, snr_db=(30.0, 40.0)),
        canvas=None,
    ),
    "shipped-v1": Protocol(
        name="shipped-v1",
        pairs=PairConfig(scan="random", target="phantom", gradient=(6.0, 12.0), snr_db=(25.0, 45.0),
                         concentration=(0.5, 1.0), background=(0.0, 0.02)),
        canvas=None,
    ),
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; expected one of {sorted(PROTOCOLS)}") from None
