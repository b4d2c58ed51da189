import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from mpimamba import pretrained
from mpimamba.cli import main
from mpimamba.data.io import read_image, write_image
from mpimamba.eval.figures import save_comparison, save_grid
from mpimamba.infer import Restoration, restore
from mpimamba.models import build, load_model, save_model


def blobs(rng, shape=(24, 28)):
    zz, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    cz, cx = rng.uniform(6, shape[0] - 6), rng.uniform(6, shape[1] - 6)
    return np.exp(-((zz - cz) ** 2) / 30 - ((xx - cx) ** 2) / 12).astype(np.float32)


@pytest.fixture
def dataset(tmp_path, rng):
    root = tmp_path / "data"
    for name, suffix in (("p0", ".npy"), ("p1", ".tif")):
        gt = blobs(rng)
        lq = np.clip(gt + 0.05 * rng.standard_normal(gt.shape), 0, 1).astype(np.float32)
        write_image(root / "test" / "gt" / f"{name}{suffix}", gt)
        write_image(root / "test" / "lq" / f"{name}{suffix}", lq)
    return root


def checkpoint(path, method, label=None, seed=0, steps=10):
    """A model file as training writes it: label, seed and the training settings (here just a budget)."""
    import torch

    torch.manual_seed(seed)
    extra = {"seed": seed, "training": {"steps": steps, "seed": seed, "out": str(path)}}
    return save_model(build(method, "tiny"), path, extra={**extra, **({"label": label} if label else {})})


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_figures_are_pngs(tmp_path, rng):
    a, b, c = blobs(rng), blobs(rng), blobs(rng)
    path = save_comparison(tmp_path / "one.png", a, b, c, title="x")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 2 * img.height  # four panels side by side
    with pytest.raises(FileExistsError):
        save_comparison(path, a, b, c)
    grid = save_grid(tmp_path / "grid.png", [("i0", a, {"m1": b, "m2": c}, a), ("i1", b, {"m1": a, "m2": c}, b)])
    with Image.open(grid) as img:
        assert img.height > img.width / 2  # 4 rows (2 images + their error maps) of 4 columns


def test_evaluate_writes_tables_scores_and_figures(tmp_path, dataset):
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    checkpoint(run1 / "model", "nafnet", label="naf", seed=1)
    checkpoint(run2 / "model", "nafnet", label="naf", seed=2)
    other = checkpoint(tmp_path / "ckpt" / "aep", "aepnet")
    report = tmp_path / "report"
    argv = ["evaluate", str(run1), str(run2), str(other), "--data", str(dataset), "--out", str(report), "--device", "cpu"]
    assert main(argv) == 0

    scores = read_csv(report / "scores.csv")
    assert len(scores) == 2 * 4  # 2 images x (input + 3 checkpoints)
    assert {r["model"] for r in scores} == {"input", "naf", "naf-2", "aepnet"}
    # the input row is the input scored against the target
    lq, gt = read_image(dataset / "test/lq/p1.tif"), read_image(dataset / "test/gt/p1.tif")
    row = next(r for r in scores if r["model"] == "input" and r["image"] == "p1")
    assert float(row["psnr"]) == pytest.approx(peak_signal_noise_ratio(gt, lq, data_range=1), abs=1e-4)
    # a model row is that checkpoint's restoration (the path calibrate writes) scored against the target
    restored = Restoration(load_model(run2))(lq)
    row = next(r for r in scores if r["model"] == "naf-2" and r["image"] == "p1")
    assert float(row["psnr"]) == pytest.approx(peak_signal_noise_ratio(gt, restored, data_range=1), abs=1e-4)

    table = {r["method"]: r for r in read_csv(report / "table.csv")}
    assert set(table) == {"input", "naf", "aepnet"}
    per_ckpt = [np.mean([float(r["ssim"]) for r in scores if r["model"] == m]) for m in ("naf", "naf-2")]
    assert float(table["naf"]["ssim_mean"]) == pytest.approx(np.mean(per_ckpt))
    assert float(table["naf"]["ssim_std"]) == pytest.approx(np.std(per_ckpt, ddof=1))
    assert table["naf"]["checkpoints"] == "2" and table["aepnet"]["ssim_std"] == ""
    assert all(r["input_mass_ratio"] == "nan" for r in scores)  # a user's dataset records no PSF per pair
    md = (report / "table.md").read_text()
    assert "| naf |" in md and "±" in md and "ours convention" in md
    for png in (report / "figures/naf/p0.png", report / "figures/naf-2/p1.png", report / "figures/grid.png"):
        with Image.open(png) as img:
            assert img.format == "PNG"

    assert main(argv) == 2  # refuses to overwrite the report
    assert main(argv + ["--overwrite", "--convention", "authors", "--no-figures"]) == 0
    assert "authors convention" in (report / "table.md").read_text()


