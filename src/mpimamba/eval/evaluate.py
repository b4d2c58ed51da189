"""Score trained models on a dataset split: per-image scores, a per-method table, figures.

    OUT/scores.csv          one row per (image, model): psnr, ssim, nrmse, and the quantities of
                            `eval.quantitative` (mass ratio, interior fill, negative fraction; linearity
                            slope and R² on sensitivity phantoms; the mass ratio in the input's units on
                            simulated sets whose manifest records each pair's PSF, `mpimamba simulate`'s);
                            model "input" = the input itself
    OUT/table.csv, .md      per method label: the mean over images of each checkpoint, then mean ± std
                            (sample std) over the checkpoints sharing the label (e.g. trained with different
                            seeds); std is empty for a single checkpoint; plus the resolution columns
    OUT/categories.csv, .md the same means per (label, phantom category), when the dataset's manifest
                            names each pair's category (`mpimamba simulate` writes it)
    OUT/resolution.csv      FWHM and smallest resolved spacing along x and z, and the anisotropy z/x, of the
                            input, the target and every checkpoint, on the point-source chart of
                            `eval.resolution` simulated with the dataset's protocol (from its manifest;
                            not for Lissajous protocols, whose blur is no single PSF)
    OUT/figures/MODEL/NAME.png   input | output | target | error map, per image and checkpoint
    OUT/figures/grid.png    the first few images x (input, each method's first checkpoint, target)
                            (images larger than FIGURE_PIXELS a side are shown subsampled; scores are
                            always of the full images)
    OUT/figures/profiles/MODEL.png   line profiles of the chart's point source along x and z

A checkpoint's label is the "label" key of its JSON config if present, else its method name; checkpoints
sharing a label are one row (mean ± std over them) only when they are seeds of one configuration (same
network and training settings, different seeds) or the user labels them together (`labels`); otherwise
each is its own row, "label (run folder)". Each input is restored through `infer.Restoration`, exactly
as `calibrate` would write it (same normalisation and non-negative clamp), and scored against its target
as it is on disk; `convention` picks the metrics of `eval.metrics` ("ours", the default, used in our tables) or the
authors' 8-bit variant ("authors").
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from ..data.paired import PairedFolder
from ..fileutil import write_text_atomic
from ..infer import Restoration, resolve_device
from ..locks import folder_lock
from ..models.checkpoint import load_model, read_model_config
from ..train.config import RUNTIME_FIELDS, TrainConfig
from . import resolution
from .figures import save_comparison, save_grid, save_profiles
from .metrics import CONVENTIONS, scores
from .quantitative import INPUT_MASS, LINEARITY, QUANTITIES, finite_mean, input_units_mass_ratio, quantities

METRICS = ("psnr", "ssim", "nrmse")
PER_IMAGE = (*METRICS, *QUANTITIES, INPUT_MASS, *LINEARITY)  # every per-image column of scores.csv
DIGITS = {"psnr": 2, "ssim": 4, "nrmse": 4, "mass_ratio": 3, "interior_fill": 3, "negative_fraction": 4,
          INPUT_MASS: 3, "linearity_slope": 3, "linearity_r2": 4}  # decimals every results table shows
INPUT = "input"
TARGET = "target"
GRID_IMAGES = 4
# figures show each image at most this many pixels a side: a panel is ~220 pixels wide, and matplotlib drawing a
# 3000x3000 image at full size costs ~700 MB (with "nearest" it shows a subsample of the pixels anyway)
FIGURE_PIXELS = 1024


def for_figure(image: np.ndarray) -> np.ndarray:
    """`image` as a figure shows it: every k-th pixel per axis, small enough for FIGURE_PIXELS (a small
    copy, so that it does not keep the whole image alive); images that fit are returned as they are."""
    step = -(-max(image.shape) // FIGURE_PIXELS)
    return np.ascontiguousarray(image[::step, ::step]) if step > 1 else image


def format_score(metric: str, mean: float, std: float | str = "") -> str:
    """A table cell: the mean, and "± std" when a spread over seeds exists ("" when it does not); "–"
    for a quantity that does not apply (NaN)."""
    if mean == "" or not np.isfinite(mean):
        return "–"
    digits = DIGITS.get(metric, 2)
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std != "" and np.isfinite(std) else "")


def score_cells(row: dict) -> str:
    """A summary row's PSNR | SSIM | nRMSE cells (from its <metric>_mean and <metric>_std fields)."""
    return " | ".join(format_score(m, row[f"{m}_mean"], row[f"{m}_std"]) for m in METRICS)


