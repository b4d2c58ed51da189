"""What every table script shares: the options, the fixed test set, resumable training runs, evaluation,
and the results files with their provenance.

A table is a list of rows (a label and the TrainConfig settings that make it), each trained once per seed.
Run folders are OUT/<row>/seed<S>; a finished run (model.safetensors present) is reused, an interrupted
one (checkpoint.pt present) resumes, so a long table can be stopped and its command rerun. Reusing a run
trained with other settings is refused: pick another --out.

Test sets are written once per table under OUT/ with `write_dataset(seed=TEST_SEED)`. Training streams
draw from `np.random.default_rng([derive_seed(seed, phase, segment, rank), rank, worker])` and their
validation pairs from `derive_seed(seed, 2**31)`: three-word entropies, never the one-word TEST_SEED, so a
test pair is never a training pair. Training sets written to disk (Table 5) use TRAIN_SET_SEED.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mpimamba.data.paired import PairedFolder
from mpimamba.data.synthetic import write_dataset
from mpimamba.eval.evaluate import INPUT, METRICS, evaluate, score_cells
from mpimamba.eval.figures import save_grid
from mpimamba.fileutil import write_text_atomic
from mpimamba.infer import Restoration, resolve_device
from mpimamba.models.checkpoint import load_model
from mpimamba.physics.protocols import PROTOCOLS, Protocol
from mpimamba.train.config import TrainConfig
from mpimamba.train.loop import TrainingInterrupted, train

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "experiments" / "results"
TEST_SEED = 20_260_101  # write_dataset's generator for every test set
TRAIN_SET_SEED = 20_260_202  # write_dataset's generator for on-disk training sets
FIGURE_IMAGES = 4  # test images in a Figure-6-like grid

# The authors' simulation setting with the PSF model (paper §Experiments; DESIGN §2): isotropic gradient
# 9 T/m, drive along x, target = the phantom; plus measurement noise at an SNR of 30-40 dB per pair (the
# noise level is our choice: the paper adds noise without a number we could reuse).
AUTHORS = PROTOCOLS["authors-psf"]


@dataclass
class Row:
    """One table row: `key` names its run folders, `label` its table line; `settings` go into TrainConfig."""

    key: str
    label: str
    settings: dict


def labelled_model(text: str) -> tuple[str, Path]:
    """argparse type of a NAME=PATH argument naming a model file (scripts that compare several models)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH to a model file, got {text!r}")
    return name, Path(path)


