"""What the non-negative clamp of `mpimamba.infer.Restoration` costs: the shipped model on the 40 demo pairs
(8 per category), PSNR with and without the clamp, and how many pixels the network makes negative.

    python experiments/clamp_cost.py        # ~1 minute on a 2-core CPU; prints, writes nothing
"""

from __future__ import annotations

import numpy as np

from mpimamba.demo import demo_pairs
from mpimamba.eval.metrics import scores
from mpimamba import pretrained
from mpimamba.infer import Restoration
from mpimamba.threads import configure_threads


def main() -> None:
    configure_threads()
    model = pretrained.load()
    unclamped, clamped = Restoration(model, nonnegative=False), Restoration(model)
    psnr_raw, psnr_clamped, negative_fraction, most_negative = [], [], [], []
    for _, _, lq, gt in demo_pairs(per_category=8):
        raw = unclamped(lq)
        psnr_raw.append(float(scores(raw, gt)["psnr"]))
        psnr_clamped.append(float(scores(clamped(lq), gt)["psnr"]))
        negative_fraction.append(float((raw < 0).mean()))
        most_negative.append(float(raw.min() / raw.max()))
    gain = np.array(psnr_clamped) - np.array(psnr_raw)
    print(len(psnr_raw), "pairs")
    print(f"PSNR raw {np.mean(psnr_raw):.2f} clamped {np.mean(psnr_clamped):.2f} "
          f"(gain {gain.mean():.3f} dB, min gain {gain.min():.3f})")
    print(f"negative pixels before the clamp: mean {100 * np.mean(negative_fraction):.1f} %, "
          f"max {100 * np.max(negative_fraction):.1f} %; most negative {np.min(most_negative):.3f} of the peak")


if __name__ == "__main__":
    main()
