"""The quantitative and resolution metrics on constructed cases whose answers are known."""

import numpy as np
import pytest

from mpimamba.eval import quantitative as q
from mpimamba.eval import resolution as res
from mpimamba.physics.langevin import MU0, Particle


def _disc(size=64, radius=20, level=1.0):
    z, x = np.mgrid[:size, :size] - size // 2
    return np.where(z**2 + x**2 <= radius**2, level, 0.0)


def test_mass_ratio_and_negative_fraction():
    gt = _disc()
    assert q.mass_ratio(0.5 * gt, gt) == pytest.approx(0.5)
    assert np.isnan(q.mass_ratio(gt, 0 * gt))
    out = gt.copy()
    out[:8, :8] = -0.1  # 64 of 4096 pixels
    assert q.negative_fraction(out) == pytest.approx(64 / 4096)


def test_input_units_mass_ratio_ignores_the_outputs_peak_and_sees_missing_tracer():
    """Both images divided by their maximum: an output right in shape but with its hottest spot too low
    has the wrong plain mass ratio and the right one in the input's units; tracer left out is seen."""
    import torch

    from mpimamba.physics.psf import PSFForward
    from mpimamba.refine import ScanGeometry

    geometry = ScanGeometry("x", 8.0, 0.3)
    gt = _disc(radius=12, level=0.2)
    gt[30:34, 30:34] = 1.0  # a small hot spot on a faint disc
    scale = 0.7  # the target in the input's units
    lq = scale * PSFForward(gt.shape, "x", 0.3, 8.0)(torch.from_numpy(gt)).numpy() + 0.02  # + an offset
    assert q.input_units_mass_ratio(gt, gt, lq, geometry, scale) == pytest.approx(1.0, abs=1e-4)
    low_peak = np.minimum(gt, 0.5) / 0.5  # hot spot underestimated, then divided by its maximum again
    assert q.mass_ratio(low_peak, gt) > 1.5
    assert q.input_units_mass_ratio(low_peak, gt, lq, geometry, scale) == pytest.approx(1.0, abs=0.05)
    assert q.input_units_mass_ratio(3.0 * gt, gt, lq, geometry, scale) == pytest.approx(1.0, abs=1e-4)
    half = gt.copy()
    half[:, 32:] = 0  # half the disc missing
    assert q.input_units_mass_ratio(half, gt, lq, geometry, scale) < 0.8
    assert np.isnan(q.input_units_mass_ratio(gt, 0 * gt, lq, geometry, scale))


def test_interior_fill_tells_a_filled_disc_from_its_outline():
    gt = _disc(radius=20)
    outline = gt - _disc(radius=15)  # a ring 5 px wide: what a hollow restoration looks like
    assert q.interior_fill(gt, gt) == pytest.approx(1.0)
    assert q.interior_fill(0.8 * gt, gt) == pytest.approx(0.8)
    assert q.interior_fill(outline, gt) < 0.35  # the eroded interior is mostly the empty centre
    assert np.isnan(q.interior_fill(gt, np.zeros_like(gt)))
    # the edge band is excluded: blurring the edges alone leaves the fill at 1
    from scipy.ndimage import gaussian_filter

    assert q.interior_fill(gaussian_filter(gt, 0.7), gt) == pytest.approx(1.0, abs=0.01)


def _dots(levels, size=96):
    gt = np.zeros((size, size))
    for i, level in enumerate(levels):
        gt += np.roll(_disc(size, 6, level), shift=(0, (i - len(levels) // 2) * 18), axis=(0, 1))
    return gt


def test_linearity_slope_intercept_and_r2():
    levels = [1.0, 0.5, 0.25, 0.125]
    gt = _dots(levels)
    lin = q.linearity(2.0 * gt + 0.1 * (gt > 0), gt)
    assert lin["linearity_slope"] == pytest.approx(2.0) and lin["linearity_intercept"] == pytest.approx(0.1)
    assert lin["linearity_r2"] == pytest.approx(1.0)
    true, _ = q.dot_means(gt, gt)
    assert sorted(true) == pytest.approx(sorted(levels))
    saturated = np.minimum(gt, 0.3)  # a restoration that clips the bright dots is not linear
    assert q.linearity(saturated, gt)["linearity_r2"] < 0.9
    assert np.isnan(q.linearity(gt, _dots([1.0, 0.5]))["linearity_r2"])  # two dots: no fit


def _gaussian_profile(n, centres, sigma):
    t = np.arange(n, dtype=np.float64)
    return sum(np.exp(-0.5 * ((t - c) / sigma) ** 2) for c in centres)


@pytest.mark.parametrize("sigma", [1.5, 3.0, 5.0])
def test_fwhm_of_a_gaussian(sigma):
    profile = _gaussian_profile(101, [50], sigma)
    assert res.fwhm(profile, spacing=0.25) == pytest.approx(2 * np.sqrt(2 * np.log(2)) * sigma * 0.25, rel=0.02)


def test_dip_criterion_on_two_gaussians():
    """Two unit Gaussians d apart: the midpoint is 2·exp(-d²/8σ²), the peaks ~1 + exp(-d²/2σ²); the
    pair is resolved exactly when midpoint <= (1 - 0.264)·peak."""
    sigma = 2.0

    def analytic(d):
        mid = 2 * np.exp(-d**2 / (8 * sigma**2))
        peak = 1 + np.exp(-d**2 / (2 * sigma**2))
        return mid <= (1 - res.RAYLEIGH_DIP) * peak

    for d in range(2, 14, 2):
        profile = _gaussian_profile(101, [50 - d // 2, 50 - d // 2 + d], sigma)
        assert res.pair_resolved(profile, 50 - d // 2, 50 - d // 2 + d) == analytic(d), d


def test_chart_of_the_unrestored_input_matches_the_closed_form_fwhm():
    """DESIGN §2: FWHM 4.16/(kG) along the drive axis, 9.47/(kG) across it (0.95 and 2.16 mm at 9 T/m)."""
    for gradient, spacing in ((9.0, 0.25), (6.0, 0.25), (9.0, 0.4)):
        chart = res.make_chart(res.ChartSetting(scan="x", gradient=gradient, spacing_mm=spacing))
        kg = Particle().k * gradient / MU0
        got = res.measure(chart.inputs, chart)
        assert got["fwhm_x_mm"] == pytest.approx(4.16 / kg * 1e3, abs=spacing)  # within one pixel
        assert got["fwhm_z_mm"] == pytest.approx(9.47 / kg * 1e3, abs=spacing)
        assert got["anisotropy_z_x"] > 1.8
        assert got["resolved_spacing_x_mm"] < got["resolved_spacing_z_mm"]
    target = res.measure(chart.targets, chart)
    assert target["fwhm_x_mm"] == target["fwhm_z_mm"] == pytest.approx(0.4)  # one pixel
    assert target["resolved_spacing_x_mm"] == pytest.approx(2 * 0.4)
    z_scan = res.make_chart(res.ChartSetting(scan="z"))
    assert res.measure(z_scan.inputs, z_scan)["anisotropy_z_x"] < 0.55  # the other axis is the sharp one