def parser(doc: str, *, steps: int, batch: int, seeds: list[int], test_count: int) -> argparse.ArgumentParser:
    """The options every table has; `doc` (the script's docstring) is the --help text."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=("tiny", "small", "paper"), help="network size")
    p.add_argument("--steps", type=int, default=steps, help="optimiser steps in EACH training phase")
    p.add_argument("--batch", type=int, default=batch, help="training batch (the paper: 32)")
    p.add_argument("--lr", type=float, default=5e-4,
                   help="peak learning rate (the paper: 2e-4 over 100k steps; higher for short budgets)")
    p.add_argument("--seeds", type=int, nargs="+", default=seeds, help="training seeds (one run per row each)")
    p.add_argument("--test-count", type=int, default=test_count, help="simulated test images")
    p.add_argument("--test-size", type=int, default=64, help="side of the square test images, pixels")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--out", type=Path, default=None, help="run folders and test set (default runs/experiments/TABLE)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where TABLE.md / TABLE.csv go")
    p.add_argument("--overwrite", action="store_true", help="replace existing results files (runs are always reused)")
    return p


def simulated_set(root: Path, protocol: Protocol, count: int, size: int, seed: int) -> Path:
    """`write_dataset(root, count, ...)` unless ROOT already holds exactly that dataset; returns ROOT.

    A folder without a manifest is an interrupted write: redone. One made with other settings is refused.
    """
    manifest = root / "manifest.json"
    if manifest.is_file():
        made = json.loads(manifest.read_text())
        same = "size" in made and Protocol.from_dict(made["protocol"]).to_dict() == protocol.to_dict()
        if not same or (made["size"], made["seed"], made["counts"]["total"]) != (size, seed, count):
            raise ValueError(f"{root} was simulated with other settings; delete it or pick another --out")
        return root
    write_dataset(root, count, size, protocol, seed=seed, fmt="npy", overwrite=True)
    return root


def test_set(out: Path, protocol: Protocol, count: int, size: int) -> Path:
    """The fixed test set OUT/testset-<size>px-<count> (seed TEST_SEED), simulated once.

    write_dataset splits 8:1:1, so 10·count pairs are drawn and the `count` of the test split are used
    (the train/val splits are never read).
    """
    return simulated_set(out / f"testset-{size}px-{count}", protocol, 10 * count, size, TEST_SEED)


def training_set(out: Path, protocol: Protocol, count: int, size: int) -> Path:
    """A fixed on-disk training set OUT/trainset-<size>px-<count> (seed TRAIN_SET_SEED; train and val used)."""
    return simulated_set(out / f"trainset-{size}px-{count}", protocol, count, size, TRAIN_SET_SEED)


def run_script(main) -> None:
    """Run an experiment's `main`; Ctrl-C or SIGTERM during a training (the loop checkpoints and raises
    TrainingInterrupted) ends it with one line saying how to continue, not a traceback."""
    try:
        main()
    except TrainingInterrupted as stop:
        print(f"{stop}; rerun the same command to continue from there", file=sys.stderr)
        sys.exit(130)


def run_training(cfg: TrainConfig) -> Path:
    """Train `cfg` into cfg.out unless already done; resume an interrupted run; return the run folder.

    The wall time of the call that finishes a run is kept in RUN/experiment.json (time spent before an
    interruption is not counted).
    """
    run = Path(cfg.out)
    if (run / "model.safetensors").is_file():
        trained = TrainConfig.from_dict(json.loads((run / "model.json").read_text()).get("training", {}))
        changed = trained.differences(cfg)
        if changed:
            raise ValueError(f"{run} holds a model trained with other settings ({'; '.join(changed)}); "
                             "pick another --out or delete it")
        return run
    start = time.perf_counter()
    train(cfg, resume=(run / "checkpoint.pt").is_file(), overwrite=not (run / "checkpoint.pt").is_file())
    write_text_atomic(run / "experiment.json",
                      json.dumps({"wall_seconds": round(time.perf_counter() - start, 1)}) + "\n")
    return run


def train_rows(rows: list[Row], args, out: Path, **shared) -> dict[str, list[Path]]:
    """Train every row at every seed (rows outermost); returns row key -> run folders in seed order."""
    runs: dict[str, list[Path]] = {}
    for row in rows:
        for seed in args.seeds:
            settings = {"preset": args.preset, "steps": args.steps, "batch": args.batch, "lr": args.lr,
                        "device": args.device, **shared, **row.settings}
            cfg = TrainConfig(seed=seed, label=row.label, out=str(out / row.key / f"seed{seed}"),
                              ckpt_every=max(1, min(50, args.steps)), val_every=args.steps, val_images=2,
                              **settings)
            runs.setdefault(row.key, []).append(run_training(cfg))
    return runs


def evaluate_runs(runs: dict[str, list[Path]], data_root: Path, report: Path, device: str) -> list[dict]:
    """Score every run on the test split with `mpimamba.eval.evaluate`; rows = input, then one per label."""
    folders = [r for seeds in runs.values() for r in seeds]
    return evaluate(folders, data_root, "test", report, device=device, overwrite=True, figures=False)


def save_figure(runs: dict[str, Path], labels: dict[str, str], data_root: Path, path: Path,
                device: str) -> Path:
    """The paper's Figure 6: the first test images restored by one run per row, with error maps."""
    dataset = PairedFolder(data_root, "test")
    models = {key: Restoration(load_model(run), device=device) for key, run in runs.items()}
    rows = []
    for i in range(min(FIGURE_IMAGES, len(dataset))):
        lq, gt = dataset.read_pair(i)
        outputs = {labels[key]: restoration(lq) for key, restoration in models.items()}
        rows.append((dataset.names[i], lq, outputs, gt))
    return save_grid(path, rows, overwrite=True)


def git_revision() -> str:
    """HEAD of this checkout, and whether tracked files had uncommitted changes."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        rev = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return rev + (" (working tree had uncommitted changes)" if dirty else " (clean)")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(protocol: Protocol) -> str:
    """A protocol as it goes into the results files: its fields, exactly."""
    fields = {k: v for k, v in protocol.to_dict().items() if k != "name"}
    return f"protocol {protocol.name} " + json.dumps(fields)


def provenance(script: str, argv: list[str], args, extra_budget: dict, test_pairs: Protocol) -> dict[str, str]:
    """Command, revision, hardware and training budget, as (name, text) lines for the results files."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "command": shlex.join(["python", script, *argv]),
        "git revision": git_revision(),
        "hardware": f"{_cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with "
                    f"{torch.get_num_threads()} thread(s); GPU: {gpu}; training device: {resolve_device(args.device)}",
        "budget": f"preset {args.preset}; {args.steps} steps per phase; batch {args.batch}; lr {args.lr}; "
                  + "; ".join(f"{k} {v}" for k, v in extra_budget.items())
                  + f"; seeds {' '.join(map(str, args.seeds))}",
        "test set": f"{args.test_count} simulated images of {args.test_size}x{args.test_size}, "
                    f"write_dataset seed {TEST_SEED}, {describe(test_pairs)}",
    }


def wall_time(runs: dict[str, list[Path]], started: float) -> str:
    """This invocation's wall time, and the training time of every run (recorded when each finished)."""
    recorded = [json.loads((r / "experiment.json").read_text())["wall_seconds"]
                for seeds in runs.values() for r in seeds if (r / "experiment.json").is_file()]
    return (f"this invocation {time.perf_counter() - started:.0f} s; training, summed over the "
            f"{len(recorded)} runs that recorded it: {sum(recorded):.0f} s")


