"""Peak memory (max RSS) of `mpimamba evaluate` against `mpimamba calibrate` on one large image pair.

evaluate restores through the same tiled `infer.Restoration` as calibrate and then scores the result, so
its peak should stay within a small factor of calibrate's (issue 13: within 2x at 3000x3000). Each
command runs in a fresh subprocess on one thread and reports its own peak RSS; so does a third that only
scores the pair (metrics.scores), and a fourth that only imports the package (the floor under all three).

    python benchmarks/memory.py [--size 3000] [--model CKPT] [--no-figures]

Without --model the network is an untrained NAFNet tiny (seed 0): the restoration then costs little, which
makes the ratio the strictest test of what evaluate adds. Prints the peaks in MiB and the ratio.

Measured at 3000x3000 on one thread (x86-64 Linux, torch 2.13 CPU), NAFNet tiny, figures on:
    before (0b8372b: SSIM on float64 whole images through conv2d, full-size figures)
        import 363, calibrate 814, evaluate 5523, scores 5352 MiB: evaluate / calibrate = 6.79
    after (metrics in bands of rows, figures of subsampled images)
        import 363, calibrate 838, evaluate 853, scores 530 MiB: evaluate / calibrate = 1.02
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# run in each child: the command, then the process's own peak RSS (Linux reports ru_maxrss in KiB)
CHILD = r"""
import json, resource, sys
what, args = sys.argv[1], sys.argv[2:]
if what == "cli":
    from mpimamba.cli import main
    code = main(args)
elif what == "scores":  # on the same floor as the commands: the same modules loaded
    import mpimamba.cli, mpimamba.eval.evaluate, mpimamba.calibrate  # noqa: F401
    from mpimamba.data.io import read_image
    from mpimamba.eval.metrics import scores
    lq, gt = read_image(args[0]), read_image(args[1])
    print(json.dumps({k: float(v) for k, v in scores(lq, gt).items()}), file=sys.stderr)
    code = 0
else:  # the floor: python, torch and the package
    import mpimamba.cli, mpimamba.eval.evaluate, mpimamba.calibrate  # noqa: F401
    code = 0
print(json.dumps({"code": code, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _peak(*args: str) -> float:
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        raise SystemExit(f"{' '.join(args[:2])} exited {result['code']}:\n{proc.stderr[-3000:]}")
    return result["peak_mib"]


def _pair(root: Path, size: int) -> tuple[Path, Path]:
    """A smooth phantom-like target in [0, 1] and a blurred, noisy input, as float32 TIFFs in root/test."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    from mpimamba.data.io import write_image

    rng = np.random.default_rng(0)
    gt = gaussian_filter(rng.random((size, size), dtype=np.float32), 8)
    gt = np.clip((gt - gt.min()) / (gt.max() - gt.min()), 0, 1).astype(np.float32)
    lq = gaussian_filter(gt, (0, 4)) + 0.01 * rng.standard_normal((size, size), dtype=np.float32)
    lq_path, gt_path = root / "test" / "lq" / "pair.tif", root / "test" / "gt" / "pair.tif"
    write_image(lq_path, lq.astype(np.float32))
    write_image(gt_path, gt)
    return lq_path, gt_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=3000, help="side of the square image pair (default 3000)")
    p.add_argument("--model", type=Path, default=None, help="checkpoint to restore with (default: NAFNet tiny)")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="evaluate without its PNG figures")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="mpimamba-memory-") as tmp:
        tmp = Path(tmp)
        lq, gt = _pair(tmp / "data", args.size)
        model = args.model
        if model is None:
            import torch

            from mpimamba.models import build, save_model

            torch.manual_seed(0)
            model = save_model(build("nafnet", "tiny"), tmp / "model" / "model")
        runtime = ["--device", "cpu", "--threads", "1"]
        floor = _peak("import")
        calibrate = _peak("cli", "calibrate", str(lq), "-o", str(tmp / "restored" / "pair.tif"), "--model",
                          str(model), *runtime)
        evaluate = _peak("cli", "evaluate", str(model), "--data", str(tmp / "data"), "--out", str(tmp / "report"),
                         *runtime, *([] if args.figures else ["--no-figures"]))
        metrics = _peak("scores", str(lq), str(gt))

    print(f"image pair {args.size}x{args.size}, model {args.model or 'nafnet tiny (untrained)'}, one thread; "
          f"peak RSS of each command in its own process:")
    print(f"  {'import only':<22}{floor:8.0f} MiB")
    print(f"  {'calibrate':<22}{calibrate:8.0f} MiB")
    label = "evaluate" if args.figures else "evaluate (no figures)"
    print(f"  {label:<22}{evaluate:8.0f} MiB")
    print(f"  {'scores (metrics)':<22}{metrics:8.0f} MiB")
    print(f"evaluate / calibrate = {evaluate / calibrate:.2f} (target: at most 2)")
    print(f"above the import floor: evaluate {evaluate - floor:.0f} MiB, calibrate {calibrate - floor:.0f} MiB, "
          f"scores {metrics - floor:.0f} MiB")


if __name__ == "__main__":
    main()
