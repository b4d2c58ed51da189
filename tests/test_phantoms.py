import glob

import numpy as np
import pytest

from mpimamba.physics.phantoms import CATEGORIES, glyphs, random_phantom

FONTS = sorted(glob.glob("/usr/share/fonts/**/*.ttf", recursive=True))


@pytest.mark.parametrize("name", sorted(CATEGORIES))
def test_generators_reproducible_and_in_range(name):
    f = CATEGORIES[name]
    a = f(np.random.default_rng(5), 48)
    b = f(np.random.default_rng(5), 48)
    c = f(np.random.default_rng(6), 48)
    assert a.dtype == np.float32 and a.shape == (48, 48)
    assert a.min() >= 0 and a.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0.005 < (a > 0.05).mean() < 0.9  # something drawn, not everything


def test_sensitivity_has_graded_concentrations():
    a = CATEGORIES["sensitivity"](np.random.default_rng(0), 96)
    # dot centres carry 1, 1/2, 1/4, ...: at least three distinct plateau levels
    levels = np.unique(np.round(a[a > 0.05], 2))
    assert {1.0, 0.5, 0.25} <= set(levels.tolist())


def test_random_phantom_categories():
    rng = np.random.default_rng(0)
    a = random_phantom(rng, 32, ["resolution"])
    assert a.shape == (32, 32)
    with pytest.raises(ValueError, match="unknown phantom category"):
        random_phantom(rng, 32, ["nope"])


def test_glyphs_from_font_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="font file"):
        glyphs(tmp_path / "missing.ttf")
    if not FONTS:
        pytest.skip("no TrueType font installed on this machine")
    gen = glyphs(FONTS[0], characters="AB8")
    a, b = gen(np.random.default_rng(1), 40), gen(np.random.default_rng(1), 40)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.max() == pytest.approx(1.0) and a.min() >= 0
    # usable through random_phantom as a category generator
    assert random_phantom(np.random.default_rng(2), 40, [gen]).shape == (40, 40)


@pytest.mark.parametrize("size", [64, 256])
def test_points_stay_a_few_pixels_wide_on_any_canvas(size):
    from scipy.ndimage import binary_erosion

    rng = np.random.default_rng(3)
    dots = CATEGORIES["points"](rng, size)
    assert dots.max() == pytest.approx(1.0) and (dots > 0.2).sum() >= 3
    # nothing survives three erosions: every structure is under ~6 px across, on the small canvas and the large
    assert not binary_erosion(dots > 0.2, iterations=3).any()
    # whereas a shape phantom scales with the canvas: its filled regions survive
    assert binary_erosion(CATEGORIES["shape"](rng, size) > 0.2, iterations=3).any()


def test_default_pool_leaves_points_out():
    from mpimamba.physics.phantoms import DEFAULT_CATEGORIES

    assert set(DEFAULT_CATEGORIES) == set(CATEGORIES) - {"points"}


def test_cli_names_the_same_categories():
    """`mpimamba --help` names the categories itself (it must not import numpy); they must stay the registry's."""
    from mpimamba.cli import PHANTOM_CATEGORIES

    assert PHANTOM_CATEGORIES == tuple(CATEGORIES)
