"""Learning curves for Table 1: every method × seed trained at log-spaced budgets, scored on the Table 1 test
set, one small results file per (method, seed, budget), so the command stops and continues at will.

    python experiments/learning_curves.py                          # everything not yet measured
    python experiments/learning_curves.py --methods nafnet --budgets 100 200 --seeds 101
    python experiments/learning_curves.py --assemble-only          # tables and figure from the files

Each (method, seed, budget) is its own training run (`budget` steps in each phase; the constant-then-
cosine schedule is stretched over the budget, as the paper's is over 100k steps, so a snapshot of a
longer run would not be the same experiment) in runs/experiments/curves/METHOD/seedS-stepsB (resumable,
never committed). When a run is scored its results file is written and committed by the user:

    experiments/results/curves/METHOD/seedS-stepsB.json    scores (PSNR, SSIM, nRMSE, the quantities and
                                                           the resolution columns of `mpimamba evaluate`),
                                                           training wall and CPU seconds, provenance
    experiments/results/curves/METHOD/seedS-stepsB.npz     outputs of the first 4 test images (float16),
                                                           first seed only (for Figure 6)

A file that exists is never recomputed (a file made with other settings is refused: pick another
--results or delete it). The training-free methods (`wiener`, `richardson_lucy`) are fitted once per
seed on the validation pairs and appear as horizontal lines. `--assemble-only` (also run at the end of
every invocation) reads every results file and writes curves.md / curves.csv (mean ± std over seeds per
method and budget), table1-curves.md (the largest budget every network reached) and curves.png (PSNR and
SSIM against steps and against training CPU-seconds, the seed spread shaded).

Table 4 the same way (the ablation): `--methods ablation-backbone ablation-ssm ablation-prior mpi_mamba`
trains MPI-Mamba with its parts switched off (the rows of experiments/table4.py), results in
curves/ablation-*/, assembled into table4-curves.md beside the others; they stay out of Table 1's files.

Data: the Table 1 setting (`common.AUTHORS`, training stream and test set alike), preset small, batch 4,
lr 5e-4, patch 64, 30 test images of 64×64 (the same test set as experiments/table1.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import common
import table4
from mpimamba.data.paired import PairedFolder
from mpimamba.eval.evaluate import INPUT, PER_IMAGE, evaluate, format_score
from mpimamba.eval.quantitative import finite_mean
from mpimamba.eval.resolution import COLUMNS as RESOLUTION
from mpimamba.fileutil import atomic_path, write_text_atomic
from mpimamba.infer import Restoration
from mpimamba.models import METHODS, load_model
from mpimamba.physics.protocols import Protocol
from mpimamba.train.config import TrainConfig

TRAINING_FREE = ("wiener", "richardson_lucy")
NETWORKS = tuple(m for m in METHODS if m not in TRAINING_FREE)
# Table 4's ablation rows as curves of their own, "ablation-KEY": MPI-Mamba with its parts switched off by
# network overrides. Its full row (+SSM +prior) is the same configuration as mpi_mamba's Table 1 curve, so
# that curve is reused rather than trained twice.
ABLATIONS = {f"ablation-{row.key}": row for row in table4.ROWS if row.settings["overrides"]}
ABLATION_ROWS = (*ABLATIONS, "mpi_mamba")  # in Table 4's order
BUDGETS = (100, 200, 500, 1000, 2000)
SCORES = (*PER_IMAGE, *RESOLUTION)
RESULTS = common.RESULTS / "curves"
SETTINGS = {"preset": "small", "batch": 4, "lr": 5e-4, "patch": 64, "test_count": 30, "test_size": 64}


def _stem(seed: int, steps: int) -> str:
    return f"seed{seed}-steps{steps}"


def _settings(method: str, seed: int, steps: int, args) -> TrainConfig:
    overrides = ABLATIONS[method].settings["overrides"] if method in ABLATIONS else {}
    return TrainConfig(method="mpi_mamba" if method in ABLATIONS else method, overrides=overrides,
                       preset=args.preset, protocol=common.AUTHORS, steps=max(steps, 1),
                       batch=args.batch, lr=args.lr, patch=args.patch, seed=seed, label=method,
                       ckpt_every=max(1, min(50, steps)), val_every=max(steps, 1), val_images=2,
                       device=args.device, out=str(args.runs / method / _stem(seed, steps)))


def _fixed(args) -> dict:
    return {k: getattr(args, k) for k in SETTINGS}


def measure(method: str, seed: int, steps: int, args, test_root: Path) -> Path:
    """Train (or fit) one (method, seed, budget), score it on the test set, write its results file."""
    path = args.results / method / f"{_stem(seed, steps)}.json"
    cfg = _settings(method, seed, steps, args)
    record = {"method": method, "seed": seed, "steps": steps, "settings": _fixed(args),
              "protocol": common.AUTHORS.to_dict()}
    if path.is_file():
        stored = json.loads(path.read_text())
        # files of older versions lack protocol fields added since (their defaults): compare in today's form
        stored["protocol"] = Protocol.from_dict(stored.get("protocol", {})).to_dict()
        if {k: stored.get(k) for k in record} != json.loads(json.dumps(record)):
            raise ValueError(f"{path} was measured with other settings; pick another --results or delete it")
        return path
    run_dir = Path(cfg.out)
    whole = not (run_dir / "checkpoint.pt").is_file() and not (run_dir / "model.safetensors").is_file()
    cpu, wall = time.process_time(), time.perf_counter()
    run = common.run_training(cfg)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    table = evaluate([run], test_root, "test", args.runs / method / f"{_stem(seed, steps)}-report",
                     device=args.device, overwrite=True, figures=False)
    row = next(r for r in table if r["method"] != INPUT)
    record.update({
        "scores": {c: row.get(f"{c}_mean", row.get(c)) for c in SCORES},
        "input_scores": {c: next(r for r in table if r["method"] == INPUT).get(f"{c}_mean") for c in PER_IMAGE},
        # CPU time of this process (torch's and numba's threads included); unknown for a run trained in
        # several invocations or before this one
        "train_wall_seconds": round(wall, 1) if whole else None,
        "train_cpu_seconds": round(cpu, 1) if whole else None,
        "git": common.git_revision(), "command": " ".join(["python", "experiments/learning_curves.py", *sys.argv[1:]]),
    })
    if seed == args.seeds[0] and method not in ABLATIONS:  # Figure 6 material: the first test images restored
        dataset = PairedFolder(test_root, "test")
        restoration = Restoration(load_model(run), device=args.device)
        shown = min(common.FIGURE_IMAGES, len(dataset))
        outputs = np.stack([restoration(dataset.read_pair(i)[0]) for i in range(shown)])
        with atomic_path(path.with_suffix(".npz")) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, outputs=outputs.astype(np.float16), names=np.array(dataset.names[:shown]))
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    print(f"{method} seed {seed} budget {steps}: PSNR {record['scores']['psnr']:.2f} dB -> {path}")
    return path


def load_results(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*/seed*-steps*.json"))]


def summarise(records: list[dict]) -> list[dict]:
    """Mean ± sample std over seeds per (method, budget)."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["method"], r["steps"])].append(r)
    rows = []
    for (method, steps), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        cpu = [g["train_cpu_seconds"] for g in group if g["train_cpu_seconds"] is not None]
        row = {"method": method, "steps": steps, "seeds": len(group),
               "cpu_seconds": finite_mean(cpu)}
        for c in SCORES:
            # results files written before a column existed lack it: NaN, shown as "–"
            values = np.array([g["scores"].get(c, np.nan) for g in group], np.float64)
            row[f"{c}_mean"] = finite_mean(values)
            row[f"{c}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 and np.isfinite(values).all() else ""
        rows.append(row)
    return rows


def _table(rows: list[dict], columns=("psnr", "ssim", "nrmse", "mass_ratio", "interior_fill", "fwhm_z_mm"),
           names: dict | None = None) -> list[str]:
    """Markdown table of summarised rows; `names` renames methods (e.g. to Table 4's row labels)."""
    names = names or {}
    lines = ["| method | steps/phase | seeds | " + " | ".join(columns) + " | train CPU-s |",
             "|" + "---|" * (len(columns) + 4)]
    for r in rows:
        cells = " | ".join(format_score(c, r[f"{c}_mean"], r[f"{c}_std"]) for c in columns)
        cpu = f"{r['cpu_seconds']:.0f}" if np.isfinite(r["cpu_seconds"]) else "–"
        lines.append(f"| {names.get(r['method'], r['method'])} | {r['steps'] or '—'} | {r['seeds']} | {cells} | {cpu} |")
    return lines


def largest_common_budget(rows: list[dict]) -> int | None:
    """The largest budget that every network with any result reached (with at least one seed)."""
    reached: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        if r["method"] in NETWORKS:
            reached[r["method"]].add(r["steps"])
    common_budgets = set.intersection(*reached.values()) if reached else set()
    return max(common_budgets) if common_budgets else None


RANKED = ("psnr", "ssim", "nrmse", "mass_ratio", "interior_fill", "fwhm_z_mm")  # the metrics `standing` ranks


def standing(rows: list[dict], method: str = "mpi_mamba") -> list[str]:
    """Sentences (generated, so they cannot drift from the files) on where `method` ranks among the networks
    at every budget it was measured at, its PSNR gap to the best network there and to the classical rows,
    and whether that gap closes as the budget grows."""
    mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["steps"])
    if not mine:
        return [f"No results for {method} yet."]
    classical = {r["method"]: r for r in rows if r["method"] in TRAINING_FREE}
    lines, gaps = [], []
    for r in mine:
        peers = [q for q in rows if q["steps"] == r["steps"] and q["method"] in NETWORKS]
        ranks = []
        for metric in RANKED:
            key = common.better_first(metric)
            valid = [q for q in peers if np.isfinite(q[f"{metric}_mean"])]
            if r in valid:
                ordered = sorted(valid, key=lambda q: key(q[f"{metric}_mean"]))
                ranks.append(f"{metric} {ordered.index(r) + 1}")
        best = max((q for q in peers if q is not r), key=lambda q: q["psnr_mean"], default=r)
        gap = r["psnr_mean"] - best["psnr_mean"]  # to the best of the others: > 0 when it leads
        gaps.append((r["steps"], gap, len(peers)))
        versus = "; ".join(f"{gap_c:+.2f} dB against {name}" for name, gap_c in
                           ((n, r["psnr_mean"] - c["psnr_mean"]) for n, c in sorted(classical.items())))
        lines.append(f"- {r['steps']} steps per phase ({len(peers)} networks measured, {r['seeds']} seed(s) of "
                     f"{method}): rank among them by {', '.join(ranks)} (1 = best; mass ratio and interior fill by "
                     f"closeness to 1). PSNR {r['psnr_mean']:.2f} dB, "
                     + (f"{-gap:.2f} dB below the best network ({best['method']}, {best['psnr_mean']:.2f} dB)"
                        if gap < 0 else f"the best network, {gap:.2f} dB above the next ({best['method']})")
                     + (f"; {versus}." if versus else "."))
    complete = [(steps, gap) for steps, gap, n in gaps if n == len(NETWORKS)]
    if len(complete) >= 2:
        (s0, g0), (s1, g1) = complete[0], complete[-1]
        trend = "closes" if g1 > g0 else "does not close"
        lines.append(f"- Between {s0} and {s1} steps per phase (budgets at which all {len(NETWORKS)} networks were "
                     f"measured) the PSNR gap to the best other network {trend}: {g0:+.2f} → {g1:+.2f} dB.")
    else:
        lines.append(f"- Whether the gap closes with budget: not yet known (fewer than two budgets with all "
                     f"{len(NETWORKS)} networks measured).")
    return lines


