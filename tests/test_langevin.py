import math

import numpy as np
import pytest
import torch

from mpimamba.physics.langevin import MU0, Particle, langevin, langevin_deriv, langevin_over_x


def test_known_values():
    # L(1) = coth 1 − 1 and L'(1) = 1 − 1/sinh²1, computed independently with math
    assert langevin(np.array(1.0)) == pytest.approx(1 / math.tanh(1) - 1, rel=1e-12)
    assert langevin_deriv(np.array(1.0)) == pytest.approx(1 - 1 / math.sinh(1) ** 2, rel=1e-12)
    assert langevin_over_x(np.array(2.0)) == pytest.approx((1 / math.tanh(2) - 0.5) / 2, rel=1e-12)
    np.testing.assert_allclose(langevin(np.array([0.0, -1.0])), [0.0, -(1 / math.tanh(1) - 1)], atol=1e-15)
    np.testing.assert_allclose(langevin_deriv(np.array([0.0])), [1 / 3])
    np.testing.assert_allclose(langevin_over_x(np.array([0.0])), [1 / 3])


def test_large_arguments_finite_and_asymptotic():
    x = np.array([50.0, 400.0, 1e6, -1e6])
    np.testing.assert_allclose(langevin(x), np.sign(x) * (1 - 1 / np.abs(x)), rtol=1e-12)
    np.testing.assert_allclose(langevin_deriv(x), 1 / x**2, rtol=1e-12)
    np.testing.assert_allclose(langevin_over_x(x), (1 - 1 / np.abs(x)) / np.abs(x), rtol=1e-12)


@pytest.mark.parametrize("f", [langevin, langevin_deriv, langevin_over_x])
def test_continuous_through_zero_numpy_and_torch(f):
    # straddle the series/closed-form switch and ξ = 0; the function must be smooth (small 2nd differences)
    x = np.linspace(-0.05, 0.05, 2001)
    y = f(x)
    assert np.all(np.isfinite(y))
    assert np.max(np.abs(np.diff(y, 2))) < 1e-6
    # torch agrees with numpy, keeps float32, and gives finite gradients at 0
    xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    yt = f(xt)
    assert yt.dtype == torch.float32
    np.testing.assert_allclose(yt.detach().numpy(), y, rtol=1e-6, atol=1e-7)
    yt.sum().backward()
    assert torch.isfinite(xt.grad).all()


def test_derivative_matches_finite_difference():
    x = np.array([0.005, 0.3, 1.0, 3.0, 20.0])
    h = 1e-6
    fd = (langevin(x + h) - langevin(x - h)) / (2 * h)
    np.testing.assert_allclose(langevin_deriv(x), fd, rtol=1e-6)


def test_particle_defaults():
    p = Particle()
    assert p.moment == pytest.approx(0.6 / MU0 * math.pi * (20e-9) ** 3 / 6)
    assert p.k == pytest.approx(6.1055e-4, rel=1e-4)  # m/A
    with pytest.raises(ValueError, match="diameter_nm"):
        Particle(diameter_nm=0)
