import numpy as np
import pytest
import torch

from mpimamba.physics.langevin import MU0, Particle
from mpimamba.physics.psf import PSFForward, psf, psf_kernel


def _fwhm(profile_fn, half_width_mm=5.0, n=200_001):
    """FWHM in mm of a 1-D profile measured on a fine grid, crossings by linear interpolation."""
    r = np.linspace(0, half_width_mm, n)
    y = profile_fn(r)
    half = y[0] / 2
    i = np.flatnonzero(y < half)[0]
    r_half = r[i - 1] + (half - y[i - 1]) * (r[i] - r[i - 1]) / (y[i] - y[i - 1])
    return 2 * r_half


@pytest.mark.parametrize("gradient", [9.0, 4.0])
def test_fwhm_matches_closed_forms(gradient):
    kg = Particle().k * gradient / MU0  # 1/m
    normal = _fwhm(lambda r: psf(0 * r, r, "x", gradient))  # along the drive axis
    tangential = _fwhm(lambda r: psf(r, 0 * r, "x", gradient))  # across it
    assert normal == pytest.approx(4.16 / kg * 1e3, rel=0.02)
    assert tangential == pytest.approx(9.47 / kg * 1e3, rel=0.02)
    if gradient == 9.0:
        assert normal == pytest.approx(0.95, rel=0.02) and tangential == pytest.approx(2.16, rel=0.02)
    # the z-drive is the same PSF turned by 90°
    assert _fwhm(lambda r: psf(r, 0 * r, "z", gradient)) == pytest.approx(normal, rel=1e-9)


def test_kernel_anisotropy_and_per_axis_gradient():
    kx = psf_kernel((33, 33), "x", 0.25)
    kz = psf_kernel((33, 33), "z", 0.25)
    c = 32  # centre of the (65, 65) kernel
    assert kx[c, c] == pytest.approx(1.0) and kz[c, c] == pytest.approx(1.0)
    # x-drive: sharper along x (columns) than along z (rows); z-drive the reverse
    assert kx[c, c + 4] < 0.5 * kx[c + 4, c]
    assert kz[c + 4, c] < 0.5 * kz[c, c + 4]
    np.testing.assert_allclose(kx, kz.T, rtol=1e-12)
    # doubling the gradient along z only = halving the z spacing
    np.testing.assert_allclose(psf_kernel((9, 9), "x", 0.25, (18.0, 9.0)), psf_kernel((9, 9), "x", (0.5, 0.25)))
    with pytest.raises(ValueError, match="drive"):
        psf_kernel((9, 9), "y")
    with pytest.raises(ValueError, match="gradient"):
        psf_kernel((9, 9), "x", gradient=-1)


def test_fft_forward_equals_direct_zero_padded_convolution(rng):
    h, w = 12, 17
    c = rng.random((2, h, w))
    kernel = psf_kernel((h, w), "z", (0.3, 0.2), (6.0, 9.0))
    direct = np.zeros_like(c)
    for i in range(h):  # y[i, j] = Σ c[i', j'] k[i − i', j − j'], particles outside the FOV absent
        for j in range(w):
            direct[:, i, j] = np.einsum("bij,ij->b", c, kernel[i:i + h, j:j + w][::-1, ::-1])
    model = PSFForward((h, w), "z", (0.3, 0.2), (6.0, 9.0))
    out = model(torch.tensor(c, dtype=torch.float32))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), direct, rtol=1e-4, atol=1e-4 * direct.max())


def test_forward_is_differentiable_and_linear():
    model = PSFForward((16, 16), "x")
    c = torch.rand(3, 1, 16, 16, requires_grad=True)
    y = model(c)
    assert y.shape == c.shape
    torch.testing.assert_close(model(2 * c.detach()), 2 * y.detach(), rtol=1e-5, atol=1e-4)
    # adjoint check: the gradient of <y, g> is the correlation of g with the (symmetric) kernel
    g = torch.rand_like(y)
    (y * g).sum().backward()
    torch.testing.assert_close(c.grad, model(g), rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="built for images"):
        model(torch.rand(1, 8, 8))
