"""Training-step and inference speed of all 8 methods, and the scan kernel against its previous version,
all measured side by side in one run (issue 10's targets in brackets):

- scan: SS2D's four-order selective scan at MPI-Mamba small's level-1 shape (batch 8, 4 orders × 32
  channels, N 16, 64×64 = L 4096), forward and forward+backward, as SS2D calls it: today's `ss2d_scan`
  (cpu kernel, orders by index) against the previous kernel (a pinned copy, `_previous_scan_kernel.py`)
  fed as the previous SS2D fed it (flipped and transposed copies of the four orders, softplus in
  PyTorch, the outputs merged back) [forward+backward >= 5x faster; backward <= 2x forward], and today's
  with its numba kernels forced in place of the C ones (models/ssm/native.py: what runs where those are
  not built);
- training step of every method and phase at the `small` preset: batch 8, 64×64, L1 loss, backward,
  gradient clipping, AdamW step [MPI-Mamba phase 1 <= 1.2x Restormer];
- inference of one (1, 1, S, S) image, S in 64, 256, 512, eval mode under torch.inference_mode
  [MPI-Mamba small at 256² no slower than Restormer small];
- contention: the MPI-Mamba phase-1 step at 2 threads while one other CPU-bound process runs, against
  the same step idle [<= 2.5x].
Each at 1 and at 2 threads (`--threads`), set once per setting with mpimamba.threads.configure_threads.
Times are medians of `--repeats` runs after one warm-up (the scans: 3 × `--repeats` rounds), each variant
of one table taking one run per round in turn, so that a slow spell of a shared machine slows all alike.

    python benchmarks/step.py [--threads 1 2] [--repeats 3] [--sizes 64 256 512] [--methods ...]
                              [--out docs/methods.md] [--no-contention]

It rewrites the speed section of `--out` (between its `step.py` markers) with the tables it prints.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import _previous_scan_kernel as previous
from _timing import load, machine, replace_block
from mpimamba.models import METHODS, build
from mpimamba.models.ssm import native, ss2d_scan, use_scan_backend
from mpimamba.threads import configure_threads

BATCH, PATCH = 8, 64
NORMS_NOTE = ("Norms: MPI-Mamba, SFM, NAFNet and DiffIR use LayerNorm with a bias, which runs through PyTorch's fused `layer_norm`; Restormer uses the bias-free variant its paper chose, which has no fused PyTorch op and runs as a variance reduction (the same code as before issue 10).")
SCAN_SHAPE = dict(batch=8, orders=4, channels=32, state=16, height=64, width=64)


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: compilation, allocator, lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_times_interleaved(fns: dict, repeats: int, desc: str) -> dict:
    """Median time of each of `fns`, taking one run of every function per round, so that a slow spell of a
    shared machine slows all of them alike rather than one method's whole measurement."""
    for fn in tqdm(fns.values(), desc=f"{desc}: warm-up", unit="job", leave=False):
        fn()
    times = {key: [] for key in fns}
    for _ in tqdm(range(repeats), desc=desc, unit="round", leave=False):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(v) for key, v in times.items()}


# ---------------------------------------------------------------- the scan


def scan_inputs(requires_grad: bool) -> dict[str, torch.Tensor]:
    """SS2D-like tensors in the layout SS2D now holds them: u (B, L, E); δ (B, L, K, E); B, C (B, L, K, N)."""
    s = SCAN_SHAPE
    g = torch.Generator().manual_seed(0)
    length = s["height"] * s["width"]
    t = dict(
        u=torch.randn(s["batch"], length, s["channels"], generator=g),
        delta=torch.randn(s["batch"], length, s["orders"], s["channels"], generator=g) * 0.5 - 3,
        A=-torch.arange(1.0, s["state"] + 1).repeat(s["orders"], s["channels"], 1),  # S4D-real init
        B=torch.randn(s["batch"], length, s["orders"], s["state"], generator=g),
        C=torch.randn(s["batch"], length, s["orders"], s["state"], generator=g),
        D=torch.ones(s["orders"], s["channels"]),
        delta_bias=torch.zeros(s["orders"], s["channels"]),
    )
    return {k: v.requires_grad_(requires_grad) for k, v in t.items()}


def scan_now(t: dict[str, torch.Tensor]) -> torch.Tensor:
    s = SCAN_SHAPE
    with use_scan_backend("cpu"):
        return ss2d_scan(**t, height=s["height"], width=s["width"])