def test_evaluate_errors(tmp_path, dataset, capsys):
    assert main(["evaluate", str(tmp_path / "nope"), "--data", str(dataset), "--out", str(tmp_path / "r")]) == 2
    assert "nope" in capsys.readouterr().err
    bad = tmp_path / "bad"
    checkpoint(bad / "model", "nafnet")
    (bad / "model.safetensors").write_bytes(b"garbage")
    assert main(["evaluate", str(bad), "--data", str(dataset), "--out", str(tmp_path / "r")]) == 2
    assert "model.safetensors" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:PNG stores")  # untrained outputs overshoot [0, 1]; the PNG is clipped
def test_calibrate_keeps_names_formats_and_scale(tmp_path, rng, capsys):
    model_path = checkpoint(tmp_path / "m" / "model", "nafnet", seed=3)
    src = tmp_path / "in"
    images = {"a.tif": 37 * blobs(rng, (40, 36)), "sub/b.png": blobs(rng), "sub/deep/c.npy": 0.2 * blobs(rng)}
    for rel, image in images.items():
        write_image(src / rel, image)
    out = tmp_path / "out"
    argv = ["calibrate", str(src), "-o", str(out), "--model", str(model_path), "--device", "cpu", "--tile", "32", "--overlap", "8"]
    assert main(argv) == 0
    model = load_model(model_path)
    for rel in images:
        assert (out / rel).is_file()
        original = read_image(src / rel)
        expected = Restoration(model, tile=32, overlap=8)(original)
        if rel.endswith(".png"):  # 16-bit PNG, clipped to [0, 1]
            assert np.abs(read_image(out / rel) - np.clip(expected, 0, 1)).max() <= 0.5 / 65535 + 1e-7
        else:
            assert np.array_equal(read_image(out / rel), expected)
    # the scale rule: divide by the maximum, restore, multiply back; then clamp at zero
    a = read_image(src / "a.tif")
    expected = np.maximum(a.max() * restore(model, a / a.max(), tile=32, overlap=8), 0)
    assert np.allclose(read_image(out / "a.tif"), expected, atol=1e-5)
    assert (read_image(out / "a.tif") >= 0).all()

    before = (out / "a.tif").read_bytes()
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "a.tif").read_bytes() == before
    assert main(argv + ["--overwrite"]) == 0

    single = tmp_path / "single.npy"
    assert main(["calibrate", str(src / "a.tif"), "-o", str(single), "--model", str(model_path), "--device", "cpu"]) == 0
    assert read_image(single).shape == (40, 36)


