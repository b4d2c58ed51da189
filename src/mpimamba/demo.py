"""`mpimamba demo`: restore freshly simulated phantoms with the shipped model and show the result.

The demo draws pairs from the same distribution the model was trained on (`pretrained.protocol`)
but from a seed space the training stream never touches (a distinct SeedSequence entropy), several
phantoms of every category, restores them with the shipped model (or `--model`), and writes:
- `OUT/demo.png`: one row per phantom, input | calibrated | target | error map;
- `OUT/metrics.md`: PSNR / SSIM / nRMSE of the input and of the output against the target, and per
  phantom category the output's mass ratio, interior fill, negative share and (sensitivity phantoms)
  concentration linearity (`mpimamba.eval.quantitative`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from . import pretrained
from .physics.pairs import make_pairs
from .eval.quantitative import INPUT_MASS, QUANTITIES, finite_mean, fit_line
from .physics.phantoms import DEFAULT_CATEGORIES

# SeedSequence entropy of the demo pairs; training streams are seeded from small integers, never this.
DEMO_ENTROPY = 0x0DE3_0DE3_0DE3
# Another unseen set of the same distribution, for choosing among candidate models (experiments/ship_check.py
# --pairs selection) so that the demo pairs, on which the model card's figures are stated, are not also the
# pairs the choice was made on.
SELECTION_ENTROPY = 0x5E1E_C7ED_0DE3
DEMO_SIZE = 128
PER_CATEGORY = 2


INPUT_UNITS_NOTE = ("Mass ratio, input units: the output scaled to explain the input through the pair's PSF, "
                    "against the target in the input's units (`mpimamba.eval.quantitative`); the plain mass ratio "
                    "compares two images each divided by its own maximum, so it also scores how high the hottest "
                    "structure came out.")


def demo_pairs(size: int = DEMO_SIZE, per_category: int = PER_CATEGORY, protocol=None, geometry: bool = False,
               entropy: int = DEMO_ENTROPY):
    """[(category, index, lq, gt)]: `per_category` unseen pairs of every phantom category, reproducible,
    from `protocol` (default: the one the shipped model was trained on, `pretrained.protocol()`), drawn from
    the seed space `entropy` (the demo's, or `SELECTION_ENTROPY` for another set of the same kind). With
    `geometry`, each tuple also holds the pair's scan axis ("x"/"z") and gradient·spacing (T/m·mm), the two
    numbers that fix its PSF, and its `target_scale` (the target in the input's units, `physics.pairs`):
    the same pairs either way."""
    protocol = protocol or pretrained.protocol()
    pairs = []
    for c, category in enumerate(sorted(DEFAULT_CATEGORIES)):  # points: not in the demo (see DEFAULT_CATEGORIES)
        rng = np.random.default_rng(np.random.SeedSequence([entropy, c]))
        config = replace(protocol.pairs, categories=(category,))
        lq, gt, drawn = make_pairs(rng, config, size, per_category, details=True)
        for i in range(per_category):
            extra = (str(drawn["scans"][i]), float(drawn["gradients"][i] * drawn["spacings"][i]),
                     float(drawn["target_scale"][i])) if geometry else ()
            pairs.append((category, i, lq[i], gt[i], *extra))
    return pairs


def has_psf(protocol) -> bool:
    """Whether the input-units mass ratio applies to the protocol's pairs: one PSF per pair, and the phantom
    (a concentration map) as the target."""
    return protocol.pairs.model == "psf" and protocol.pairs.target == "phantom"


def _mean(rows: list[dict], key: str) -> float:
    return finite_mean([r[key] for r in rows])


def _cell(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if np.isfinite(value) else "–"


def metrics_table(rows: list[dict]) -> tuple[str, dict[str, float]]:
    """Markdown of per-image scores, per-category quantities and the mean gain over the input, and the
    mean scores themselves (plus the quantities of the output, per category: "<quantity>_<category>")."""
    lines = [
        "| image | PSNR in | PSNR out | SSIM in | SSIM out | nRMSE in | nRMSE out | mass ratio | interior fill |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['psnr_in']:.2f} | {r['psnr_out']:.2f} | {r['ssim_in']:.3f} | "
            f"{r['ssim_out']:.3f} | {r['nrmse_in']:.4f} | {r['nrmse_out']:.4f} | {_cell(r['mass_ratio_out'], 3)} | "
            f"{_cell(r['interior_fill_out'], 3)} |"
        )
    mean = {k: _mean(rows, k) for k in rows[0] if k not in ("name", "category", "dots_true", "dots_out")}
    lines.append(
        f"| **mean** | {mean['psnr_in']:.2f} | {mean['psnr_out']:.2f} | {mean['ssim_in']:.3f} | "
        f"{mean['ssim_out']:.3f} | {mean['nrmse_in']:.4f} | {mean['nrmse_out']:.4f} | "
        f"{_cell(mean['mass_ratio_out'], 3)} | {_cell(mean['interior_fill_out'], 3)} |"
    )
    lines += ["", "Per phantom category, of the output (`mpimamba.eval.quantitative`; linearity on the "
              "sensitivity phantoms' dots, all of a category's dots pooled):", "",
              "| category | images | PSNR out | SSIM out | mass ratio | mass ratio, input units | interior fill | "
              "negative | linearity slope | linearity R² |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for category in sorted({r["category"] for r in rows}):
        group = [r for r in rows if r["category"] == category]
        values = {q: _mean(group, f"{q}_out") for q in ("psnr", "ssim", *QUANTITIES, INPUT_MASS)}
        lin = _pooled_linearity(group) if category == "sensitivity" else {}
        mean.update({f"{q}_{category}": v for q, v in {**values, **lin}.items()})
        lines.append(
            f"| {category} | {len(group)} | {values['psnr']:.2f} | {values['ssim']:.3f} | "
            f"{_cell(values['mass_ratio'], 3)} | {_cell(values[INPUT_MASS], 3)} | "
            f"{_cell(values['interior_fill'], 3)} | "
            f"{_cell(values['negative_fraction'], 4)} | {_cell(lin.get('linearity_slope', np.nan), 3)} | "
            f"{_cell(lin.get('linearity_r2', np.nan), 4)} |"
        )
    gain = (
        f"Mean gain of the calibrated image over the input: PSNR {mean['psnr_out'] - mean['psnr_in']:+.2f} dB, "
        f"SSIM {mean['ssim_out'] - mean['ssim_in']:+.3f}, nRMSE {mean['nrmse_out'] - mean['nrmse_in']:+.4f}."
    )
    return "\n".join(lines) + "\n\n" + gain + "\n", mean


def _pooled_linearity(group: list[dict]) -> dict[str, float]:
    """Slope and R² of restored against true dot means over every dot of the group's images."""
    return fit_line(np.concatenate([r["dots_true"] for r in group]), np.concatenate([r["dots_out"] for r in group]))


def score_pairs(restoration, pairs) -> tuple[list[dict], list[tuple]]:
    """Restore every (category, index, lq, gt[, scan, blur, target_scale]) of `pairs` (`demo_pairs`, with or
    without `geometry`; with it, the rows also hold the input-units mass ratio); per-image score rows (for
    `metrics_table`) and the figure rows (name, input, output, target) of the first PER_CATEGORY pairs of each
    category."""
    from .eval.metrics import scores
    from .eval.quantitative import dot_means, input_units_mass_ratio, quantities
    from .refine import ScanGeometry

    rows, figure_rows = [], []
    for category, index, lq, gt, *physics in pairs:
        name = f"{category}-{index}"
        output = restoration(lq, name=name)
        s_in, s_out = scores(lq, gt), scores(output, gt)
        true, restored = dot_means(output, gt) if category == "sensitivity" else (np.zeros(0), np.zeros(0))
        input_mass = float("nan")
        if physics:
            scan, blur, target_scale = physics
            input_mass = input_units_mass_ratio(output, gt, lq, ScanGeometry.from_blur(scan, blur), target_scale)
        rows.append({"name": name, "category": category, **{f"{k}_in": float(v) for k, v in s_in.items()},
                     **{f"{k}_out": float(v) for k, v in s_out.items()},
                     **{f"{k}_out": v for k, v in quantities(output, gt).items() if k in QUANTITIES},
                     f"{INPUT_MASS}_out": input_mass, "dots_true": true, "dots_out": restored})
        if index < PER_CATEGORY:  # the figure stays readable: at most 2 rows a category
            figure_rows.append((name, lq, output, gt))
    return rows, figure_rows


def run_demo(out: str | Path, model_path: str | Path | None = None, overwrite: bool = False,
             per_category: int = PER_CATEGORY, flip_average: bool = False) -> dict:
    """Write OUT/demo.png and OUT/metrics.md; return the mean scores. `flip_average`: restore as
    `calibrate --flip-average` does."""
    from .eval.figures import save_rows
    from .fileutil import write_text_atomic
    from .infer import Restoration
    from .models import load_model

    out = Path(out)
    targets = [out / "demo.png", out / "metrics.md"]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist; pass --overwrite to replace them")
    model_path = Path(model_path) if model_path is not None else pretrained.model_path()
    # the path calibrate writes and evaluate scores
    restoration = Restoration(load_model(model_path), flip_average=flip_average)
    protocol = pretrained.protocol(model_path.with_suffix(".json"))  # the pairs of the model's own training

    psf = has_psf(protocol)
    pairs = demo_pairs(per_category=per_category, protocol=protocol, geometry=psf)
    rows, figure_rows = score_pairs(restoration, pairs)

    table, mean = metrics_table(rows)
    header = (
        f"# mpimamba demo\n\nModel: `{model_path}`. {len(rows)} simulated pairs ({DEMO_SIZE}×{DEMO_SIZE}, "
        f"{per_category} per phantom category, protocol `{protocol.name}`: {protocol.describe()}; seeds never "
        f"used in training){', restored with flip averaging' if flip_average else ''}, scored against the phantom "
        "(PSNR/SSIM with data range 1, nRMSE = RMSE / range of the target)."
        + (" " + INPUT_UNITS_NOTE if psf else "") + "\n\n"
    )
    save_rows(out / "demo.png", figure_rows, overwrite=overwrite)
    write_text_atomic(out / "metrics.md", header + table)
    return mean
