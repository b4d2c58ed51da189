import numpy as np
import pytest
import torch

from mpimamba.physics.psf import PSFForward
from mpimamba.physics.xspace import (XSpaceOperator, gridding_matrix, lissajous, pixel_centres, raster,
                                     simulate_loop)


def _ncc(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_lissajous_defaults():
    t = lissajous()
    assert t.position.shape == (9900, 2)
    assert np.abs(t.position).max() == pytest.approx(15e-3, rel=1e-3)
    # one full period: 100 x-cycles and 99 z-cycles, so the pattern closes on itself
    assert np.allclose(lissajous(samples=9901).position[-1], [0, 0], atol=1e-12)


def test_operator_equals_per_pixel_loop(rng):
    traj = lissajous(amplitude_mm=3.0, samples=2000)  # a small Lissajous covering a 10×12 grid at 0.5 mm
    phantom = (rng.random((10, 12)) * (rng.random((10, 12)) > 0.5)).astype(np.float32)
    op = XSpaceOperator(traj, (10, 12), 0.5, gradient=(9.0, 6.0))
    fast = op(phantom[None])[0]
    ref = simulate_loop(phantom, traj, 0.5, gradient=(9.0, 6.0))
    assert np.abs(fast - ref).max() / np.abs(ref).max() <= 1e-5


def test_linear_in_concentration(rng):
    op = XSpaceOperator(lissajous(amplitude_mm=3.0, samples=1500), (8, 8), 0.75)
    a, b = rng.random((2, 8, 8)).astype(np.float32)
    out = op(np.stack([a, b, 3 * a - 2 * b]), chunk=2)  # chunked across the batch
    np.testing.assert_allclose(out[2], 3 * out[0] - 2 * out[1], rtol=1e-4, atol=1e-4 * np.abs(out).max())


@pytest.mark.parametrize("drive", ["x", "z"])
def test_slow_raster_reproduces_psf_model(drive):
    """The x-space theorem: a slow Cartesian raster images c ⊛ h_drive."""
    s = 32
    phantom = np.zeros((s, s), np.float32)
    phantom[6:14, 5:10] = 1.0
    phantom[20:24, 12:28] = 0.5
    phantom[4, 25] = 1.0
    traj = raster(drive, (s * 0.25, s * 0.25), lines=2 * s, samples_per_line=2 * s)
    image = XSpaceOperator(traj, (s, s), 0.25)(phantom[None])[0]
    model = PSFForward((s, s), drive)(torch.from_numpy(phantom)).numpy()
    assert _ncc(image, model) >= 0.98
    # and the other drive direction does not fit as well (the test can tell x from z)
    other = PSFForward((s, s), "z" if drive == "x" else "x")(torch.from_numpy(phantom)).numpy()
    assert _ncc(image, other) < _ncc(image, model)


def test_gridding_matrix_interpolates_linear_functions_exactly():
    traj = lissajous(amplitude_mm=5.0, samples=3000)
    grid = gridding_matrix(traj.position, (12, 12), 0.6)  # grid inside the sampled square
    values = 2.0 * traj.position[:, 0] - 3.0 * traj.position[:, 1] + 1.0
    c = pixel_centres((12, 12), 0.6)
    np.testing.assert_allclose(grid @ values, 2.0 * c[:, 0] - 3.0 * c[:, 1] + 1.0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(grid.sum(1)).ravel(), 1.0)