def test_calibrate_without_shipped_model_says_so(tmp_path, rng, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "MODEL_PATH", tmp_path / "absent.safetensors")
    write_image(tmp_path / "x.npy", blobs(rng))
    assert main(["calibrate", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert "shipped model" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [[], ["--flip-average"]])
def test_evaluate_scores_exactly_what_calibrate_writes(tmp_path, rng, flags):
    """Inputs not max-normalised (peak 0.37): evaluate's per-image PSNR equals scikit-image's PSNR of the
    files calibrate writes from the same model and inputs (issue 14), with and without flip averaging."""
    root = tmp_path / "data"
    for name in ("p0", "p1", "p2"):
        gt = blobs(rng, (40, 44))
        lq = (0.37 * np.clip(gt + 0.05 * rng.standard_normal(gt.shape), 0, 1)).astype(np.float32)
        write_image(root / "test" / "gt" / f"{name}.tif", gt)
        write_image(root / "test" / "lq" / f"{name}.tif", lq)
    model_path = checkpoint(tmp_path / "m" / "model", "nafnet", seed=4)
    common = ["--model", str(model_path), "--device", "cpu", "--tile", "32", "--overlap", "8", *flags]
    assert main(["calibrate", str(root / "test" / "lq"), "-o", str(tmp_path / "out"), *common]) == 0
    assert main(["evaluate", str(model_path), "--data", str(root), "--out", str(tmp_path / "report"),
                 "--device", "cpu", "--tile", "32", "--overlap", "8", *flags, "--no-figures"]) == 0
    scored = {r["image"]: float(r["psnr"]) for r in read_csv(tmp_path / "report" / "scores.csv") if r["model"] != "input"}
    for name, value in scored.items():
        written = read_image(tmp_path / "out" / f"{name}.tif")
        gt = read_image(root / "test" / "gt" / f"{name}.tif")
        assert value == pytest.approx(peak_signal_noise_ratio(gt, written, data_range=1.0), abs=1e-4)
    # the flag reached both: what was written is the flip-averaged restoration (or the plain one without it)
    restoration = Restoration(load_model(model_path), tile=32, overlap=8, flip_average=bool(flags))
    lq = read_image(root / "test" / "lq" / "p0.tif")
    np.testing.assert_allclose(read_image(tmp_path / "out" / "p0.tif"), restoration(lq), atol=1e-6)


def test_restoration_rules(rng):
    import torch

    torch.manual_seed(0)
    model = build("nafnet", "tiny").eval()
    with torch.no_grad():  # an output with negative pixels: shift the last layer's bias down
        last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        if last.bias is not None:
            last.bias.fill_(-0.5)
        else:
            last.weight.mul_(-5)
    image = 3.0 * blobs(rng)
    raw = Restoration(model, nonnegative=False)(image)
    assert (raw < 0).any()
    clamped = Restoration(model)(image)
    assert (clamped >= 0).all() and np.array_equal(clamped, np.maximum(raw, 0))
    # max normalisation: the output scales with the input; "none" refuses data outside [0, 1]
    np.testing.assert_allclose(Restoration(model, nonnegative=False)(image / 3), raw / 3, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        Restoration(model, normalise="none")(image, name="scan.tif")
    with pytest.raises(ValueError, match="normalisation"):
        Restoration(model, normalise="mean")
    with pytest.raises(ValueError, match="overlap"):
        Restoration(model, tile=16, overlap=16)


def test_rows_group_only_seeds_of_one_configuration(tmp_path, dataset):
    """Two models that share a method name are not seeds (issue 12): the 500-step run and the 10-step run
    are two rows named by their run folders; seeds of one configuration are one row; --label groups."""
    short1, short2 = tmp_path / "short-s1", tmp_path / "short-s2"
    checkpoint(short1 / "model", "nafnet", seed=1)
    checkpoint(short2 / "model", "nafnet", seed=2)
    longer = tmp_path / "long"
    checkpoint(longer / "model", "nafnet", seed=1, steps=500)
    base = ["--data", str(dataset), "--device", "cpu", "--no-figures"]
    assert main(["evaluate", str(short1), str(short2), str(longer), "--out", str(tmp_path / "r1"), *base]) == 0
    rows = {r["method"]: r for r in read_csv(tmp_path / "r1" / "table.csv")}
    assert set(rows) == {"input", "nafnet (short-s1)", "nafnet (short-s2)", "nafnet (long)"}
    assert main(["evaluate", str(short1), str(short2), "--out", str(tmp_path / "r2"), *base]) == 0
    rows = {r["method"]: r for r in read_csv(tmp_path / "r2" / "table.csv")}
    assert set(rows) == {"input", "nafnet"} and rows["nafnet"]["checkpoints"] == "2"
    # the same seed twice is not a spread over seeds
    assert main(["evaluate", str(short1), str(short1 / "model.safetensors"), "--out", str(tmp_path / "r3"), *base]) == 0
    assert len(read_csv(tmp_path / "r3" / "table.csv")) == 3
    # the user may say they belong together
    assert main(["evaluate", str(short1), str(longer), "--label", f"all={short1}", "--label", f"all={longer}",
                 "--out", str(tmp_path / "r4"), *base]) == 0
    rows = {r["method"]: r for r in read_csv(tmp_path / "r4" / "table.csv")}
    assert set(rows) == {"input", "all"} and rows["all"]["checkpoints"] == "2"
    assert main(["evaluate", str(short1), "--label", "oops", "--out", str(tmp_path / "r5"), *base]) == 2


def test_evaluate_reports_quantities_per_category_and_resolution(tmp_path):
    """On a simulated set (its manifest names categories and protocol): the quantity columns per image and
    category, linearity on the sensitivity phantoms, and the resolution chart of the input matching the
    x-space FWHM closed forms (0.95 mm along the drive axis, 2.16 mm across it at 9 T/m) within a pixel."""
    from mpimamba.data.synthetic import write_dataset
    from mpimamba.eval.evaluate import evaluate
    from mpimamba.physics.protocols import PROTOCOLS

    data = tmp_path / "sim"
    write_dataset(data, 50, 32, PROTOCOLS["authors-psf"].replace(categories=("sensitivity", "shape")), seed=3)
    model = checkpoint(tmp_path / "m", "nafnet")
    evaluate([model], data, "test", tmp_path / "report", figures=True, device="cpu")
    scores_rows = read_csv(tmp_path / "report" / "scores.csv")
    assert {"mass_ratio", "interior_fill", "negative_fraction", "linearity_r2"} <= set(scores_rows[0])
    assert all(float(r["negative_fraction"]) == 0 for r in scores_rows if r["model"] != "input")  # the clamp
    sens = [r for r in scores_rows if r["category"] == "sensitivity"]
    other = [r for r in scores_rows if r["category"] == "shape"]
    assert sens and other and len(sens) + len(other) == len(scores_rows)
    assert all(r["linearity_r2"] not in ("", "nan") for r in sens) and all(r["linearity_r2"] == "nan" for r in other)
    categories = read_csv(tmp_path / "report" / "categories.csv")
    assert {(r["method"], r["category"]) for r in categories} == {(m, c) for m in ("input", "nafnet")
                                                                   for c in ("sensitivity", "shape")}
    res = {r["model"]: r for r in read_csv(tmp_path / "report" / "resolution.csv")}
    assert float(res["input"]["fwhm_x_mm"]) == pytest.approx(0.95, abs=0.25)
    assert float(res["input"]["fwhm_z_mm"]) == pytest.approx(2.16, abs=0.25)
    assert float(res["target"]["fwhm_x_mm"]) == pytest.approx(0.25)
    assert "nafnet" in res and (tmp_path / "report" / "figures" / "profiles" / "nafnet.png").is_file()
    table = {r["method"]: r for r in read_csv(tmp_path / "report" / "table.csv")}
    assert float(table["input"]["anisotropy_z_x"]) == pytest.approx(float(res["input"]["anisotropy_z_x"]))
    assert "interior fill" in (tmp_path / "report" / "table.md").read_text()
    # the mass ratio in the input's units, from each pair's manifest record (its PSF and target_scale)
    import json

    from mpimamba.eval.quantitative import input_units_mass_ratio
    from mpimamba.refine import ScanGeometry

    drawn = json.loads((data / "manifest.json").read_text())["drawn"]
    for row in (r for r in scores_rows if r["model"] == "nafnet"):
        stem = Path(row["image"]).stem
        lq, gt = (read_image(data / "test" / kind / f"{stem}.tif") for kind in ("lq", "gt"))
        record = drawn[stem]
        assert (record["model"], record["scan"], record["gradient"], record["spacing_mm"]) == ("psf", "x", 9.0, 0.25)
        geometry = ScanGeometry("x", 9.0, 0.25)
        # the record belongs to this file: its exact target scores ~1 (the input's noise is clipped at 0)
        assert input_units_mass_ratio(gt, gt, lq, geometry, record["target_scale"]) == pytest.approx(1.0, abs=0.03)
        expected = input_units_mass_ratio(Restoration(load_model(model))(lq), gt, lq, geometry, record["target_scale"])
        assert float(row["input_mass_ratio"]) == pytest.approx(expected, rel=1e-5)
    assert all(r["input_mass_ratio"] == "nan" for r in scores_rows if r["model"] == "input")  # a blurred image
    assert np.isfinite(float(table["nafnet"]["input_mass_ratio_mean"]))
