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
        assert ssim(out, gt) == pytest.approx(sk_ssim(out, gt), abs=1e-4)
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
