"""Physics-consistency refinement: closed-form fit, noise estimate, and the discrepancy stop."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from mpimamba.physics.pairs import PairConfig, make_pairs
from mpimamba.eval.metrics import psnr
from mpimamba.eval.quantitative import interior_fill, mass_ratio
from mpimamba.refine import Forward, ScanGeometry, best_fit, noise_sigma, refine, residual_rms, support_of

GEOMETRY = ScanGeometry("x", 9.0, 0.25)


def test_best_fit_recovers_scale_and_offset():
    ax = torch.rand(32, 32)
    s, b = best_fit(ax, 2.5 * ax + 0.1)
    assert s == pytest.approx(2.5, rel=1e-5) and b == pytest.approx(0.1, abs=1e-5)


def test_noise_sigma_of_gaussian_noise():
    rng = np.random.default_rng(0)
    assert noise_sigma(0.03 * rng.standard_normal((256, 256))) == pytest.approx(0.03, rel=0.05)


def test_forward_is_self_adjoint():
    """<A x, y> = <x, A y>: the gradient step uses A for its adjoint."""
    forward = Forward((24, 20), GEOMETRY)
    x, y = torch.rand(24, 20), torch.rand(24, 20)
    assert float((forward(x) * y).sum()) == pytest.approx(float((x * forward(y)).sum()), rel=1e-4)


def test_refine_reaches_the_noise_level_and_keeps_concentrations_non_negative():
    cfg = PairConfig(scan="x", gradient=9.0, snr_db=30.0, categories=("shape",))
    lq, gt = make_pairs(np.random.default_rng(2), cfg, 48, 1)
    y, phantom = lq[0], gt[0]
    interior = ndimage.binary_erosion(phantom > 0.1, iterations=2)
    hollow = np.where(interior, 0.0, phantom).astype(np.float32)  # outlines only: the failure of issue 11
    result = refine(hollow, y, GEOMETRY, iterations=2000)
    assert result.residual_before > 1.3 * result.noise_sigma
    assert result.residual_after <= result.noise_sigma * 1.0001 and result.iterations < 2000
    assert result.image.min() >= 0 and result.image.dtype == np.float32
    assert residual_rms(result.image, y, GEOMETRY) <= result.residual_after * (1 + 1e-5)  # (s, b) refitted: lower
    # the missing tracer comes partly back (the scale stays the outline's, so only partly)
    assert psnr(result.image, phantom) > psnr(hollow, phantom) + 0.5
    assert mass_ratio(result.image, phantom) > mass_ratio(hollow, phantom) + 0.05
    assert interior_fill(result.image, phantom, erode=1) > interior_fill(hollow, phantom, erode=1) + 0.05
    assert not result.image[support_of(hollow) == 0].any()  # nothing added outside the support
    # an output that already explains the input within the noise is returned unchanged
    truth = refine(phantom, y, GEOMETRY)
    if truth.residual_before <= truth.noise_sigma:
        assert truth.iterations == 0 and np.array_equal(truth.image, phantom)
    assert refine(hollow, y, GEOMETRY, iterations=0).iterations == 0


def test_refine_refuses_bad_arguments():
    with pytest.raises(ValueError, match="scan axis"):
        ScanGeometry("y", 9.0, 0.25)
    with pytest.raises(ValueError, match="gradient"):
        ScanGeometry("x", -1.0, 0.25)
    with pytest.raises(ValueError, match="one \\(H, W\\) shape"):
        refine(np.zeros((8, 8)), np.zeros((8, 9)), GEOMETRY)


def test_calibrate_physics_option(tmp_path, capsys):
    """calibrate --physics writes the refined image: its residual under the given scan is no larger than
    the plain restoration's; the scan flags are required together and refused without --physics."""
    from mpimamba.cli import main
    from mpimamba.data.io import read_image, write_image
    from mpimamba.models import build, save_model

    model = save_model(build("nafnet", "tiny"), tmp_path / "m")
    cfg = PairConfig(scan="x", gradient=9.0, snr_db=30.0, categories=("shape",))
    lq, _ = make_pairs(np.random.default_rng(4), cfg, 40, 1)
    write_image(tmp_path / "in" / "a.tif", lq[0])
    base = ["calibrate", str(tmp_path / "in"), "--model", str(model), "--device", "cpu"]
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    assert main([*base, "-o", str(tmp_path / "phys"), "--physics", "--scan-axis", "x", "--gradient", "9",
                 "--spacing", "0.25"]) == 0
    plain, refined = (read_image(tmp_path / d / "a.tif") for d in ("plain", "phys"))
    assert refined.min() >= 0 and not np.array_equal(plain, refined)
    assert residual_rms(refined, lq[0], GEOMETRY) <= residual_rms(plain, lq[0], GEOMETRY)
    assert main([*base, "-o", str(tmp_path / "x"), "--physics", "--scan-axis", "x"]) == 2
    assert "--gradient, --spacing" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "y"), "--gradient", "9"]) == 2
    assert "add --physics" in capsys.readouterr().err


def test_consistency_loss_is_zero_for_the_truth_and_grows_for_a_wrong_output():
    """On whole images (no tracer outside) the phantom explains its noise-free input exactly; a hollow
    output does not; a NaN geometry (Lissajous pair) contributes nothing; the gradient reaches the output."""
    from mpimamba.physics.protocols import Protocol
    from mpimamba.refine import consistency_loss

    protocol = Protocol(pairs=PairConfig(scan="random", gradient=(6.0, 12.0), spacing_mm=(0.2, 0.4),
                                         categories=("shape",)), canvas=None)
    lq, gt, geometry = protocol.patches(np.random.default_rng(5), 32, 4, geometry=True)
    lq, gt, geometry = (torch.from_numpy(a) for a in (lq, gt, geometry))
    lq, gt = lq[:, None], gt[:, None]
    truth = consistency_loss(gt, lq, geometry, margin=0)
    assert float(truth) < 1e-6
    interior = torch.from_numpy(np.stack([ndimage.binary_erosion(g > 0.1, iterations=2) for g in gt[:, 0].numpy()]))[:, None]
    hollow = torch.where(interior, torch.zeros_like(gt), gt).requires_grad_(True)
    wrong = consistency_loss(hollow, lq, geometry, margin=0)
    assert float(wrong.detach()) > 100 * float(truth) + 1e-3
    wrong.backward()
    assert hollow.grad.abs().sum() > 0
    # a pair without a single PSF contributes nothing: with all but pair 0 marked so, the loss is pair 0's
    # share of the batch mean
    alone = consistency_loss(hollow[:1].detach(), lq[:1], geometry[:1], margin=0)
    masked = geometry.clone()
    masked[1:, 1] = float("nan")
    assert float(consistency_loss(hollow.detach(), lq, masked, margin=0)) == pytest.approx(float(alone) / 4, rel=1e-5)