def scan_previous(t: dict[str, torch.Tensor]) -> torch.Tensor:
    """The previous SS2D's path: (B, D, H, W) activations, four orders as copies, the old kernel, merge."""
    s = SCAN_SHAPE
    b, k, e, n, h, w = s["batch"], s["orders"], s["channels"], s["state"], s["height"], s["width"]
    x = t["u"].transpose(1, 2).reshape(b, e, h, w)
    rows, cols = x.flatten(2), x.transpose(2, 3).flatten(2)
    forward = torch.stack([rows, cols], dim=1)
    xs = torch.cat([forward, forward.flip(-1)], dim=1)  # (B, K, E, L)
    # the projections of the previous SS2D came out per order, (B, K, ·, L); the same numbers here
    delta = t["delta"].permute(0, 2, 3, 1).flatten(1, 2)  # (B, K·E, L)
    delta = F.softplus(delta + t["delta_bias"].flatten()[:, None])
    B, C = (m.permute(0, 2, 3, 1) for m in (t["B"], t["C"]))  # (B, K, N, L)
    y = previous.selective_scan_cpu(xs.flatten(1, 2), delta, t["A"].reshape(k * e, n), B, C,
                                    t["D"].flatten(), None)
    y = y.view(b, k, e, h * w)
    y = y[:, :2] + y[:, 2:].flip(-1)
    out = y[:, 0].unflatten(-1, (h, w)) + y[:, 1].unflatten(-1, (w, h)).transpose(2, 3)
    return out.flatten(2).transpose(1, 2)  # (B, L, E)


SCAN_ROUNDS = 3  # the scans take a tenth of a second: this many times --repeats rounds, interleaved


def time_scans(repeats: int) -> dict[str, float]:
    """Every scan variant forward (no grad) and forward+backward, interleaved round by round."""
    plain, grad = scan_inputs(False), scan_inputs(True)

    def forward(scan, native_kernels=True):
        def run():
            with native.use_native_kernels(native_kernels), torch.no_grad():
                scan(plain)
        return run

    def forward_backward(scan, native_kernels=True):
        def run():  # the backward inside the block too: it runs the kernel chosen when it runs
            with native.use_native_kernels(native_kernels):
                scan(grad).sum().backward()
        return run

    jobs = {"now_fwd": forward(scan_now), "now_fwdbwd": forward_backward(scan_now),
            "previous_fwd": forward(scan_previous), "previous_fwdbwd": forward_backward(scan_previous),
            "numba_fwd": forward(scan_now, False), "numba_fwdbwd": forward_backward(scan_now, False)}
    return median_times_interleaved(jobs, SCAN_ROUNDS * repeats, "scans")


# ---------------------------------------------------------------- whole networks


def training_step(method: str, phase: str):
    torch.manual_seed(0)
    model = build(method, "small").train()
    params = list(model.phase_parameters(phase))
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    lq, gt = torch.rand(BATCH, 1, PATCH, PATCH, generator=g), torch.rand(BATCH, 1, PATCH, PATCH, generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        model.training_loss(lq, gt, phase)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 0.01)
        opt.step()

    return step


def inference(method: str, size: int):
    torch.manual_seed(0)
    model = build(method, "small").eval()
    x = torch.rand(1, 1, size, size)

    def run():
        with torch.inference_mode():
            model(x)

    return run


def _spin(stop) -> None:
    """A CPU-bound process: pure Python arithmetic until told to stop."""
    value = 0
    while not stop.is_set():
        for i in range(100_000):
            value = (value + i * i) % 1_000_003


def contended_step(repeats: int) -> tuple[float, float]:
    """MPI-Mamba phase-1 step at the current thread count: idle, then beside one spinning process."""
    step = training_step("mpi_mamba", "phase1")
    idle = median_time(step, repeats)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    other = ctx.Process(target=_spin, args=(stop,), daemon=True)
    other.start()
    try:
        time.sleep(1.0)  # let it start spinning
        busy = median_time(step, repeats)
    finally:
        stop.set()
        other.join(timeout=10)
    return idle, busy


# ---------------------------------------------------------------- report


