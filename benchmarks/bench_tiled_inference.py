"""Tiled vs whole-image inference: wall time and peak memory (max RSS) on one large image.

Each mode runs in a fresh subprocess so its peak RSS is its own. Prints measured numbers and ratios.
    python benchmarks/bench_tiled_inference.py [--size 2048] [--method nafnet] [--preset tiny] [--tile 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from mpimamba.infer import restore
from mpimamba.models import build
size, method, preset, tile = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
torch.manual_seed(0)
model = build(method, preset).eval()
image = np.random.default_rng(0).random((size, size), dtype=np.float32)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
restore(model, image, tile=size if tile == "whole" else int(tile))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024, "extra_mib": (peak - base) / 1024}))
"""


def run(size: int, method: str, preset: str, tile: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(size), method, preset, tile],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--method", default="nafnet")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--tile", type=int, default=256)
    args = p.parse_args()
    whole = run(args.size, args.method, args.preset, "whole")
    tiled = run(args.size, args.method, args.preset, str(args.tile))
    threads = __import__("torch").get_num_threads()
    print(f"{args.method}/{args.preset} on a {args.size}x{args.size} image, CPU threads {threads}")
    for name, r in (("whole", whole), (f"tiles {args.tile}", tiled)):
        print(f"  {name:>10}: {r['seconds']:7.2f} s, peak RSS {r['peak_mib']:7.0f} MiB (+{r['extra_mib']:.0f} MiB during inference)")
    print(f"  tiled/whole: time x{tiled['seconds'] / whole['seconds']:.2f}, "
          f"extra memory x{tiled['extra_mib'] / max(whole['extra_mib'], 1e-9):.3f}")


if __name__ == "__main__":
    main()