@dataclass
class Checkpoint:
    path: Path
    label: str  # the table row: checkpoints sharing it are seeds of one configuration
    name: str  # unique per evaluation: the label, or label-2, label-3, ... when labels repeat


# training settings in which seeds of one configuration may differ: the seed, those a resume may change,
# and those that name, shard, checkpoint or monitor a run without changing what it learns from
SEED_INDEPENDENT = (*RUNTIME_FIELDS, "seed", "label", "workers", "ckpt_every", "val_every", "val_images")


def configuration(cfg: dict) -> str:
    """What makes two checkpoints the same configuration: the network (method, preset, overrides) and every
    training setting (data, protocol, budget, optimiser) except the seed and how the run was executed."""
    training = cfg.get("training")
    if isinstance(training, dict):
        try:  # one form for configs of every version (old `synthetic` dicts become protocols)
            training = TrainConfig.from_dict(training).identity(ignore=SEED_INDEPENDENT)
        except (TypeError, ValueError):  # a recipe's own record (the shipped model's): compared as it is
            training = {k: v for k, v in training.items() if k not in SEED_INDEPENDENT}
    if isinstance(training, dict) and {"method", "preset"} <= set(training):
        # what the user asked for; the model's own overrides may hold what training chose (a classical
        # method's fitted setting), which varies from seed to seed like weights do
        key = training
    else:
        key = {"method": cfg["method"], "preset": cfg["preset"], "overrides": cfg.get("overrides", {}),
               "training": training}
    return json.dumps(key, sort_keys=True, default=str)


def _run_name(path: Path) -> str:
    """A checkpoint's own name: its run folder (for RUN or RUN/model.safetensors), else the file's stem."""
    path = path if path.is_dir() else path.with_suffix("")
    return path.parent.name if path.name == "model" and path.parent.name else path.name


class _Entry(NamedTuple):
    path: Path
    label: str
    labelled_by_user: bool
    configuration: str
    seed: int | None


def _checkpoints(paths: list[str | Path], labels: dict[str, str] | None = None) -> list[Checkpoint]:
    """Checkpoints with their table rows. A row groups checkpoints as seeds only when they share a label and
    are the same `configuration` with different seeds, or when the user labels them together (`labels`:
    path -> row name, `--label NAME=PATH`); any other checkpoint is its own row, named by its run folder."""
    labels = {str(Path(k)): v for k, v in (labels or {}).items()}
    entries = []
    for p in paths:
        path = Path(p)
        if not path.exists() and not path.with_suffix(".safetensors").exists():
            raise FileNotFoundError(f"checkpoint {path} not found (a .safetensors file or a run folder)")
        cfg = read_model_config(path)
        given = labels.get(str(path))
        label = given or str(cfg.get("label") or cfg["method"])
        if label == INPUT:
            raise ValueError(f"checkpoint {path}: the label {INPUT!r} is reserved for the input row")
        entries.append(_Entry(path, label, given is not None, configuration(cfg), cfg.get("seed")))
    unknown = set(labels) - {str(e.path) for e in entries}
    if unknown:
        raise ValueError(f"--label names {sorted(unknown)}, which are not among the checkpoints evaluated")

    by_label: dict[str, list[_Entry]] = defaultdict(list)
    for e in entries:
        by_label[e.label].append(e)

    def one_row(group: list[_Entry]) -> bool:
        seeds = [e.seed for e in group]
        seeds_of_one = (len({e.configuration for e in group}) == 1 and None not in seeds
                        and len(set(seeds)) == len(seeds))
        return len(group) == 1 or all(e.labelled_by_user for e in group) or seeds_of_one

    grouped = {label for label, group in by_label.items() if one_row(group)}
    out: list[Checkpoint] = []
    rows: dict[str, int] = defaultdict(int)  # checkpoints per row so far
    own: dict[str, int] = defaultdict(int)  # rows per run name so far: the same run given twice is two rows
    for e in entries:
        row = e.label
        if row not in grouped:
            row = f"{e.label} ({_run_name(e.path)})"
            own[row] += 1
            row = row if own[row] == 1 else f"{row} #{own[row]}"
        rows[row] += 1
        out.append(Checkpoint(e.path, row, row if rows[row] == 1 else f"{row}-{rows[row]}"))
    return out


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def summarise(per_image: list[dict], key: tuple[str, ...] = ("label",)) -> list[dict]:
    """Per-image rows -> one row per `key` (by default the label): the mean over images per checkpoint
    (ignoring NaN: a quantity that does not apply to an image), then mean and sample std over checkpoints."""
    per_model: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in per_image:
        for m in PER_IMAGE:
            per_model[(*(row[k] for k in key), row["model"])][m].append(row[m])
    by_key: dict[tuple, list[dict[str, float]]] = defaultdict(list)
    n_images: dict[tuple, int] = {}
    for (*group, _), values in per_model.items():
        by_key[tuple(group)].append({m: finite_mean(v) for m, v in values.items()})
        n_images[tuple(group)] = len(values["psnr"])
    table = []
    for group, means in by_key.items():
        row: dict = {"method": group[0], **dict(zip(key[1:], group[1:])), "checkpoints": len(means),
                     "images": n_images[group]}
        for m in PER_IMAGE:
            v = np.array([x[m] for x in means])
            row[f"{m}_mean"] = finite_mean(v)
            row[f"{m}_std"] = float(np.nanstd(v, ddof=1)) if len(v) > 1 and np.isfinite(v).all() else ""
        table.append(row)
    return table


