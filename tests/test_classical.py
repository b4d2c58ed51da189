"""Training-free deconvolution (Wiener, Richardson–Lucy) with the full-field x-space PSF."""

import json

import numpy as np
import pytest
import torch

from mpimamba.cli import main
from mpimamba.data.io import read_image, write_image
from mpimamba.eval.metrics import psnr
from mpimamba.models import build, load_model
from mpimamba.physics.psf import PSFForward


def _pair(size=32, drive="x", gradient=9.0, spacing=0.25):
    """A disc and a bar, blurred by the PSF model of the scan, max-normalised like the simulator's pairs."""
    zz, xx = np.mgrid[0:size, 0:size]
    gt = ((zz - 12) ** 2 + (xx - 11) ** 2 < 16).astype(np.float32)
    gt[20:24, 8:26] = 1.0
    lq = PSFForward((size, size), drive, spacing, gradient)(torch.from_numpy(gt)).numpy()
    lq = lq / lq.max()
    return torch.from_numpy(lq)[None], torch.from_numpy(gt)[None]  # (1, H, W) each


@pytest.mark.parametrize("method, setting, value", [("wiener", "balance", 1e-4), ("richardson_lucy", "iterations", 200)])
def test_deconvolution_with_the_known_psf_sharpens(method, setting, value):
    lq, gt = _pair()
    model = build(method, "small", **{setting: value})
    out = model(lq[None])[0]
    assert out.shape == lq.shape and float(out.max()) == pytest.approx(1.0)
    assert float(psnr(out.clamp(min=0), gt)) > float(psnr(lq, gt)) + 4  # well beyond the blurred input
    if method == "richardson_lucy":
        assert float(out.min()) >= 0  # its iterates never go negative


def test_richardson_lucy_improves_with_iterations_on_noise_free_data():
    lq, gt = _pair()
    scores = [float(psnr(build("richardson_lucy", "small", iterations=n)(lq[None])[0], gt)) for n in (5, 20, 80)]
    assert scores[0] < scores[1] < scores[2]


def test_the_wrong_scan_axis_deconvolves_worse():
    lq, gt = _pair(drive="x")
    right = float(psnr(build("wiener", "small", drive="x", balance=1e-4)(lq[None])[0].clamp(min=0), gt))
    wrong = float(psnr(build("wiener", "small", drive="z", balance=1e-4)(lq[None])[0].clamp(min=0), gt))
    assert right > wrong + 1


def test_fit_picks_the_best_setting_on_validation_pairs_and_records_it():
    pairs = [_pair()]
    model = build("wiener", "small")
    scores = model.fit(pairs)
    assert set(scores) == set(model.GRID)
    assert model.balance == max(scores, key=scores.get)
    assert model.build_config["overrides"] == {"balance": model.balance}
    with pytest.raises(ValueError, match="validation pairs"):
        model.fit([])


def test_train_writes_a_model_that_evaluate_and_calibrate_run(tmp_path):
    root = tmp_path / "data"
    lq, gt = _pair()
    for split in ("train", "val", "test"):
        write_image(root / split / "lq" / "a.tif", lq[0].numpy())
        write_image(root / split / "gt" / "a.tif", gt[0].numpy())
    run = tmp_path / "runs" / "rl"
    assert main(["train", "--method", "richardson_lucy", "--data", str(root), "--out", str(run),
                 "--device", "cpu", "--patch", "32", "--batch", "1"]) == 0
    fit = json.loads((run / "fit.json").read_text())
    assert fit["setting"] == "iterations" and fit["chosen"] in build("richardson_lucy").GRID
    assert load_model(run).iterations == fit["chosen"]
    assert main(["evaluate", str(run), "--data", str(root), "--out", str(tmp_path / "report"), "--device", "cpu",
                 "--no-figures"]) == 0
    assert main(["calibrate", str(root / "test" / "lq" / "a.tif"), "-o", str(tmp_path / "out.tif"),
                 "--model", str(run), "--device", "cpu"]) == 0
    assert read_image(tmp_path / "out.tif").min() >= 0


def test_a_deconvolution_is_fitted_only_on_the_scan_it_deconvolves(tmp_path, capsys):
    """The default protocol mixes scans, gradients and spacings: no single PSF to deconvolve; a protocol of
    one scan must match the method's own (or be matched with --override)."""
    from mpimamba.cli import main

    base = ["train", "--method", "wiener", "--synthetic", "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert "mixes scans" in capsys.readouterr().err
    assert main([*base, "--protocol", "authors-psf", "--scan", "z", "--out", str(tmp_path / "b")]) == 2
    assert "--override drive=" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