def render(scans, steps, infer, contention, args, host, loads) -> list[str]:
    threads = args.threads
    lines = [
        "## Speed: training steps, inference, the scan kernel",
        "",
        f"Produced by `python benchmarks/step.py{''.join(' ' + a for a in sys.argv[1:])}` — do not edit by hand. "
        f"Machine: {host}. Load average at the start: {loads[0]}; at the end: {loads[1]}.",
        f"Medians of {args.repeats} runs after one warm-up (the scans: {SCAN_ROUNDS * args.repeats}), the variants "
        "of one table interleaved round by round; thread counts set once per column "
        "(`mpimamba.threads.configure_threads`).",
        NORMS_NOTE,
        "Training-free methods (wiener, richardson_lucy) have no training step; their inference time is at "
        "their default setting (Richardson–Lucy: 40 iterations; its time grows linearly with the iterations "
        "`train` chooses).",
        "",
        f"Training step, `small` preset, batch {BATCH}, {PATCH}×{PATCH} (forward, L1 loss, backward, "
        "gradient clipping, AdamW), seconds:",
        "",
        "| method | phase | " + " | ".join(f"{n} thread{'s' * (n > 1)}" for n in threads) + " |",
        "|---|---|" + "---:|" * len(threads),
    ]
    for (method, phase), row in steps.items():
        lines.append(f"| {method} | {phase} | " + " | ".join(f"{row[n]:.3f}" for n in threads) + " |")
    lines += ["", "One (1, 1, S, S) image in eval mode, milliseconds:", "",
              "| method | " + " | ".join(f"{s}² @ {n}t" for n in threads for s in args.sizes) + " |",
              "|---|" + "---:|" * (len(threads) * len(args.sizes))]
    for method, row in infer.items():
        lines.append(f"| {method} | " + " | ".join(f"{1e3 * row[(n, s)]:.0f}" for n in threads for s in args.sizes)
                     + " |")
    lines += ["", "Ratios (MPI-Mamba / Restormer; target in brackets):", ""]
    for n in threads:
        if ("mpi_mamba", "phase1") in steps and ("restormer", "main") in steps:
            r = steps[("mpi_mamba", "phase1")][n] / steps[("restormer", "main")][n]
            lines.append(f"- {n} thread(s): training step {r:.2f}x [<= 1.2x]")
        if "mpi_mamba" in infer and "restormer" in infer and 256 in args.sizes:
            r = infer["mpi_mamba"][(n, 256)] / infer["restormer"][(n, 256)]
            lines.append(f"- {n} thread(s): inference at 256² {r:.2f}x [<= 1.0x]")
    s = SCAN_SHAPE
    lines += ["", f"Scan at MPI-Mamba small's level 1 (batch {s['batch']}, {s['orders']} orders × {s['channels']} "
              f"channels, N {s['state']}, L {s['height'] * s['width']}), milliseconds:", "",
              "| threads | previous fwd | now fwd | previous fwd+bwd | now fwd+bwd | speed-up fwd+bwd [>= 5x] "
              "| now bwd / fwd [<= 2x] | numba fwd | numba fwd+bwd | numba bwd / fwd |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in scans.items():
        bwd_over_fwd = (r["now_fwdbwd"] - r["now_fwd"]) / r["now_fwd"]
        numba_over_fwd = (r["numba_fwdbwd"] - r["numba_fwd"]) / r["numba_fwd"]
        lines.append(f"| {n} | {1e3 * r['previous_fwd']:.0f} | {1e3 * r['now_fwd']:.0f} | "
                     f"{1e3 * r['previous_fwdbwd']:.0f} | {1e3 * r['now_fwdbwd']:.0f} | "
                     f"{r['previous_fwdbwd'] / r['now_fwdbwd']:.1f}x | {bwd_over_fwd:.2f}x | "
                     f"{1e3 * r['numba_fwd']:.0f} | {1e3 * r['numba_fwdbwd']:.0f} | {numba_over_fwd:.2f}x |")
    variant = native.library()
    lines += ["", "Kernels: " + (f"the C ones ({variant.variant} build of scan_kernels.c)" if variant else
                                 "numba (the C ones are not built here)") + "; the last three columns force "
              "the numba kernels, which run wherever the C ones are not built."]
    if contention:
        idle, busy = contention
        lines += ["", f"Contention: MPI-Mamba phase-1 step at 2 threads, idle {idle:.2f} s, beside one CPU-bound "
                  f"process {busy:.2f} s: {busy / idle:.2f}x [<= 2.5x]."]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 512])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--out", type=Path, default=Path("docs/methods.md"))
    p.add_argument("--no-contention", action="store_true")
    args = p.parse_args()
    if args.repeats < 1 or min(args.threads) < 1:
        p.error("--repeats and --threads must be at least 1")

    host, load_at_start = machine(), load()
    scans, steps, infer = {}, {}, {}
    for n in args.threads:
        configure_threads(n)
        scans[n] = time_scans(args.repeats)
        print(f"scan {n}t: " + ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in scans[n].items()), flush=True)
        jobs = {(m, ph): training_step(m, ph) for m in args.methods for ph in build(m, "small").phases}
        for key, t in median_times_interleaved(jobs, args.repeats, f"training steps, {n} thread(s)").items():
            steps.setdefault(key, {})[n] = t
            print(f"step {key[0]} {key[1]} {n}t: {t:.3f} s", flush=True)
        del jobs
        for size in args.sizes:
            jobs = {m: inference(m, size) for m in args.methods}
            for method, t in median_times_interleaved(jobs, args.repeats, f"inference {size}², {n} thread(s)").items():
                infer.setdefault(method, {})[(n, size)] = t
                print(f"infer {method} {size}² {n}t: {1e3 * t:.0f} ms", flush=True)
    contention = None
    if not args.no_contention and "mpi_mamba" in args.methods:
        configure_threads(2)
        contention = contended_step(args.repeats)
    lines = render(scans, steps, infer, contention, args, host, (load_at_start, load()))
    print("\n".join(lines))
    replace_block(args.out, "step.py", "\n".join(lines))
    print(f"wrote the speed section of {args.out}")


if __name__ == "__main__":
    main()