def figure(rows: list[dict], path: Path) -> Path:
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2)
    for ax_row, metric in zip(axes, ("psnr", "ssim")):
        for ax, x_key in zip(ax_row, ("steps", "cpu_seconds")):
            for method in sorted({r["method"] for r in rows}):
                mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["steps"])
                mean = np.array([r[f"{metric}_mean"] for r in mine])
                std = np.array([r[f"{metric}_std"] if r[f"{metric}_std"] != "" else 0.0 for r in mine])
                if method in TRAINING_FREE:
                    ax.axhline(mean[0], ls="--", lw=1, color="0.4")
                    ax.annotate(method, (0.01, mean[0]), xycoords=("axes fraction", "data"), fontsize=7, color="0.3")
                    continue
                x = np.array([r[x_key] for r in mine], np.float64)
                (line,) = ax.plot(x, mean, marker="o", ms=3, lw=1.2, label=method)
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
            ax.set_xscale("log")
            ax.set_xlabel("steps per phase" if x_key == "steps" else "training CPU-seconds")
            ax.set_ylabel(metric.upper())
            ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=7, ncol=2)
    fig.suptitle("Table 1 learning curves (mean ± std over seeds; dashed: training-free deconvolution)")
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def assemble(results: Path, settings: dict) -> None:
    protocol = json.loads(json.dumps(common.AUTHORS.to_dict()))
    records = [r for r in load_results(results) if r["settings"] == settings
               and Protocol.from_dict(r.get("protocol", {})).to_dict() == protocol]
    if not records:
        print(f"no results files under {results} yet")
        return
    rows = summarise(records)
    table1_rows = [r for r in rows if r["method"] not in ABLATIONS]
    if table1_rows:
        write_table1(table1_rows, sum(r["method"] not in ABLATIONS for r in records), results, settings)
    if len(table1_rows) < len(rows):  # some ablation row
        ablation = ablation_table([r for r in rows if r["method"] in ABLATION_ROWS], settings)
        write_text_atomic(results / "table4-curves.md", "\n".join(ablation))
        print(f"wrote {results}/table4-curves.md")


