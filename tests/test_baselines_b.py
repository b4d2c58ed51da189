"""SwinIR, Restormer and DiffIR: any H×W and C, gradients to every weight (per phase for DiffIR), a short
training run that lowers the loss, published parameter counts, and the pieces that are easy to get
subtly wrong (SwinIR's shifted-window mask, DiffIR's two phases)."""

import pytest
import torch
import torch.nn.functional as F

from baseline_helpers import assert_any_size_maps_to_same_shape, assert_multichannel_input
from mpimamba.models import build, count_parameters

METHODS = ["swinir", "restormer", "diffir"]


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
    assert_any_size_maps_to_same_shape(method, preset)


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
    assert_multichannel_input(method, channels=3)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_every_parameter(method):
    """Each phase's loss reaches every parameter that phase trains, and every parameter is trained in some phase."""
    model = build(method, "tiny")
    lq, gt = _pair(batch=1, size=16)
    trained = set()
    for phase in model.phases:
        model.zero_grad(set_to_none=True)
        model.training_loss(lq, gt, phase)["loss"].backward()
        names = {id(p): n for n, p in model.named_parameters()}
        params = list(model.phase_parameters(phase))
        dead = [names[id(p)] for p in params if p.grad is None or not p.grad.abs().sum() > 0]
        assert not dead, f"{phase}: no gradient reaches {dead}"
        trained |= {id(p) for p in params}
    untrained = [n for n, p in model.named_parameters() if id(p) not in trained]
    assert not untrained, f"never trained: {untrained}"


@pytest.mark.parametrize("method", METHODS)
def test_short_training_lowers_l1(method):
    model = build(method, "tiny")
    lq, gt = _pair()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        loss = model.training_loss(lq, gt, model.phases[0])["loss"]
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


# --- DiffIR: the two stages and the diffusion prior ---------------------------------------------


def test_diffir_stage2_freezes_the_teacher_and_its_loss_falls():
    torch.manual_seed(0)
    model = build("diffir", "tiny")
    teacher = {n: p.detach().clone() for n, p in model.cpen_s1.named_parameters()}
    stage2 = list(model.phase_parameters("stage2"))
    assert not {id(p) for p in model.cpen_s1.parameters()} & {id(p) for p in stage2}
    lq, gt = _pair()
    opt = torch.optim.Adam(stage2, lr=2e-3)
    losses = []
    for _ in range(20):
        out = model.training_loss(lq, gt, "stage2")
        assert torch.isfinite(out["loss"]) and torch.isfinite(out["kd"])
        assert torch.allclose(out["loss"], out["pixel"] + out["prior"])
        opt.zero_grad()
        out["loss"].backward()
        assert all(p.grad is None for p in model.cpen_s1.parameters())  # the teacher is not trained
        opt.step()
        losses.append(out["loss"].item())
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses
    assert all(torch.equal(p, teacher[n]) for n, p in model.cpen_s1.named_parameters())


def test_diffir_x0_prediction_survives_the_shared_sampler():
    """`predicted_noise` turns the denoiser's clean-IPR prediction into the noise the shared sampler expects;
    the sampler's z0 estimate must give the denoiser's prediction back."""
    model = build("diffir", "tiny").double()
    z_t, condition = torch.randn(3, 24, dtype=torch.float64), torch.randn(3, 24, dtype=torch.float64)
    t = torch.tensor([0, 2, 3])
    noise = model.predicted_noise(z_t, t, condition)
    z0 = model.schedule.predict_start(z_t, t, noise)
    assert torch.allclose(z0, model.denoiser(z_t, t, condition), atol=1e-10)


def test_diffir_inference_is_deterministic_and_per_image():
    model = build("diffir", "tiny").eval()
    x = torch.rand(2, 1, 21, 30)
    with torch.no_grad():
        y = model(x)
        assert torch.equal(y, model(x))
        # one image alone gives the same result as inside a batch
        assert torch.allclose(model(x[1:]), y[1:], atol=1e-6)
        # in eval mode the stage-2 loss scores the inference output (what validation should see)
        assert torch.allclose(model.training_loss(x, x, "stage2")["output"], y, atol=1e-6)
