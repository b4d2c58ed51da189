"""SwinIR, Restormer and DiffIR beyond the contract every method keeps (tests/test_contract.py: shapes for any
H×W and C, preset sizes, gradients to every weight per phase, a short training run of each phase,
checkpoints, determinism, batch independence): published parameter counts, and the pieces that are easy to
get subtly wrong (SwinIR's shifted-window mask, DiffIR's two stages and its x0-parameterised chain)."""

import pytest
import torch
import torch.nn.functional as F

from mpimamba.models import build, count_parameters


def _pair(batch: int = 2, size: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed pair: gt = smooth random blobs in [0, 1]; lq = gt blurred along the rows (z) only."""
    g = torch.Generator().manual_seed(seed)
    gt = F.avg_pool2d(torch.rand(batch, 1, size + 4, size + 4, generator=g), 5, stride=1)  # (B, 1, size, size)
    gt = (gt - gt.amin()) / (gt.amax() - gt.amin())
    lq = F.avg_pool2d(F.pad(gt, (0, 0, 3, 3), mode="replicate"), (7, 1), stride=1)
    return lq, gt


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


def test_diffir_eval_stage2_loss_scores_the_inference_output():
    """In eval mode the stage-2 loss restores as `forward` does (what validation should see); that
    inference is deterministic and per image is part of the contract (test_contract.py)."""
    model = build("diffir", "tiny").eval()
    x = torch.rand(2, 1, 21, 30)
    with torch.no_grad():
        assert torch.allclose(model.training_loss(x, x, "stage2")["output"], model(x), atol=1e-6)
