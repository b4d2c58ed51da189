"""Every method and preset: parameters, MACs at 64×64, CPU forward time at 64×64 and 256×256 -> docs/methods.md.

All figures come from one run of this script on the machine named in the output; nothing is typed in.
    python benchmarks/methods.py [--out docs/methods.md] [--methods swinir,restormer] [--threads 1]

MACs = FLOPs / 2, FLOPs counted by torch.utils.flop_counter.FlopCounterMode on one forward pass of a
(1, 1, 64, 64) input. It counts matrix products, convolutions and attention, not element-wise work
(norms, activations, the selective-scan recurrence), so it is a lower bound, loosest for Mamba models.
Forward time: median wall time of `--repeats` forwards in eval mode under torch.inference_mode, after
one warm-up; 256×256 for the tiny and small presets only (the paper presets are far slower on a CPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from mpimamba.fileutil import write_text_atomic
from mpimamba.models import METHODS, build, count_parameters
from mpimamba.models.registry import PRESET_NAMES

REFERENCES = {
    "mpi_mamba": "MPI-Mamba (AAAI 2026) — this package",
    "aepnet": "Shang et al., Phys. Med. Biol. 68 045014 (2023)",
    "fds": "Shang et al., Phys. Med. Biol. 67 125012 (2022)",
    "sfm": "Shang et al., IEEE TCI 10:196 (2024)",
    "nafnet": "Chen et al., ECCV 2022",
    "restormer": "Zamir et al., CVPR 2022",
    "swinir": "Liang et al., ICCV Workshops 2021",
    "diffir": "Xia et al., ICCV 2023",
}
LARGE_PRESETS = ("tiny", "small")  # timed at 256×256 too


def count_macs(model: torch.nn.Module, size: int) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, size, size))
    return counter.get_total_flops() / 2


def time_forward(model: torch.nn.Module, size: int, repeats: int) -> float:
    """Median seconds of one forward of a (1, 1, size, size) input."""
    x = torch.rand(1, 1, size, size)
    times = []
    with torch.inference_mode():
        model(x)  # warm-up: lazy initialisation, compiled kernels, allocator
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(method: str, preset: str, repeats: int, threads: int) -> dict:
    # re-assert the thread count: a method's compiled kernels (numba's OpenMP layer) may have changed it
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(method, preset).eval()
    row = {"params": count_parameters(model), "macs": count_macs(model, 64), "ms64": 1e3 * time_forward(model, 64, repeats)}
    if preset in LARGE_PRESETS:
        row["ms256"] = 1e3 * time_forward(model, 256, repeats)
    return row


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:  # the model name is more telling than the architecture, where Linux exposes it
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with {torch.get_num_threads()} "
            f"thread(s), Python {platform.python_version()}, {platform.system()} {platform.release()}")


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def load() -> str:
    """The 1/5/15-minute load averages: CPU timings on a shared machine mean little without them."""
    try:
        return "load average " + " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def render(rows: dict, missing: dict, command: str, repeats: int, host: str, loads: tuple[str, str]) -> str:
    lines = [
        "# Methods: sizes and CPU speed",
        "",
        "MPI-Mamba and the seven methods it is compared with (issue 4), each at its three presets: `tiny` (tests),",
        "`small` (trains on a laptop CPU) and `paper` (the published configuration; each method's docstring",
        "gives its source). Built with `mpimamba.models.build(method, preset)`, one input channel.",
        "",
        f"Produced by `{command}` — do not edit by hand.",
        "",
        f"Machine: {host}. At the start: {loads[0]}; at the end: {loads[1]} (a load above the CPU",
        "count means other work shared the cores while this ran, and the times are inflated accordingly).",
        "",
        "- Parameters: all of the model's parameters (DiffIR and MPI-Mamba include their stage-1 / phase-1",
        "  prior encoders, which inference does not run).",
        "- MACs at 64×64 = FLOPs / 2, FLOPs from `torch.utils.flop_counter.FlopCounterMode` on one forward",
        "  pass of a (1, 1, 64, 64) input. It counts matrix products, convolutions and attention, not",
        "  element-wise work (norms, activations, the selective-scan recurrence): a lower bound, loosest for",
        "  the Mamba-based model.",
        f"- Forward time: median of {repeats} forward passes of one (1, 1, H, W) image in eval mode under",
        "  `torch.inference_mode`, after one warm-up. 256×256 only for `tiny` and `small`.",
        "",
        "| method | reference | preset | parameters | GMACs @ 64² | CPU ms @ 64² | CPU ms @ 256² |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for (method, preset), r in rows.items():
        ms256 = f"{r['ms256']:.1f}" if "ms256" in r else "—"
        lines.append(f"| {method} | {REFERENCES.get(method, '')} | {preset} | {fmt_params(r['params'])} | "
                     f"{r['macs'] / 1e9:.3f} | {r['ms64']:.1f} | {ms256} |")
    if missing:
        lines += ["", "Not measured (not importable when this ran):", ""]
        lines += [f"- `{m}`: {err}" for m, err in missing.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/methods.md", help="Markdown file to write (default: docs/methods.md)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names (default: all)")
    p.add_argument("--presets", default=",".join(PRESET_NAMES), help="comma-separated presets (default: all)")
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per size (default: 5)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    args = p.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    unknown = [m for m in methods if m not in METHODS] + [s for s in presets if s not in PRESET_NAMES]
    if unknown:
        p.error(f"unknown method or preset {unknown}; methods: {', '.join(METHODS)}; presets: {', '.join(PRESET_NAMES)}")
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be at least 1")
    torch.set_num_threads(args.threads)

    rows, missing = {}, {}
    host, load_at_start = machine(), load()  # before any model: the thread count as configured
    for method, preset in tqdm([(m, s) for m in methods for s in presets], desc="methods", unit="model"):
        if method in missing:
            continue
        try:
            rows[(method, preset)] = measure(method, preset, args.repeats, args.threads)
        except ImportError as err:  # a method whose module is not written yet
            missing[method] = f"{type(err).__name__}: {err}"
            continue
        r = rows[(method, preset)]
        tqdm.write(f"{method:10s} {preset:6s} {fmt_params(r['params']):>9s} {r['macs'] / 1e9:8.3f} GMACs "
                   f"{r['ms64']:9.1f} ms@64 " + (f"{r['ms256']:9.1f} ms@256" if "ms256" in r else ""))

    command = "python benchmarks/methods.py" + "".join(f" {a}" for a in sys.argv[1:])
    write_text_atomic(args.out, render(rows, missing, command, args.repeats, host, (load_at_start, load())))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
