"""Selective-scan speed and memory, all measured in one run (issue 6 targets in brackets):

- forward and forward+backward time of the `cpu`, `chunked` and `reference` (autograd) backends and of
  mambapy's pure-PyTorch parallel scan (`MambaBlock.selective_scan`, Blelloch pscan), at B = 2, D = 96,
  N = 16 and L in {1024, 4096, 16384}; the reference's Python loop is timed at L <= 4096 only (at 16384 it
  takes tens of seconds and ~1 GB for its autograd graph). Targets at L = 4096: cpu forward >= 10x and
  forward+backward >= 5x faster than reference, cpu >= 10x mambapy, chunked not slower than mambapy;
- peak memory each allocates beyond its inputs and output (and, for forward+backward, the input
  gradients), [chunked at 16384 <= 2x chunked at 4096]. Method: each measurement runs in a fresh
  subprocess, which builds the inputs, warms up on a short sequence (numba compilation, thread pools), resets
  the kernel's peak-RSS mark (`echo 5 > /proc/self/clear_refs`, Linux), runs once and reports
  VmHWM − RSS before the run − the output (and gradient) bytes, with MALLOC_MMAP_THRESHOLD_=65536 so freed
  blocks leave RSS. This counts every allocation — torch's, numba's and numpy's — not only torch's
  allocator; figures of a few MB are at the noise floor of RSS;
- the full MPI-Mamba `small` model's forward time at 64×64 and 256×256 (`model_forward_times`).

    python benchmarks/scan.py [--repeats 3] [--lengths 1024 4096 16384] [--no-memory]

Threads: `--threads` (default 1) for torch and the cpu kernel alike, set once (mpimamba.threads).
mambapy is a benchmark-only extra (`pip install -c constraints.txt mambapy`); without it its column is skipped.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch

from _timing import best_of
from mpimamba.models.ssm import selective_scan
from mpimamba.threads import configure_threads

BATCH, CHANNELS, STATE = 2, 96, 16
REFERENCE_MAX_L = 4096
METHODS = ("cpu", "chunked", "reference", "mambapy")


def make_inputs(length: int, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """Mamba-like inputs: Δ through softplus with a bias, A < 0, D and z gate included."""
    g = torch.Generator().manual_seed(0)
    t = dict(
        u=torch.randn(BATCH, CHANNELS, length, generator=g),
        delta=torch.randn(BATCH, CHANNELS, length, generator=g) * 0.5,
        A=-torch.rand(CHANNELS, STATE, generator=g) - 0.5,
        B=torch.randn(BATCH, STATE, length, generator=g),
        C=torch.randn(BATCH, STATE, length, generator=g),
        D=torch.randn(CHANNELS, generator=g),
        z=torch.randn(BATCH, CHANNELS, length, generator=g),
        delta_bias=torch.randn(CHANNELS, generator=g) * 0.3,
    )
    return {k: v.requires_grad_(requires_grad) for k, v in t.items()}


def mambapy_scan():
    """mambapy's own selective scan (pscan inside), adapted to mamba_ssm's shapes; None if not installed."""
    try:
        from mambapy.mamba import MambaBlock
    except ImportError:
        return None

    def scan(u, delta, A, B, C, D, z, delta_bias):
        delta = torch.nn.functional.softplus(delta + delta_bias[:, None])
        # MambaBlock.selective_scan does not touch `self`; it takes (B, L, D) and (B, L, N) tensors.
        y = MambaBlock.selective_scan(None, u.mT, delta.mT, A, B.mT, C.mT, D).mT  # (B, D, L)
        return y * torch.nn.functional.silu(z)

    return scan


def scan_fn(method: str):
    if method == "mambapy":
        return mambapy_scan()
    return lambda **t: selective_scan(**t, delta_softplus=True, backend=method)


def run_once(fn, length: int, backward: bool):
    t = make_inputs(length, requires_grad=backward)
    if not backward:
        return torch.no_grad()(lambda: fn(**t))

    def step():
        y = fn(**t)
        torch.autograd.grad(y.sum(), list(t.values()))

    return step


def rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory_here(method: str, length: int, backward: bool) -> float:
    """Peak MB allocated by one call beyond inputs, output (and input gradients), in this process."""
    fn = scan_fn(method)
    run_once(fn, 256, backward)()  # warm-up: compilation, thread pools, allocator
    t = make_inputs(length, requires_grad=backward)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = rss_bytes("VmRSS")
    with torch.set_grad_enabled(backward):
        y = fn(**t)
        grads = torch.autograd.grad(y.sum(), list(t.values())) if backward else ()
    peak = rss_bytes("VmHWM")
    kept = y.numel() * y.element_size() + sum(g.numel() * g.element_size() for g in grads)
    return (peak - before - kept) / 2**20


def measure_memory(method: str, length: int, backward: bool) -> float | None:
    """`measure_memory_here` in a fresh subprocess, so earlier runs' peaks and caches do not count."""
    cmd = [sys.executable, __file__, "--memory-probe", method, str(length), str(int(backward))]
    # A fixed mmap threshold makes glibc return every freed block over 64 kB to the OS; otherwise freed
    # memory stays in the heap and RSS measures all memory ever allocated instead of the live peak.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"  memory probe {method} L={length} failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return float(done.stdout.strip().splitlines()[-1])


