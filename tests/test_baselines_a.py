"""NAFNet, AEPNet, FDS and SFM beyond the contract every method keeps (tests/test_contract.py: shapes for any
H×W and C, preset sizes, gradients to every weight, a short training run, checkpoints, determinism, batch
independence): NAFNet's paper preset against its published size, AEPNet's Sobel edges, SFM's two branches."""

import torch

from mpimamba.models import build, count_parameters


def test_nafnet_paper_matches_published_size():
    # NAFNet-GoPro-width64 as released (RGB in/out): 67.89 M parameters
    n = count_parameters(build("nafnet", "paper", in_channels=3))
    assert abs(n - 67.89e6) / 67.89e6 < 0.10, n


def test_aepnet_sobel_differentiates_a_ramp():
    from mpimamba.models.baselines.aepnet import sobel

    rows, cols = torch.meshgrid(torch.arange(9.0), torch.arange(11.0), indexing="ij")
    image = (0.3 * cols - 0.2 * rows)[None, None]  # (1, 1, 9, 11): slope 0.3 along x, -0.2 along z
    grad = sobel(image)[..., 1:-1, 1:-1]  # interior: the replicate border flattens the edge pixels
    assert grad.shape == (1, 2, 7, 9)
    assert torch.allclose(grad[:, 0], torch.full_like(grad[:, 0], 0.3), atol=1e-6)
    assert torch.allclose(grad[:, 1], torch.full_like(grad[:, 1], -0.2), atol=1e-6)


def test_sfm_branches_local_and_global():
    from mpimamba.models.baselines.sfm import FourierUnit, WindowAttention

    x = torch.randn(1, 8, 16, 16)
    bumped = x.clone()
    bumped[..., 2, 3] += 1.0  # a change inside the top-left 4×4 window only
    with torch.no_grad():
        attn = WindowAttention(8, heads=2, window=4)
        delta = (attn(bumped) - attn(x)).abs().sum(dim=1)[0]  # (16, 16)
        assert delta[:4, :4].max() > 1e-4  # the window that changed responds...
        delta[:4, :4] = 0
        assert delta.max() < 1e-6  # ...and no other window does
        fourier = FourierUnit(8)
        far = (fourier(bumped) - fourier(x)).abs().sum(dim=1)[0]
        assert far[8:, 8:].min() > 1e-6  # the spectral branch reaches every pixel
