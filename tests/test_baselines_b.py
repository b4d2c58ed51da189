"""SwinIR, Restormer and DiffIR: any H×W and C, gradients to every weight (per phase for DiffIR), a short
training run that lowers the loss, published parameter counts, and the pieces that are easy to get
subtly wrong (SwinIR's shifted-window mask, DiffIR's two phases)."""

import pytest
import torch
import torch.nn.functional as F

from mpimamba.models import build, count_parameters

METHODS = ["swinir", "restormer"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # these tiny networks run fastest on one thread; on a shared 2-core machine extra threads spin
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(batch: int = 2, size: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed pair: gt = smooth random blobs in [0, 1]; lq = gt blurred along the rows (z) only."""
    g = torch.Generator().manual_seed(seed)
    gt = F.avg_pool2d(torch.rand(batch, 1, size + 4, size + 4, generator=g), 5, stride=1)  # (B, 1, size, size)
    gt = (gt - gt.amin()) / (gt.amax() - gt.amin())
    lq = F.avg_pool2d(F.pad(gt, (0, 0, 3, 3), mode="replicate"), (7, 1), stride=1)
    return lq, gt


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_any_size_maps_to_same_shape(method, preset):
    model = build(method, preset).eval()
    x = torch.rand(1, 1, 37, 53)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("method", METHODS)
def test_preset_sizes_are_ordered(method):
    tiny, small, paper = (count_parameters(build(method, p)) for p in ("tiny", "small", "paper"))
    assert tiny < 100_000
    assert tiny < small < paper


@pytest.mark.parametrize(
    "method,published",
    [
        ("swinir", 11.5e6),  # SwinIR paper, grey denoising / JPEG model (embed 180, 6×6 layers, window 8)
        ("restormer", 26.13e6),  # Restormer paper, Table 1 et seq.
    ],
)
def test_paper_preset_matches_published_size(method, published):
    n = count_parameters(build(method, "paper"))
    assert abs(n - published) / published < 0.10, f"{method} paper preset has {n} parameters, published {published}"


@pytest.mark.parametrize("method", METHODS)
def test_multichannel_input(method):
    model = build(method, "tiny", in_channels=3).eval()
    x = torch.rand(2, 3, 20, 27)
    with torch.no_grad():
        assert model(x).shape == x.shape


@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_every_parameter(method):
    model = build(method, "tiny")
    lq, gt = _pair(batch=1, size=16)
    model.training_loss(lq, gt)["loss"].backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("method", METHODS)
def test_short_training_lowers_l1(method):
    model = build(method, "tiny")
    lq, gt = _pair()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        loss = model.training_loss(lq, gt)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


# --- SwinIR: windows and the shifted-window mask -------------------------------------------------


def _changed_pixels(layer, pixel, size=8):
    """Pixels of a layer's output that change when one input pixel changes (attention is the only
    operation that mixes pixels, so this is the set the pixel may attend to / be attended by)."""
    x = torch.randn(1, size, size, layer.norm1.normalized_shape[0], dtype=torch.float64)  # (B, H, W, C)
    x2 = x.clone()
    x2[0, pixel[0], pixel[1]] += torch.randn(x.shape[-1], dtype=x.dtype)  # not constant: LayerNorm removes that
    with torch.no_grad():
        delta = (layer(x2) - layer(x)).abs().sum(-1)[0]  # (H, W)
    return {(i, j) for i, j in (delta > 1e-9).nonzero().tolist()}


def _block(rows, cols):
    return {(i, j) for i in rows for j in cols}


def test_swin_windows_and_shifted_mask():
    from mpimamba.models.baselines.swinir import SwinLayer

    torch.manual_seed(0)
    plain = SwinLayer(8, num_heads=2, window_size=4, shift=False, mlp_ratio=2.0)
    shifted = SwinLayer(8, num_heads=2, window_size=4, shift=True, mlp_ratio=2.0)
    # float64 and O(1) weights so that every real dependency shows far above rounding
    for layer in (plain, shifted):
        layer.double()
        with torch.no_grad():
            for p in layer.parameters():
                p.normal_(0.0, 0.5)
    # plain windows tile the 8×8 map in 4×4 blocks
    assert _changed_pixels(plain, (3, 3)) == _block(range(0, 4), range(0, 4))
    assert _changed_pixels(plain, (5, 2)) == _block(range(4, 8), range(0, 4))
    # shifted by 2: an interior window covers rows/cols 2..5
    assert _changed_pixels(shifted, (3, 3)) == _block(range(2, 6), range(2, 6))
    # the corner window wraps around; the mask keeps the wrapped strips apart, so the top-left
    # pixel sees only its own 2×2 region, not the bottom/right rows and columns rolled next to it
    assert _changed_pixels(shifted, (0, 0)) == _block(range(0, 2), range(0, 2))
    assert _changed_pixels(shifted, (7, 0)) == _block(range(6, 8), range(0, 2))
    assert _changed_pixels(shifted, (3, 7)) == _block(range(2, 6), range(6, 8))
