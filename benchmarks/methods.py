"""Every method and preset: parameters and MACs at 64×64 -> the sizes section of docs/methods.md.

    python benchmarks/methods.py [--out docs/methods.md] [--methods swinir,restormer]

MACs = FLOPs / 2, FLOPs counted by torch.utils.flop_counter.FlopCounterMode on one forward pass of a
(1, 1, 64, 64) input. It counts matrix products, convolutions and attention, not element-wise work
(norms, activations, the selective-scan recurrence), so it is a lower bound, loosest for Mamba models.
Speed (training steps and inference at 1 and 2 threads) is benchmarks/step.py's section of the same file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from _timing import machine, replace_block
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
    "wiener": "Wiener deconvolution, full-field x-space PSF (training-free)",
    "richardson_lucy": "Richardson (1972), Lucy (1974); full-field x-space PSF (training-free)",
}


def count_macs(model: torch.nn.Module, size: int) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, size, size))
    return counter.get_total_flops() / 2


def measure(method: str, preset: str) -> dict:
    torch.manual_seed(0)
    model = build(method, preset).eval()
    return {"params": count_parameters(model), "macs": count_macs(model, 64)}


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def render(rows: dict, missing: dict, command: str, host: str) -> str:
    lines = [
        "# Methods: sizes and CPU speed",
        "",
        "MPI-Mamba and the seven methods it is compared with (issue 4), each at its three presets: `tiny` (tests),",
        "`small` (trains on a laptop CPU) and `paper` (the published configuration; each method's docstring",
        "gives its source). Built with `mpimamba.models.build(method, preset)`, one input channel.",
        "",
        f"Produced by `{command}` — do not edit by hand. Machine: {host}.",
        "",
        "- Parameters: all of the model's parameters (DiffIR and MPI-Mamba include their stage-1 / phase-1",
        "  prior encoders, which inference does not run).",
        "- MACs at 64×64 = FLOPs / 2, FLOPs from `torch.utils.flop_counter.FlopCounterMode` on one forward",
        "  pass of a (1, 1, 64, 64) input. It counts matrix products, convolutions and attention, not",
        "  element-wise work (norms, activations, the selective-scan recurrence): a lower bound, loosest for",
        "  the Mamba-based model.",
        "",
        "| method | reference | preset | parameters | GMACs @ 64² |",
        "|---|---|---|---:|---:|",
    ]
    for (method, preset), r in rows.items():
        lines.append(f"| {method} | {REFERENCES.get(method, '')} | {preset} | {fmt_params(r['params'])} | "
                     f"{r['macs'] / 1e9:.3f} |")
    if missing:
        lines += ["", "Not measured (not importable when this ran):", ""]
        lines += [f"- `{m}`: {err}" for m, err in missing.items()]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/methods.md"),
                   help="Markdown file whose sizes section to rewrite (default: docs/methods.md)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names (default: all)")
    p.add_argument("--presets", default=",".join(PRESET_NAMES), help="comma-separated presets (default: all)")
    args = p.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    unknown = [m for m in methods if m not in METHODS] + [s for s in presets if s not in PRESET_NAMES]
    if unknown:
        p.error(f"unknown method or preset {unknown}; methods: {', '.join(METHODS)}; presets: {', '.join(PRESET_NAMES)}")

    rows, missing = {}, {}
    for method, preset in tqdm([(m, s) for m in methods for s in presets], desc="methods", unit="model"):
        if method in missing:
            continue
        try:
            rows[(method, preset)] = measure(method, preset)
        except ImportError as err:  # a method whose module is not written yet
            missing[method] = f"{type(err).__name__}: {err}"
            continue
        r = rows[(method, preset)]
        tqdm.write(f"{method:10s} {preset:6s} {fmt_params(r['params']):>9s} {r['macs'] / 1e9:8.3f} GMACs")

    command = "python benchmarks/methods.py" + "".join(f" {a}" for a in sys.argv[1:])
    replace_block(args.out, "methods.py", render(rows, missing, command, machine()))
    print(f"wrote the sizes section of {args.out}")


if __name__ == "__main__":
    main()