def model_forward_times(repeats: int) -> None:
    """Forward time of the full MPI-Mamba `small` model (auto scan backend) at 64×64 and 256×256."""
    try:
        from mpimamba.models import build

        model = build("mpi_mamba", "small").eval()
    except Exception as err:  # noqa: BLE001 — the model is built by another part of the project
        print(f"MPI-Mamba small forward: could not run yet ({type(err).__name__}: {err})")
        return
    for size in (64, 256):
        x = torch.rand(1, 1, size, size)
        with torch.no_grad():
            model(x)  # warm-up
            t = best_of(repeats, lambda: model(x))
        print(f"MPI-Mamba small forward {size}x{size}: {t * 1e3:8.1f} ms")


def fmt(x: float | None, unit: str = "ms", scale: float = 1e3) -> str:
    return f"{'-':>9}" if x is None else f"{x * scale:9.1f}{unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--no-memory", action="store_true", help="skip the (slow) memory subprocesses")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for every backend (default 1)")
    parser.add_argument("--memory-probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        method, length, backward = args.memory_probe
        print(measure_memory_here(method, int(length), bool(int(backward))))
        return

    import numba

    configure_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, {numba.get_num_threads()} numba "
          f"threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"B={BATCH}, D={CHANNELS}, N={STATE}; softplus(Δ + bias), D and z included; times are best of "
          f"{args.repeats}")
    methods = [m for m in METHODS if scan_fn(m) is not None]
    if "mambapy" not in methods:
        print("mambapy not installed (pip install -c constraints.txt mambapy): its column is skipped")
    res: dict[tuple[str, int, str], float | None] = {}
    for length in args.lengths:
        for method in methods:
            if method == "reference" and length > REFERENCE_MAX_L:
                continue
            fn = scan_fn(method)
            run_once(fn, 256, True)()  # warm-up (numba compiles or loads its cache here)
            res[method, length, "fwd"] = best_of(args.repeats, run_once(fn, length, False))
            res[method, length, "fwd+bwd"] = best_of(max(1, args.repeats - 1), run_once(fn, length, True))
            if not args.no_memory:
                res[method, length, "mem fwd"] = measure_memory(method, length, False)
                res[method, length, "mem fwd+bwd"] = measure_memory(method, length, True)
            print(f"L={length:6d} {method:10s} fwd {fmt(res[method, length, 'fwd'])}  "
                  f"fwd+bwd {fmt(res[method, length, 'fwd+bwd'])}  "
                  f"extra memory fwd {fmt(res.get((method, length, 'mem fwd')), ' MB', 1)}  "
                  f"fwd+bwd {fmt(res.get((method, length, 'mem fwd+bwd')), ' MB', 1)}", flush=True)

    print("\nRatios (same run):")

    def ratio(num, den, what):
        a, b = res.get(num), res.get(den)
        return f"{a / b:6.1f}x" if a and b else "   n/a"

    for length in args.lengths:
        for kind in ("fwd", "fwd+bwd"):
            print(f"L={length:6d} {kind:8s} cpu vs reference {ratio(('reference', length, kind), ('cpu', length, kind), kind)}"
                  f"  cpu vs mambapy {ratio(('mambapy', length, kind), ('cpu', length, kind), kind)}"
                  f"  chunked vs mambapy {ratio(('mambapy', length, kind), ('chunked', length, kind), kind)}"
                  "   (> 1: faster)")
    targets = "[cpu fwd >= 10x, fwd+bwd >= 5x reference; cpu >= 10x mambapy; chunked >= 1x mambapy]"
    print(f"targets at L=4096 {targets}")
    if not args.no_memory and 4096 in args.lengths and 16384 in args.lengths:
        for kind in ("mem fwd", "mem fwd+bwd"):
            print(f"chunked {kind} L=16384 / L=4096: {ratio(('chunked', 16384, kind), ('chunked', 4096, kind), kind)}"
                  "  [fwd <= 2x]")
    print()
    model_forward_times(args.repeats)


if __name__ == "__main__":
    main()