def write_table1(rows: list[dict], n_files: int, results: Path, settings: dict) -> None:
    """curves.md / .csv / .png and table1-curves.md from Table 1's summarised rows."""
    largest = largest_common_budget(rows)
    lines = ["# Table 1 learning curves", "",
             "Generated by `python experiments/learning_curves.py --assemble-only` from the results files "
             f"beside it ({n_files} files). Setting: {common.describe(common.AUTHORS)}; preset "
             f"{settings['preset']}, batch {settings['batch']}, lr {settings['lr']}, patch {settings['patch']}; test "
             f"set {settings['test_count']} images of {settings['test_size']}×{settings['test_size']} (seed "
             f"{common.TEST_SEED}). "
             "± = sample std over seeds; steps/phase — = training-free.", "", *_table(rows), "",
             "## Where MPI-Mamba stands", "", *standing(rows), ""]
    write_text_atomic(results / "curves.md", "\n".join(lines))
    columns = ["method", "steps", "seeds", "cpu_seconds", *(f"{c}_{s}" for c in SCORES for s in ("mean", "std"))]
    write_text_atomic(results / "curves.csv", ",".join(columns) + "\n" + "".join(
        ",".join(str(r[c]) for c in columns) + "\n" for r in rows))
    if largest is not None:
        at = [r for r in rows if r["steps"] == largest or r["method"] in TRAINING_FREE]
        best = max((r for r in at if r["method"] in NETWORKS), key=lambda r: r["psnr_mean"])
        classical = [r for r in at if r["method"] in TRAINING_FREE]
        beaten = [r["method"] for r in at if r["method"] in NETWORKS and classical and any(
            r["psnr_mean"] <= c["psnr_mean"] or r["ssim_mean"] <= c["ssim_mean"] for c in classical)]
        table1 = ["# Table 1 at the largest budget every network reached", "",
                  f"{largest} steps per phase (from `curves.md`). Best network on PSNR: {best['method']}.",
                  ("Networks that do not beat both classical rows on PSNR and SSIM: " + ", ".join(beaten) + "."
                   if beaten else "Every network beats both classical rows on PSNR and SSIM." if classical
                   else "No classical rows measured yet."), "", *_table(at), ""]
        write_text_atomic(results / "table1-curves.md", "\n".join(table1))
    figure(rows, results / "curves.png")
    print(f"wrote {results}/curves.md, curves.csv, curves.png" + (", table1-curves.md" if largest else ""))


