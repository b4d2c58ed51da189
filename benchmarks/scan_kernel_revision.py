"""The C scan kernel of the working tree against the one of an earlier git revision, side by side in one run.

Both versions of `src/mpimamba/models/ssm/scan_kernels.c` are compiled here with the flags setup.py uses
(the widest variant this CPU runs), loaded through ctypes, and run in turn on the same inputs through the
`cpu` backend (`mpimamba.models.ssm.native` with its library swapped per call). For each length it prints
whether the two give the same output and gradients bit for bit, and the time inside the kernels themselves
(forward with checkpoints, backward), best of `--repeats` after one warm-up, alternating the versions each
round so a slow spell of a shared machine slows both alike.

    python benchmarks/scan_kernel_revision.py [--against dfe962d] [--lengths 1024 4096 16384] [--repeats 5]
                                              [--ss2d] [--step] [--threads 1]

Shapes as benchmarks/scan.py (B 2, D 96, N 16, softplus(Δ + bias), D and z included); with `--ss2d`, SS2D's
four-order scan at MPI-Mamba small's level 1 as benchmarks/step.py times it (batch 8, 4 orders × 32
channels, 64×64). The default baseline, dfe962d, is the last revision with the backward's channel blocks
outside its segments. Needs gcc and git; x86-64 only (the kernels are built there only).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mpimamba.models.ssm import kernel_build, native
from mpimamba.threads import configure_threads
from scan import make_inputs, scan_fn

ROOT = Path(__file__).resolve().parents[1]


def build(source_text: str, variant: str, out: Path) -> native.Library:
    """One version of the kernel source compiled as setup.py does, loaded and typed as native.load does (without
    its ABI-version check: the baseline may predate it)."""
    march, width = kernel_build.VARIANTS[variant]
    src = out.with_suffix(".c")
    src.write_text(source_text)
    subprocess.run(["gcc", *kernel_build.compile_args(march), f"-DW={width}", "-shared", "-fPIC", "-o", str(out),
                    str(src)], check=True)
    return native.Library.wrapping(variant, native.declare_signatures(ctypes.CDLL(str(out))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", default="dfe962d", help="git revision whose scan_kernels.c is the baseline")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ss2d", action="store_true", help="SS2D's scan at MPI-Mamba small's level 1 instead")
    p.add_argument("--step", action="store_true", help="also MPI-Mamba small's training step, both phases")
    args = p.parse_args()
    configure_threads(args.threads)
    variants = native.runnable_variants()
    if not variants:
        sys.exit("no C scan kernel runs on this machine (x86-64 with AVX2, built by pip install -e .)")
    baseline = subprocess.run(["git", "show", f"{args.against}:{kernel_build.SOURCE}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        libs = {args.against: build(baseline, variants[0], Path(tmp) / "before.so"),
                "working tree": build((ROOT / kernel_build.SOURCE).read_text(), variants[0], Path(tmp) / "now.so")}
        in_use = {"lib": None}
        spent = {"forward": 0.0, "backward": 0.0}

        def timed(name, real):
            def call(*a):
                start = time.perf_counter()
                real(*a)
                spent[name] += time.perf_counter() - start
            return call

        native.library = lambda: in_use["lib"]
        native.forward, native.backward = timed("forward", native.forward), timed("backward", native.backward)
        if args.ss2d:
            from step import scan_inputs, scan_now

            cases = {"SS2D 64x64": (scan_inputs(requires_grad=True), lambda **t: scan_now(t))}
        else:
            cases = {f"L={n:6d}": (make_inputs(n, requires_grad=True), scan_fn("cpu")) for n in args.lengths}
        print(f"{variants[0]} kernels, {args.threads} thread(s); kernel time only, best of {args.repeats}")
        for case, (inputs, scan) in cases.items():
            best = {name: [float("inf")] * 2 for name in libs}
            results = {}
            for round_ in range(args.repeats + 1):  # round 0 warms up
                for name, lib in libs.items():
                    in_use["lib"] = lib
                    spent["forward"] = spent["backward"] = 0.0
                    y = scan(**inputs)
                    results[name] = (y, *torch.autograd.grad(y.sum(), list(inputs.values())))
                    if round_:
                        best[name] = [min(best[name][0], spent["forward"]), min(best[name][1], spent["backward"])]
            a, b = results.values()
            same = all(torch.equal(x, z) for x, z in zip(a, b))
            cells = [f"{name}: fwd {f * 1e3:7.1f} ms, bwd {bw * 1e3:7.1f} ms, bwd/fwd {bw / f:4.2f}"
                     for name, (f, bw) in best.items()]
            (_, old_bwd), (_, new_bwd) = best.values()
            print(f"{case} | {' | '.join(cells)} | backward {old_bwd / new_bwd:4.2f}x faster | "
                  f"identical output and gradients: {same}")
        if args.step:
            time_steps(libs, in_use, args.repeats)


def time_steps(libs: dict, in_use: dict, repeats: int) -> None:
    """MPI-Mamba small's training step with each kernel version, the versions taking turns each round."""
    from step import training_step

    for phase in ("phase1", "phase2"):
        steps = {name: training_step("mpi_mamba", phase) for name in libs}  # same seed: same model and batch
        times = {name: [] for name in libs}
        for round_ in range(repeats + 1):  # round 0 warms up
            for name, lib in libs.items():
                in_use["lib"] = lib
                start = time.perf_counter()
                steps[name]()
                if round_:
                    times[name].append(time.perf_counter() - start)
        (before, a), (now, b) = ((name, statistics.median(t)) for name, t in times.items())
        print(f"MPI-Mamba small {phase} step, batch 8, 64x64 | {before}: {a:.3f} s | {now}: {b:.3f} s | "
              f"{a / b:4.2f}x faster")


if __name__ == "__main__":
    main()
