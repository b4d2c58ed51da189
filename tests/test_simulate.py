import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mpimamba.cli import main
from mpimamba.data.io import read_image
from mpimamba.data.synthetic import SyntheticPairs, write_dataset
from mpimamba.physics.protocols import PROTOCOLS, Protocol
from mpimamba.physics.pairs import PairConfig, make_pair, make_pairs
from mpimamba.physics.psf import PSFForward


def _tree(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_pair_recipe_noise_free():
    rng = np.random.default_rng(0)
    lq, gt = make_pair(rng, PairConfig(scan="z", categories=("sensitivity",)), 32)
    assert lq.dtype == gt.dtype == np.float32 and lq.shape == (32, 32)
    assert lq.max() == pytest.approx(1.0) and gt.max() == pytest.approx(1.0) and lq.min() >= 0
    # noise-free lq is the z-PSF image of gt (the phantom), divided by its maximum
    native = PSFForward((32, 32), "z")(torch.from_numpy(gt)).numpy()
    np.testing.assert_allclose(lq, native / native.max(), atol=1e-5)


def test_snr_and_background():
    cats = ("shape",)
    lq, _ = make_pairs(np.random.default_rng(1), PairConfig(snr_db=30.0, background=0.2, categories=cats), 32, 4)
    clean, _ = make_pairs(np.random.default_rng(1), PairConfig(categories=cats), 32, 4)  # same phantoms
    assert lq.min() >= 0 and lq.max() <= 1
    for noisy, ref in zip(lq, clean):
        # noisy ∝ ref + 0.2 + noise with σ = 10^(-30/20) of the unit peak: fit noisy = a·ref + b
        a, b = np.polyfit(ref.ravel(), noisy.ravel(), 1)
        residual = noisy.ravel() - (a * ref.ravel() + b)
        assert b / a == pytest.approx(0.2, rel=0.1)
        assert residual.std() / a == pytest.approx(10 ** (-30 / 20), rel=0.15)


def test_target_scale_puts_the_target_in_the_inputs_units():
    """lq = A(target_scale·gt) + a constant offset (noise-free): the factor the two normalisations removed."""
    cfg = PairConfig(scan="z", gradient=(6.0, 10.0), concentration=(0.3, 0.9), background=(0.0, 0.05),
                     categories=("shape", "sensitivity"))
    lq, gt, drawn = make_pairs(np.random.default_rng(5), cfg, 32, 4, details=True)
    for i in range(4):
        forward = PSFForward((32, 32), "z", float(drawn["spacings"][i]), float(drawn["gradients"][i]))
        native = drawn["target_scale"][i] * forward(torch.from_numpy(gt[i])).numpy()
        offset = lq[i] - native
        assert np.ptp(offset) < 1e-5 and 0 <= offset.mean() <= 0.05 / 0.3 + 1e-6
    assert np.isinf(drawn["snr_db"]).all()  # noise-free pairs say so
    # the noise drawn is the SNR recorded: σ = 10^(−SNR/20) of the native peak max(A(p)) (c = 1, max p = 1),
    # and in lq's units (divided by max(lq) as target_scale is) σ = target_scale · max(A(gt)) · 10^(−SNR/20)
    noisy_cfg = dataclasses.replace(cfg, snr_db=(15.0, 40.0), concentration=1.0, background=0.0)
    lq, gt, noisy = make_pairs(np.random.default_rng(6), noisy_cfg, 64, 4, details=True)
    for i in range(4):
        forward = PSFForward((64, 64), "z", float(noisy["spacings"][i]), float(noisy["gradients"][i]))
        native = forward(torch.from_numpy(gt[i])).numpy()
        residual = lq[i] - noisy["target_scale"][i] * native
        inside = lq[i] > 0.2  # away from the clip at 0
        sigma = noisy["target_scale"][i] * native.max() * 10 ** (-noisy["snr_db"][i] / 20)
        assert residual[inside].std() == pytest.approx(sigma, rel=0.25)


def test_mixed_protocol_keeps_each_pairs_records_with_it():
    """Protocol.simulate shuffles the PSF and x-space pairs together: every record travels with its pair."""
    protocol = Protocol(pairs=PairConfig(categories=("shape",)), canvas=None, xspace_fraction=0.5)
    lq, gt, drawn = protocol.simulate(np.random.default_rng(7), 24, 6, details=True)
    assert {"psf", "xspace"} <= set(drawn["models"]) and len(drawn["target_scale"]) == 6
    for i in np.flatnonzero(np.asarray(drawn["models"]) == "psf"):
        native = drawn["target_scale"][i] * PSFForward((24, 24), "x")(torch.from_numpy(gt[i])).numpy()
        np.testing.assert_allclose(lq[i], native, atol=1e-5)


def test_isotropic_target_is_mean_of_both_scans():
    cats = ("sensitivity",)
    _, gt = make_pairs(np.random.default_rng(2), PairConfig(target="isotropic", categories=cats), 32, 2)
    _, phantom = make_pairs(np.random.default_rng(2), PairConfig(categories=cats), 32, 2)
    c = torch.from_numpy(phantom)
    mean = (0.5 * (PSFForward((32, 32), "x")(c) + PSFForward((32, 32), "z")(c))).numpy()
    np.testing.assert_allclose(gt, mean / mean.max(axis=(1, 2), keepdims=True), atol=1e-5)


def test_concentration_lowers_effective_snr():
    base = dict(snr_db=30.0, categories=("sensitivity",))
    rng = np.random.default_rng
    lq_hi, _ = make_pairs(rng(3), PairConfig(concentration=1.0, **base), 32, 4)
    lq_lo, _ = make_pairs(rng(3), PairConfig(concentration=0.1, **base), 32, 4)
    ref, _ = make_pairs(rng(3), PairConfig(categories=("sensitivity",)), 32, 4)
    assert np.std(lq_lo - ref) > 5 * np.std(lq_hi - ref)


def test_config_validation():
    with pytest.raises(ValueError, match="scan"):
        PairConfig(scan="y")
    with pytest.raises(ValueError, match="single gradient"):
        PairConfig(model="xspace", gradient=(5.0, 9.0))
    with pytest.raises(ValueError, match="gradient"):
        PairConfig(gradient=(9.0, 5.0))
    with pytest.raises(ValueError, match="categories"):
        PairConfig(categories=("bogus",))


def test_xspace_pairs_close_to_psf_pairs():
    cfg = dict(scan="x", categories=("shape",))
    lq_x, gt_x = make_pairs(np.random.default_rng(4), PairConfig(model="xspace", **cfg), 24, 2)
    lq_p, gt_p = make_pairs(np.random.default_rng(4), PairConfig(**cfg), 24, 2)
    np.testing.assert_array_equal(gt_x, gt_p)
    assert np.corrcoef(lq_x.ravel(), lq_p.ravel())[0, 1] > 0.97


def test_stream_reproducible_and_distinct_per_worker():
    ds = SyntheticPairs(Protocol(pairs=PairConfig(categories=("shape", "vessel")), canvas=24), size=16, seed=7, batch=4)
    first = [b for _, b in zip(range(6), ds)]
    again = [b for _, b in zip(range(6), ds)]
    lq, gt = first[0]
    assert lq.shape == (1, 16, 16) and lq.dtype == torch.float32
    for (a, b), (c, d) in zip(first, again):
        assert torch.equal(a, c) and torch.equal(b, d)
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batches = [b for _, b in zip(range(2), loader)]  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(batches[0][1], batches[1][1])
    assert torch.equal(batches[0][1], torch.stack([g for _, g in first[:4]]))  # worker 0 = the plain stream


def test_xspace_fraction_outside_0_1_is_refused():  # the mixing itself: tests/test_xspace_mixing.py
    with pytest.raises(ValueError, match="xspace_fraction"):
        Protocol(xspace_fraction=1.5)


def test_cli_simulate_layout_determinism_and_refusal(tmp_path, capsys):
    args = ["--count", "10", "--size", "16", "--seed", "3", "--snr", "30"]
    assert main(["simulate", str(tmp_path / "a"), *args]) == 0
    assert main(["simulate", str(tmp_path / "b"), *args]) == 0
    a = _tree(tmp_path / "a")
    assert a == _tree(tmp_path / "b")
    for split, n in (("train", 8), ("val", 1), ("test", 1)):
        for kind in ("lq", "gt"):
            files = sorted((tmp_path / "a" / split / kind).iterdir())
            assert len(files) == n and all(f.suffix == ".tif" for f in files)
    img = read_image(next((tmp_path / "a" / "train" / "lq").iterdir()))
    assert img.dtype == np.float32 and img.shape == (16, 16) and 0 <= img.min() and img.max() <= 1
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["counts"] == {"total": 10, "train": 8, "val": 1, "test": 1}
    assert manifest["protocol"]["pairs"]["snr_db"] == 30.0 and manifest["size"] == 16
    assert manifest["protocol"]["name"] == "default (changed: snr_db)"

    # a non-empty OUT is refused and left exactly as it was
    (tmp_path / "a" / "notes.txt").write_text("mine")
    before = _tree(tmp_path / "a")
    assert main(["simulate", str(tmp_path / "a"), "--count", "10", "--size", "16", "--seed", "4"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _tree(tmp_path / "a") == before
    # --overwrite replaces the dataset (another seed -> other images), keeps unrelated files
    assert main(["simulate", str(tmp_path / "a"), "--count", "10", "--size", "16", "--seed", "4",
                 "--format", "npy", "--overwrite"]) == 0
    assert (tmp_path / "a" / "notes.txt").read_text() == "mine"
    assert not list((tmp_path / "a").rglob("*.tif"))
    assert len(list((tmp_path / "a").rglob("*.npy"))) == 20


def test_write_dataset_png(tmp_path):
    write_dataset(tmp_path / "p", 3, 16, Protocol(pairs=PairConfig(categories=("mouse",))), seed=0, fmt="png")
    assert len(list((tmp_path / "p").rglob("*.png"))) == 6
    with pytest.raises(ValueError, match="format"):
        write_dataset(tmp_path / "q", 3, 16, fmt="jpg")


def test_glyph_category_needs_and_uses_a_font(tmp_path):
    with pytest.raises(ValueError, match="needs a font"):
        PairConfig(categories=("glyphs",))
    with pytest.raises(FileNotFoundError, match="font file"):
        PairConfig(font=str(tmp_path / "none.ttf"))
    assert main(["simulate", str(tmp_path / "o"), "--count", "3", "--size", "16",
                 "--font", str(tmp_path / "none.ttf")]) == 2
    assert not (tmp_path / "o").exists()
    fonts = sorted(Path("/usr/share/fonts").rglob("*.ttf")) if Path("/usr/share/fonts").is_dir() else []
    if not fonts:
        pytest.skip("no TrueType font installed on this machine")
    lq, gt = make_pairs(np.random.default_rng(0), PairConfig(categories=("glyphs",), font=str(fonts[0])), 32, 2)
    assert gt.max() == pytest.approx(1.0) and lq.shape == (2, 32, 32)


# ---------------------------------------------------------------------------------------------- protocols
@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_protocol_round_trips_through_json(name):
    protocol = PROTOCOLS[name].replace(categories=("shape", "vessel"))
    back = Protocol.from_dict(json.loads(json.dumps(protocol.to_dict())))
    assert back == protocol and isinstance(back.pairs.categories, tuple)
    assert all(isinstance(v, tuple) for v in (back.pairs.gradient, back.pairs.snr_db) if not np.isscalar(v) and v)


def test_protocol_replace_names_what_changed_and_refuses_unknown_fields():
    p = PROTOCOLS["authors-psf"].replace(gradient=6.0, canvas=96)
    assert p.pairs.gradient == 6.0 and p.canvas == 96 and p.name == "authors-psf (changed: canvas, gradient)"
    with pytest.raises(ValueError, match="unknown protocol pair fields"):
        Protocol.from_dict({"pairs": {"gradients": 1}})


def test_spacing_range_equals_the_gradient_it_is_equivalent_to():
    """The PSF depends on gradient x spacing only: 0.5 mm pixels at 6 T/m blur like 0.25 mm at 12 T/m."""
    cats = dict(categories=("sensitivity",), scan="z")
    coarse, _ = make_pairs(np.random.default_rng(5), PairConfig(gradient=6.0, spacing_mm=(0.5, 0.5), **cats), 32, 2)
    fine, _ = make_pairs(np.random.default_rng(5), PairConfig(gradient=12.0, spacing_mm=0.25, **cats), 32, 2)
    np.testing.assert_allclose(coarse, fine, atol=1e-5)
    # a real range: each pair's blur lies between those of the two ends
    sharp, _ = make_pairs(np.random.default_rng(6), PairConfig(spacing_mm=0.5, **cats), 32, 3)
    mixed, _ = make_pairs(np.random.default_rng(6), PairConfig(spacing_mm=(0.2, 0.5), **cats), 32, 3)
    assert not np.allclose(sharp, mixed)


def test_patches_are_crops_of_whole_canvases():
    protocol = Protocol(pairs=PairConfig(categories=("shape",)), canvas=48)
    lq, gt = protocol.patches(np.random.default_rng(7), 16, 3)
    whole_lq, whole_gt = protocol.simulate(np.random.default_rng(7), 48, 3)
    assert lq.shape == gt.shape == (3, 16, 16)
    for i in range(3):  # every patch is a window of its canvas (found by exhaustive search)
        hits = [(r, c) for r in range(33) for c in range(33)
                if np.array_equal(whole_gt[i, r:r + 16, c:c + 16], gt[i])
                and np.array_equal(whole_lq[i, r:r + 16, c:c + 16], lq[i])]
        assert hits
    with pytest.raises(ValueError, match="smaller than the patch"):
        protocol.patches(np.random.default_rng(0), 64, 1)


def test_a_canvas_range_draws_one_canvas_per_batch():
    protocol = Protocol(pairs=PairConfig(categories=("shape", "points")), canvas=(24, 40))
    assert protocol.canvas_range(16) == (24, 40) and protocol.typical_canvas(16) == 32
    assert Protocol.from_dict(json.loads(json.dumps(protocol.to_dict()))).canvas == (24, 40)
    assert "24–40-px canvases" in protocol.describe()
    for seed in range(3):  # the batch is that of the single canvas the range drew first
        side = int(np.random.default_rng(seed).integers(24, 41))
        rng = np.random.default_rng(seed)
        rng.integers(24, 41)
        expected = dataclasses.replace(protocol, canvas=side).patches(rng, 16, 2)
        np.testing.assert_array_equal(protocol.patches(np.random.default_rng(seed), 16, 2)[1], expected[1])
    for bad in [(40, 24), (4, 40), (24, 40, 56), 32.5]:
        with pytest.raises(ValueError, match="Protocol.canvas must be"):
            Protocol(canvas=bad)
    assert PROTOCOLS["multiscale"].canvas == (64, 256) and "points" in PROTOCOLS["multiscale"].pairs.categories


def test_for_patch_raises_the_canvas_only_when_the_patch_needs_it():
    ranged = Protocol(pairs=PairConfig(categories=("shape",)), canvas=(24, 40), name="r")
    assert ranged.for_patch(16) is ranged and ranged.for_patch(24) is ranged
    raised = ranged.for_patch(32)
    assert raised.canvas == (32, 40) and raised.name == "r (changed: canvas)" and raised.pairs == ranged.pairs
    assert ranged.for_patch(48).canvas == 48  # larger than the whole range: the patch size alone
    assert Protocol(canvas=None).for_patch(64).canvas is None  # None already means "the patch size"
    lq, gt = raised.patches(np.random.default_rng(0), 32, 2)  # the unraised protocol refuses this patch
    assert lq.shape == gt.shape == (2, 32, 32)


def test_cli_protocol_flags_and_ranges(tmp_path):
    out = tmp_path / "d"
    assert main(["simulate", str(out), "--count", "10", "--size", "16", "--protocol", "authors-psf",
                 "--gradient", "5:7", "--snr", "none", "--categories", "shape,mouse"]) == 0
    protocol = Protocol.from_dict(json.loads((out / "manifest.json").read_text())["protocol"])
    assert protocol.pairs.gradient == (5.0, 7.0) and protocol.pairs.snr_db is None
    assert protocol.pairs.categories == ("shape", "mouse") and protocol.pairs.scan == "x"
    assert main(["simulate", str(tmp_path / "e"), "--count", "10", "--protocol", "nosuch"]) == 2
    assert main(["simulate", str(tmp_path / "f"), "--count", "10", "--protocol", "multiscale", "--canvas", "16:24",
                 "--categories", "points"]) == 0
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert manifest["protocol"]["canvas"] == [16, 24] and manifest["size"] == 16  # typical: 8·round(√(16·24)/8)
    with pytest.raises(SystemExit):  # argparse: "expected whole pixels PX or LOW:HIGH"
        main(["simulate", str(tmp_path / "g"), "--count", "10", "--canvas", "64.5"])


def test_lissajous_protocol_images_with_the_authors_trajectory():
    """The authors' protocol: one 2-D Lissajous figure for every pair (no scan axis), blurred along both
    axes; it needs the time-domain model."""
    cfg = PairConfig(model="xspace", trajectory="lissajous", categories=("sensitivity",))
    lq_x, gt = make_pairs(np.random.default_rng(8), dataclasses.replace(cfg, scan="x"), 24, 2)
    lq_z, _ = make_pairs(np.random.default_rng(8), dataclasses.replace(cfg, scan="z"), 24, 2)
    np.testing.assert_array_equal(lq_x, lq_z)  # the scan axis plays no part
    raster_x, _ = make_pairs(np.random.default_rng(8), PairConfig(model="xspace", scan="x", categories=("sensitivity",)), 24, 2)
    assert not np.allclose(lq_x, raster_x)
    assert np.corrcoef(lq_x.ravel(), gt.ravel())[0, 1] > 0.5
    with pytest.raises(ValueError, match="Lissajous trajectory needs the time-domain model"):
        PairConfig(trajectory="lissajous")
    assert PROTOCOLS["authors"].pairs.trajectory == "lissajous" and PROTOCOLS["authors"].canvas == 120


def test_a_category_named_twice_is_drawn_twice_as_often():
    """multiscale-points names `points` twice: drawn with probability 2/7 instead of multiscale's 1/6, and its
    description says so."""
    from mpimamba.physics.pairs import _phantom_pool

    pool = _phantom_pool(PROTOCOLS["multiscale-points"].pairs)
    assert len(pool) == 7 and pool.count("points") == 2
    _, _, drawn = make_pairs(np.random.default_rng(5), PROTOCOLS["multiscale-points"].pairs, 16, 700, details=True)
    share = drawn["categories"].count("points") / 700
    assert abs(share - 2 / 7) < 4 * (2 / 7 * 5 / 7 / 700) ** 0.5  # within 4 standard errors of 2/7, far from 1/6
    assert "points (×2)" in PROTOCOLS["multiscale-points"].describe()
    assert "points (×" not in PROTOCOLS["multiscale"].describe()
