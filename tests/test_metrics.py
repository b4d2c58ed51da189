import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from mpimamba.eval.metrics import nrmse, psnr, quantise_8bit, scores, ssim


def sk_ssim(a, b, **kw):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1, **kw)


def image_pairs(rng):
    """Random noise, and a smooth 'real-looking' phantom: blobs + a vessel, blurred, with a noisy restoration."""
    noise = rng.random((40, 52)), rng.random((40, 52))
    zz, xx = np.mgrid[0:64, 0:80]
    phantom = np.exp(-((zz - 20) ** 2 + (xx - 30) ** 2) / 60) + 0.6 * np.exp(-((zz - 45) ** 2) / 8 - ((xx - 55) ** 2) / 200)
    phantom = np.clip(phantom / phantom.max(), 0, 1)
    restored = np.clip(gaussian_filter(phantom, (3, 0.8)) + 0.02 * rng.standard_normal(phantom.shape), 0, 1)
    return [noise, (restored, phantom)]


def test_metrics_equal_skimage(rng):
    for out, gt in image_pairs(rng):
        assert psnr(out, gt) == pytest.approx(peak_signal_noise_ratio(gt, out, data_range=1), abs=1e-4)
        assert ssim(out, gt) == pytest.approx(sk_ssim(out, gt), abs=1e-6)
        assert nrmse(out, gt) == pytest.approx(normalized_root_mse(gt, out, normalization="min-max"), abs=1e-4)
        rmse = np.sqrt(np.mean((out - gt) ** 2))
        assert nrmse(out, gt) == pytest.approx(rmse / (gt.max() - gt.min()), abs=1e-10)
        assert nrmse(out, gt, "output") == pytest.approx(rmse / (out.max() - out.min()), abs=1e-10)


def test_batched_torch_matches_per_image(rng):
    (a, b), (c, d) = image_pairs(rng)
    out = torch.tensor(np.stack([a[:40, :52], c[:40, :52]]))[:, None].float()  # (2, 1, 40, 52)
    gt = torch.tensor(np.stack([b[:40, :52], d[:40, :52]]))[:, None].float()
    for fn in (psnr, ssim, nrmse):
        batched = fn(out, gt)
        assert isinstance(batched, torch.Tensor) and batched.shape == (2,)
        for i in range(2):
            assert batched[i].item() == pytest.approx(fn(out[i, 0].numpy(), gt[i, 0].numpy()), abs=1e-6)
    assert ssim(out.numpy(), gt.numpy()).shape == (2,)


def test_identical_images_and_known_values():
    x = np.linspace(0, 1, 256).reshape(16, 16)
    assert ssim(x, x) == pytest.approx(1.0)
    assert psnr(x, x) == float("inf")
    assert psnr(x + 0.1, x) == pytest.approx(20.0)  # MSE 0.01
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[:10], x[:10])
    with pytest.raises(ValueError, match="differ"):
        psnr(x, x[:8])


def test_authors_convention_is_8bit_three_channels_output_range(rng):
    out, gt = image_pairs(rng)[1]
    theirs = scores(out, gt, convention="authors")
    # their pipeline: uint8 images copied into 3 channels
    o8, g8 = (np.repeat(np.round(v * 255).astype(np.uint8)[..., None], 3, axis=-1) for v in (out, gt))
    assert theirs["psnr"] == pytest.approx(peak_signal_noise_ratio(g8, o8, data_range=255), abs=1e-4)
    assert theirs["ssim"] == pytest.approx(
        structural_similarity(g8, o8, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                              data_range=255, channel_axis=-1), abs=1e-4)
    rmse = np.sqrt(np.mean((o8.astype(float) - g8) ** 2)) / 255
    assert theirs["nrmse"] == pytest.approx(rmse / ((o8.max() - o8.min()) / 255), abs=1e-6)
    ours = scores(out, gt)
    assert ours["psnr"] != theirs["psnr"]
    assert np.array_equal(quantise_8bit(torch.tensor(out)).numpy(), quantise_8bit(out))


def test_ssim_in_bands_equals_skimage_for_any_band_height(rng, monkeypatch):
    from mpimamba.eval import metrics

    (noise, noise_gt), (restored, phantom) = image_pairs(rng)
    whole = [ssim(noise, noise_gt), ssim(restored, phantom)]
    mse = [psnr(restored, phantom), nrmse(restored, phantom)]
    # bands of 1, 2, 7 output rows (each read with its 5-row halo), and of all rows at once
    for rows in (1, 2, 7, 1000):
        monkeypatch.setattr(metrics, "BAND_BYTES", rows * 8 * 80 * metrics._SSIM_MAPS)
        assert [ssim(noise, noise_gt), ssim(restored, phantom)] == pytest.approx(whole, abs=1e-12)
        assert ssim(restored, phantom) == pytest.approx(sk_ssim(restored, phantom), abs=1e-6)
        assert [psnr(restored, phantom), nrmse(restored, phantom)] == pytest.approx(mse, abs=1e-12)


def test_a_large_float32_pair_scores_as_skimage_does_in_float64(rng):
    # several default-sized bands; float32 inputs are scored in float64 without a float64 copy of either
    zz, xx = np.mgrid[0:700, 0:650]
    gt = (0.5 + 0.5 * np.sin(zz / 23.0) * np.cos(xx / 31.0)).astype(np.float32)
    out = np.clip(gt + 0.05 * rng.standard_normal(gt.shape), 0, 1).astype(np.float32)
    a, b = out.astype(np.float64), gt.astype(np.float64)
    assert ssim(out, gt) == pytest.approx(sk_ssim(a, b), abs=1e-6)
    assert psnr(out, gt) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1), abs=1e-8)
    assert nrmse(out, gt) == pytest.approx(normalized_root_mse(b, a, normalization="min-max"), abs=1e-10)


def test_authors_convention_on_a_torch_batch_gives_tensors(rng):
    out, gt = image_pairs(rng)[1]
    batch = torch.tensor(np.stack([out, gt]))[:, None], torch.tensor(np.stack([gt, gt]))[:, None]
    theirs = scores(*batch, convention="authors")
    assert all(isinstance(v, torch.Tensor) and v.shape == (2,) for v in theirs.values())
    single = scores(out, gt, convention="authors")
    assert {k: float(v[0]) for k, v in theirs.items()} == pytest.approx(single, abs=1e-9)
    assert float(theirs["psnr"][1]) == float("inf") and float(theirs["ssim"][1]) == pytest.approx(1.0)