def _markdown(table: list[dict], convention: str, split: str, flip_average: bool = False) -> str:
    restored = " Restored with flip averaging (`--flip-average`)." if flip_average else ""
    lines = [
        f"Split: {split}. Metrics: {convention} convention (`mpimamba.eval.metrics`). Mean over test images; "
        f"± = standard deviation over checkpoints (seeds) sharing a method label.{restored}",
        "",
        "| Method | PSNR (dB) ↑ | SSIM ↑ | nRMSE ↓ | checkpoints | images |",
        "|---|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(f"| {row['method']} | {score_cells(row)} | {row['checkpoints']} | {row['images']} |")
    lines += [
        "",
        "Quantities (`mpimamba.eval.quantitative`): mass ratio = sum(output) / sum(target); interior fill = "
        "mean output / mean target inside the target's filled regions eroded by 3 px; negative = share of "
        "pixels below 0; mass ratio, input units = the output scaled to explain the input through the pair's "
        "PSF against the target in the input's units (simulated sets of the PSF model: their manifest records "
        "each pair's geometry). Resolution (`mpimamba.eval.resolution`, noise-free point-source chart): FWHM and "
        "smallest spacing resolved by the 26.4 % dip criterion, in mm, along x and z; anisotropy = FWHM z / x.",
        "",
        "| Method | mass ratio | interior fill | negative | mass ratio, input units | FWHM x | FWHM z | resolved x | "
        "resolved z | z/x |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        cells = [format_score(m, row[f"{m}_mean"], row[f"{m}_std"]) for m in (*QUANTITIES, INPUT_MASS)]
        cells += [format_score(c, row.get(c, float("nan"))) for c in resolution.COLUMNS]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _category_markdown(table: list[dict]) -> str:
    lines = ["Means over the images of each phantom category (linearity: sensitivity phantoms only).", "",
             "| Method | category | images | PSNR | SSIM | mass ratio | mass ratio, input units | interior fill | "
             "linearity slope | linearity R² |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in table:
        cells = [format_score(m, row[f"{m}_mean"])
                 for m in ("psnr", "ssim", "mass_ratio", INPUT_MASS, "interior_fill", *LINEARITY)]
        lines.append(f"| {row['method']} | {row['category']} | {row['images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


PAIR_FIELDS = ("model", "scan", "gradient", "spacing_mm", "target_scale")  # of a manifest's "drawn" record


def _drawn_records(manifest: dict) -> dict[str, dict]:
    """{file stem: its manifest record} of the pairs whose input-units mass ratio applies (`data.synthetic`
    records each pair's forward model and PSF): pairs of the PSF model with the phantom as the target (an
    isotropic target is itself a blurred image, not a concentration map). Empty for a user's dataset or a
    manifest written before the records; a record without every field of PAIR_FIELDS is left out."""
    drawn = manifest.get("drawn")
    pairs = (manifest.get("protocol") or {}).get("pairs") or {}
    if not isinstance(drawn, dict) or pairs.get("target", "phantom") != "phantom":
        return {}
    return {stem: record for stem, record in drawn.items()
            if isinstance(record, dict) and record.get("model") == "psf"
            and all(k in record for k in PAIR_FIELDS)}


def _input_mass(result: np.ndarray, gt: np.ndarray, lq: np.ndarray, pair: dict | None) -> float:
    """The input-units mass ratio of one restored image from its pair's record (`_drawn_records`); NaN
    without one."""
    from ..refine import ScanGeometry

    if pair is None:
        return float("nan")
    geometry = ScanGeometry(pair["scan"], float(pair["gradient"]), float(pair["spacing_mm"]))
    return input_units_mass_ratio(result, gt, lq, geometry, float(pair["target_scale"]))


def _manifest(data_root: Path) -> dict:
    try:
        return json.loads((Path(data_root) / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # a user's own dataset: no categories, no protocol to chart


def _chart(manifest: dict) -> resolution.Chart | None:
    """The resolution chart of the dataset's protocol, or None when the manifest names none."""
    from ..physics.pairs import PairConfig
    from ..physics.protocols import Protocol

    stored = manifest.get("protocol")
    if not isinstance(stored, dict):
        return None
    try:
        if "pairs" in stored:
            pairs = Protocol.from_dict(stored).pairs
        else:  # manifests before protocols: the PairConfig fields and the size
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k != "size"}
            pairs = PairConfig(**fields)
    except (TypeError, ValueError):
        return None
    if pairs.trajectory == "lissajous":  # no single PSF: the chart's PSF-model inputs are not this data's
        return None
    return resolution.make_chart(resolution.ChartSetting.of(pairs))


def evaluate(
    models: list[str | Path],
    data_root: str | Path,
    split: str = "test",
    out: str | Path = "report",
    convention: str = "ours",
    tile: int | None = 256,
    overlap: int = 32,
    device: str | None = None,
    overwrite: bool = False,
    figures: bool = True,
    normalise: str = "max",
    labels: dict[str, str] | None = None,
    flip_average: bool = False,
) -> list[dict]:
    """Score every checkpoint in `models` on `data_root/split`; write the report to `out`; return the table.
    `flip_average`: restore as `calibrate --flip-average` does (`infer.Restoration`)."""
    with folder_lock(out, "report folder"):
        return _evaluate(models, data_root, split, out, convention, tile, overlap, device, overwrite, figures,
                         normalise, labels, flip_average)


def _evaluate(models, data_root, split, out, convention, tile, overlap, device, overwrite, figures,
              normalise, labels, flip_average) -> list[dict]:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    if not models:
        raise ValueError("evaluate needs at least one checkpoint")
    out = Path(out)
    outputs = [out / n for n in ("scores.csv", "table.csv", "table.md", "categories.csv", "categories.md",
                                 "resolution.csv")] + ([out / "figures"] if figures else [])
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist; pass --overwrite to replace the report")
    checkpoints = _checkpoints(models, labels)
    dataset = PairedFolder(data_root, split)
    device = resolve_device(device)
    manifest = _manifest(data_root)
    categories = manifest.get("categories", {}) if isinstance(manifest.get("categories"), dict) else {}
    chart = _chart(manifest)
    drawn = _drawn_records(manifest)

    rows: list[dict] = []
    grid: dict[str, tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]] = {}
    first_of_label = {c.label: c.name for c in reversed(checkpoints)}
    resolved: dict[str, dict] = {}  # model name -> the resolution columns
    if chart is not None:
        resolved[INPUT] = {"label": INPUT, **resolution.measure(chart.inputs, chart)}
        resolved[TARGET] = {"label": TARGET, **resolution.measure(chart.targets, chart)}

    def record(model_name: str, label: str, checkpoint: str, name: str, result: np.ndarray, gt: np.ndarray,
               lq: np.ndarray | None):
        s = scores(result, gt, convention)
        category = categories.get(Path(name).stem, "")
        rows.append({"image": name, "category": category, "model": model_name, "label": label,
                     "checkpoint": checkpoint, **{m: float(s[m]) for m in METRICS},
                     **quantities(result, gt, sensitivity=category == "sensitivity"),
                     INPUT_MASS: _input_mass(result, gt, lq, drawn.get(Path(name).stem)) if lq is not None
                     else float("nan")})

    # every model is loaded once and every pair read once: each image goes through all models in turn
    restorations = [Restoration(load_model(c.path, map_location=device), normalise=normalise, tile=tile,
                                overlap=overlap, device=device, flip_average=flip_average) for c in checkpoints]
    bar = tqdm(total=len(checkpoints) * len(dataset), desc="evaluate", unit="img")
    for i, name in enumerate(dataset.names):
        lq, gt = dataset.read_pair(i)
        # the reference line: the input scored against the target (a blurred image: no input-units mass)
        record(INPUT, INPUT, "", name, lq, gt, None)
        for ckpt, restoration in zip(checkpoints, restorations):
            restored = restoration(lq, name=f"{data_root}/{split}/lq/{name}")
            record(ckpt.name, ckpt.label, str(ckpt.path), name, restored, gt, lq)
            if figures:
                shown = [for_figure(a) for a in (lq, restored, gt)]
                save_comparison(out / "figures" / ckpt.name / f"{name}.png", *shown,
                                title=f"{ckpt.name}: {name}", overwrite=overwrite)
                if i < GRID_IMAGES and first_of_label[ckpt.label] == ckpt.name:
                    grid.setdefault(name, (shown[0], {}, shown[2]))[1][ckpt.label] = shown[1]
            bar.update()
    bar.close()
    for ckpt, restoration in zip(checkpoints, restorations):
        if chart is None:
            break
        charted = np.stack([restoration(image, name=f"resolution chart {n}")
                            for n, image in zip(chart.names, chart.inputs)])
        resolved[ckpt.name] = {"label": ckpt.label, **resolution.measure(charted, chart)}
        if figures:
            dot = chart.names.index("dot")
            save_profiles(out / "figures" / "profiles" / f"{ckpt.name}.png",
                          {"input": chart.inputs[dot], "output": charted[dot], "target": chart.targets[dot]},
                          chart.setting.spacing_mm, title=f"{ckpt.name}: point source, {chart.setting.scan} scan",
                          overwrite=overwrite)
    del restorations

    columns = ["image", "category", "model", "label", "checkpoint", *PER_IMAGE]
    write_text_atomic(out / "scores.csv", _csv(rows, columns))
    table = summarise(rows)
    for row in table:  # the resolution columns: mean over the label's checkpoints
        measured = [r for r in resolved.values() if r["label"] == row["method"]]
        for c in resolution.COLUMNS:
            row[c] = finite_mean([r[c] for r in measured]) if measured else float("nan")
    write_text_atomic(out / "table.csv", _csv(table, list(table[0])))
    write_text_atomic(out / "table.md", _markdown(table, convention, split, flip_average))
    if chart is not None:
        setting = chart.setting
        res_rows = [{"model": name, "label": r["label"], "scan": setting.scan, "gradient_t_per_m": setting.gradient,
                     "spacing_mm": setting.spacing_mm, **{c: r[c] for c in resolution.COLUMNS}}
                    for name, r in resolved.items()]
        write_text_atomic(out / "resolution.csv", _csv(res_rows, list(res_rows[0])))
    if categories:
        order = {label: i for i, label in enumerate(dict.fromkeys(r["label"] for r in rows))}
        by_category = sorted(summarise(rows, key=("label", "category")),
                             key=lambda r: (order[r["method"]], r["category"]))
        write_text_atomic(out / "categories.csv", _csv(by_category, list(by_category[0])))
        write_text_atomic(out / "categories.md", _category_markdown(by_category))
    if figures and grid:
        save_grid(out / "figures" / "grid.png", [(n, lq, o, gt) for n, (lq, o, gt) in grid.items()], overwrite=overwrite)
    return table