def ablation_table(rows: list[dict], settings: dict) -> list[str]:
    """Table 4 at every budget with an ablation row measured; the largest budget all four rows reached first."""
    labels = {**{name: row.label for name, row in ABLATIONS.items()},
              "mpi_mamba": next(r.label for r in table4.ROWS if not r.settings["overrides"])}
    budgets = sorted({r["steps"] for r in rows if r["method"] in ABLATIONS}, reverse=True)
    complete = [b for b in budgets if {r["method"] for r in rows if r["steps"] == b} == set(ABLATION_ROWS)]
    lines = ["# Table 4 (MPI-Mamba ablation) as learning curves", "",
             f"Generated by `python experiments/learning_curves.py --assemble-only` from the results files beside "
             f"it: the rows of `experiments/table4.py` trained like Table 1's curves (same data, test set, preset "
             f"{settings['preset']}, batch {settings['batch']}, lr {settings['lr']}); the full row is mpi_mamba's "
             f"Table 1 curve. Largest budget with all four rows: {complete[0] if complete else 'none yet'}. Rows "
             "with the prior train two phases of that many steps, the others one. ± = sample std over seeds.", ""]
    for budget in budgets:
        at = sorted((r for r in rows if r["steps"] == budget), key=lambda r: ABLATION_ROWS.index(r["method"]))
        lines += [f"## {budget} steps per phase", "", *_table(at, names=labels), ""]
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, *ABLATIONS],
                   help="methods (default: all of Table 1); Table 4's rows are " + ", ".join(ABLATIONS)
                        + " beside mpi_mamba")
    p.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS), help="steps per phase")
    p.add_argument("--seeds", nargs="+", type=int, default=[101, 102, 103])
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", type=Path, default=common.REPO / "runs" / "experiments" / "curves")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--assemble-only", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    for name, default in SETTINGS.items():  # recorded in every results file; change them for a new study
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(default), default=default)
    args = p.parse_args(argv)
    from mpimamba.threads import configure_threads

    configure_threads(args.threads)
    if not args.assemble_only:
        if any(b < 1 for b in args.budgets):
            p.error("--budgets must be positive step counts")
        test_root = common.test_set(args.runs, common.AUTHORS, args.test_count, args.test_size)
        # the training-free rows first, then every network at the smallest budget, then the next budget...:
        # a stopped invocation leaves every curve measured up to the same budget
        plan = [(m, 0) for m in args.methods if m in TRAINING_FREE]
        plan += [(m, b) for b in sorted(args.budgets) for m in args.methods if m not in TRAINING_FREE]
        for method, steps in plan:
            for seed in args.seeds:
                measure(method, seed, steps, args, test_root)
    assemble(args.results, _fixed(args))


if __name__ == "__main__":
    common.run_script(main)
