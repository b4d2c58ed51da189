"""What the non-negative clamp of `mpimamba.infer.Restoration` costs: the shipped model on the 40 demo pairs
(8 per category), PSNR with and without the clamp, and how many pixels the network makes negative.

    python experiments/clamp_cost.py        # ~1 minute on a 2-core CPU; prints, writes nothing
"""

import numpy as np
from mpimamba.threads import configure_threads
configure_threads()
from mpimamba.demo import demo_pairs
from mpimamba.infer import Restoration, default_model_path
from mpimamba.models import load_model
from mpimamba.eval.metrics import scores
model = load_model(default_model_path())
raw_r, clamp_r = Restoration(model, nonnegative=False), Restoration(model)
res = {"raw": [], "clamped": [], "neg_frac": [], "neg_min": []}
for cat, i, lq, gt in demo_pairs(per_category=8):
    raw = raw_r(lq); cl = clamp_r(lq)
    res["raw"].append(float(scores(raw, gt)["psnr"])); res["clamped"].append(float(scores(cl, gt)["psnr"]))
    res["neg_frac"].append(float((raw < 0).mean())); res["neg_min"].append(float(raw.min() / raw.max()))
print(len(res["raw"]), "pairs")
print("PSNR raw %.2f clamped %.2f (gain %.3f dB, min gain %.3f)" % (np.mean(res["raw"]), np.mean(res["clamped"]), np.mean(np.array(res["clamped"]) - res["raw"]), np.min(np.array(res["clamped"]) - res["raw"])))
print("negative pixels before the clamp: mean %.1f %%, max %.1f %%; most negative %.3f of the peak" % (100*np.mean(res["neg_frac"]), 100*np.max(res["neg_frac"]), np.min(res["neg_min"])))
