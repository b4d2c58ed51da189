"""Does a model restore the demo pairs better whole or in tiles of the size it was trained at?

    .venv/bin/python experiments/tile_size.py v5=src/mpimamba/weights/mpi_mamba_small.safetensors \
        p128=runs/default-model/polish3/model.safetensors [--tiles 0 64 96] [--per-category 8]

Each model restores the 40 demo pairs (128×128, `mpimamba.demo.demo_pairs` of the `multiscale` protocol, 8
per category) through `infer.Restoration` as `calibrate` does, once per tile side (0 = the whole image;
otherwise tiles overlapping by 3/4 of their side), and is scored as the demo scores: PSNR/SSIM means and
the mass ratio and interior fill per category. Why: the shipped model is trained on 64-px patches cut
from whole-canvas-normalised images but runs on whole 128-px images, and the two disagree (issue 11).
Writes experiments/results/tile-size.md (atomically; `--out` elsewhere) and prints it; ~2 min per model
and tile side on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import common
from mpimamba.demo import demo_pairs, metrics_table, score_pairs
from mpimamba.fileutil import write_text_atomic
from mpimamba.infer import Restoration
from mpimamba.models.checkpoint import load_model
from mpimamba.physics.phantoms import DEFAULT_CATEGORIES
from mpimamba.physics.protocols import PROTOCOLS
from mpimamba.threads import configure_threads

CATEGORIES = sorted(DEFAULT_CATEGORIES)  # the demo's categories, in its order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=common.labelled_model, help="NAME=PATH of each model (.safetensors)")
    parser.add_argument("--tiles", nargs="+", type=int, default=[0, 64, 96], help="tile sides; 0 = whole image")
    parser.add_argument("--per-category", type=int, default=8)
    parser.add_argument("--out", type=Path, default=common.REPO / "experiments" / "results" / "tile-size.md")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    configure_threads(args.threads)
    pairs = demo_pairs(per_category=args.per_category, protocol=PROTOCOLS["multiscale"])
    header = ("| model | tile | PSNR | SSIM | " + " | ".join(f"mass {c}" for c in CATEGORIES)
              + " | lowest fill |")
    lines = [f"Demo pairs ({len(pairs)}, 128×128), restored whole or in tiles overlapping by 3/4 of their side; "
             "mass ratio = sum of output / sum of target (target 0.9–1.1), fill = interior fill of the lowest "
             "category. `experiments/tile_size.py`.", "", header, "|" + "---|" * (header.count("|") - 1)]
    for name, path in args.models:
        model = load_model(path)
        for tile in args.tiles:
            restoration = Restoration(model, tile=tile or None, overlap=3 * tile // 4)
            _, mean = metrics_table(score_pairs(restoration, pairs)[0])
            masses = " | ".join(f"{mean[f'mass_ratio_{c}']:.3f}" for c in CATEGORIES)
            fill = min(v for c in CATEGORIES if math.isfinite(v := mean[f"interior_fill_{c}"]))  # some have none
            lines.append(f"| {name} | {tile or 'whole'} | {mean['psnr_out']:.2f} | {mean['ssim_out']:.3f} | "
                         f"{masses} | {fill:.3f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