def check_results(name: str, results: Path, overwrite: bool, suffixes: tuple[str, ...] = (".md", ".csv")) -> None:
    """Refuse (before any training) to replace a table's results files unless asked to."""
    existing = [str(p) for p in (results / f"{name}{suffix}" for suffix in suffixes) if p.exists()]
    if existing and not overwrite:
        verb, them = ("exists", "it") if len(existing) == 1 else ("exist", "them")
        raise FileExistsError(f"{', '.join(existing)} {verb}; pass --overwrite to replace {them}")


def _seeds(row: dict) -> int | str:
    """Seeds behind a table row; none for the input row (the unrestored input has no training seed)."""
    return "" if row["method"] == INPUT else row["checkpoints"]


LOWER_IS_BETTER = {"nrmse", "fwhm_x_mm", "fwhm_z_mm"}
EXACT_AT_ONE = {"mass_ratio", "interior_fill"}  # amounts: 1 = the target's, above or below both worse


def better_first(metric: str):
    """A sort key that puts better values of `metric` first (the one place that knows each direction)."""
    if metric in EXACT_AT_ONE:
        return lambda v: abs(np.log(v))
    return (lambda v: v) if metric in LOWER_IS_BETTER else (lambda v: -v)


METRIC_NAMES = {"psnr": "PSNR", "ssim": "SSIM", "nrmse": "nRMSE"}


def ranking(table: list[dict], focus: str | None = None) -> str:
    """The trained rows ordered best first on each metric's mean, read off the table itself; with `focus`
    (a row label, as in the table's first column) also where that row stands, so a results file states
    its ranking without being read."""
    rows = [r for r in table if r["method"] != INPUT]
    if focus is not None and focus not in [r["method"] for r in rows]:
        raise ValueError(f"focus row {focus!r} is not in the table; its rows are {[r['method'] for r in rows]}")
    lines = ["Ranking by mean, best first (a `>` between rows whose means differ by less than their seed "
             "standard deviations is not a measured difference):"]
    places = []
    for m in METRICS:
        key = better_first(m)
        order = sorted(rows, key=lambda r: key(r[f"{m}_mean"]))
        lines.append(f"- {METRIC_NAMES[m]}: " + " > ".join(r["method"] for r in order))
        names = [r["method"] for r in order]
        if focus is not None:
            places.append(f"{names.index(focus) + 1} of {len(names)} on {METRIC_NAMES[m]}")
    if places:
        lines += ["", f"**{focus}** ranks " + ", ".join(places) + "."]
    return "\n".join(lines)


def write_results(name: str, title: str, table: list[dict], meta: dict[str, str], notes: str,
                  results: Path, focus: str | None = None) -> tuple[Path, Path]:
    """results/NAME.md (title, provenance, the table, its ranking, notes) and NAME.csv (provenance as
    # lines, then rows)."""
    lines = [f"# {title}", "", *(f"- **{k}**: `{v}`" if k == "command" else f"- **{k}**: {v}"
                                  for k, v in meta.items()), "",
             "| Row | PSNR (dB) ↑ | SSIM ↑ | nRMSE ↓ | seeds | images |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {score_cells(r)} "
              f"| {_seeds(r) or '—'} | {r['images']} |" for r in table]
    lines += ["", "Mean over test images; ± = sample standard deviation over seeds. Metrics: `mpimamba.eval.metrics` "
              "(\"ours\" convention: float images, nRMSE by the target's range). The input row scores "
              "the unrestored input.", "", ranking(table, focus), "", notes.strip(), ""]
    md, csv_path = results / f"{name}.md", results / f"{name}.csv"
    write_text_atomic(md, "\n".join(lines))

    buf = io.StringIO()
    for k, v in meta.items():
        buf.write(f"# {k}: {v}\n")
    columns = ["row", "seeds", "images", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std"))]
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in table:
        writer.writerow({"row": r["method"], "seeds": _seeds(r), "images": r["images"],
                         **{c: r[c] for c in columns[3:]}})
    write_text_atomic(csv_path, buf.getvalue())
    return md, csv_path


def runs_root(name: str, args) -> Path:
    """--out, or runs/experiments/NAME in the repository."""
    return args.out or REPO / "runs" / "experiments" / name


def run_table(name: str, title: str, rows: list[Row], args, argv: list[str], test_pairs: Protocol,
              train_settings: dict, budget: dict, notes: str,
              focus: str | None = None) -> tuple[dict[str, list[Path]], Path]:
    """The whole recipe of a table: test set, training (resumable), evaluation, results files.

    `train_settings` are TrainConfig fields shared by all rows; `budget` lists the table-specific
    budget items (patch, data) for the results header; `focus` names the row whose rank the results
    state. Returns the runs and the test-set root.
    """
    started = time.perf_counter()
    check_results(name, args.results, args.overwrite)
    out = runs_root(name, args)
    data_root = test_set(out, test_pairs, args.test_count, args.test_size)
    runs = train_rows(rows, args, out, **train_settings)
    table = evaluate_runs(runs, data_root, out / "report", args.device)
    meta = provenance(f"experiments/{name}.py", argv, args, budget, test_pairs)
    meta["wall time"] = wall_time(runs, started)
    md, _ = write_results(name, title, table, meta, notes, args.results, focus)
    print(f"wrote {md} and its .csv")
    return runs, data_root
