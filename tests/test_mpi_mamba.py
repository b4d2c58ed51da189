"""MPI-Mamba and its parts: blocks, SS2D, LFE, the CL-DM schedule and sampler, the full model and presets."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mpimamba.models.blocks import (
    ChannelLayerNorm,
    Downsample,
    GatedDConvFeedForward,
    PriorCrossAttention,
    TransposedAttention,
    Upsample,
)

# ---------------------------------------------------------------- blocks


def test_channel_layernorm_matches_layer_norm_over_channels():
    x = torch.randn(2, 6, 5, 7)
    norm = ChannelLayerNorm(6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


def test_bias_free_layernorm_keeps_the_mean():
    x = torch.randn(2, 6, 5, 7) + 3.0
    y = ChannelLayerNorm(6, bias=False)(x)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    torch.testing.assert_close(y, x / torch.sqrt(var + 1e-5))
    assert sum(p.numel() for p in ChannelLayerNorm(6, bias=False).parameters()) == 6


def test_feedforward_and_transposed_attention_shapes_and_sizes():
    x = torch.randn(2, 8, 6, 10)
    ffn = GatedDConvFeedForward(8, expansion=2.66)
    hidden = int(8 * 2.66)
    assert sum(p.numel() for p in ffn.parameters()) == 8 * 2 * hidden + 9 * 2 * hidden + hidden * 8
    assert ffn(x).shape == x.shape
    attn = TransposedAttention(8, heads=2)
    assert attn(x).shape == x.shape
    assert attn.temperature.shape == (2, 1, 1)


def test_prior_cross_attention_with_one_token_broadcasts_its_value():
    # one prior token: softmax over a single key is 1, so every pixel receives proj(v) of that token
    cross = PriorCrossAttention(8, prior_dim=12, heads=2)
    x, prior = torch.randn(2, 8, 4, 5), torch.randn(2, 1, 12)
    added = cross(x, prior) - x  # (B, C, H, W)
    v = cross.to_kv(cross.norm_prior(prior)).chunk(2, dim=-1)[1]
    expected = cross.proj(v)[:, 0, :, None, None].expand_as(added)
    torch.testing.assert_close(added, expected, rtol=1e-5, atol=1e-6)


def test_resampling_shapes():
    x = torch.randn(1, 8, 6, 10)
    assert Downsample(8)(x).shape == (1, 16, 3, 5)
    assert Upsample(8)(x).shape == (1, 4, 12, 20)


# ---------------------------------------------------------------- SS2D

from mpimamba.models.ss2d import SS2D  # noqa: E402
from mpimamba.models.ssm import use_scan_backend  # noqa: E402


def _permuted_ss2d(ss2d: SS2D, order: list[int], conv_transform) -> SS2D:
    """A copy of `ss2d` whose scan orders are permuted and whose depthwise kernel is transformed."""
    other = SS2D(ss2d.out_proj.out_features, ss2d.d_state)
    other.load_state_dict(ss2d.state_dict())
    with torch.no_grad():
        for name in ("x_proj_weight", "dt_proj_weight", "dt_proj_bias"):
            getattr(other, name).copy_(getattr(ss2d, name)[order])
        for name in ("A_log", "D"):
            getattr(other, name).copy_(getattr(ss2d, name).unflatten(0, (4, -1))[order].flatten(0, 1))
        other.conv.weight.copy_(conv_transform(ss2d.conv.weight))
    return other


@pytest.mark.parametrize(
    "image_transform, order, conv_transform",
    [
        # transposing the image swaps rows <-> columns (and their reversals)
        (lambda x: x.transpose(-1, -2), [1, 0, 3, 2], lambda w: w.transpose(-1, -2)),
        # rotating by 180 degrees swaps each order with its reversal
        (lambda x: x.flip(-1, -2), [2, 3, 0, 1], lambda w: w.flip(-1, -2)),
    ],
    ids=["transpose", "rotate180"],
)
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_ss2d_scan_orders_follow_the_image_geometry(image_transform, order, conv_transform, backend):
    """Checked with the reference (orders as flipped and transposed copies) and with the cpu kernel
    (orders by index arithmetic): both must read the image the way its geometry says."""
    ss2d = SS2D(8, d_state=4)
    with torch.no_grad():  # make the four orders clearly different
        for p in (ss2d.x_proj_weight, ss2d.dt_proj_weight, ss2d.dt_proj_bias, ss2d.conv.weight):
            p.normal_()
    x = torch.randn(2, 8, 5, 6)
    other = _permuted_ss2d(ss2d, order, conv_transform)
    with use_scan_backend(backend):
        expected = image_transform(ss2d(x))
        torch.testing.assert_close(other(image_transform(x)), expected, rtol=1e-4, atol=1e-5)
        # and the orders really differ: without the permutation the result changes
        assert not torch.allclose(ss2d(image_transform(x)), expected, atol=1e-3)


def test_ss2d_initialisation_and_size():
    c, n = 48, 16
    ss2d = SS2D(c, n)
    inner, rank = 2 * c, math.ceil(c / 16)
    dt = F.softplus(ss2d.dt_proj_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    torch.testing.assert_close(-torch.exp(ss2d.A_log), -torch.arange(1.0, n + 1).expand(4 * inner, n))
    assert torch.equal(ss2d.D, torch.ones(4 * inner))
    expected = (c * 2 * inner + inner * 10 + 4 * inner * (rank + 2 * n) + 4 * (rank * inner + inner)
                + 4 * inner * n + 4 * inner + 2 * inner + inner * c)
    assert sum(p.numel() for p in ss2d.parameters()) == expected


# ---------------------------------------------------------------- LFE and CL-DM

from mpimamba.models.diffusion import LatentDenoiser, LinearBetaSchedule, chain_loss  # noqa: E402
from mpimamba.models.latent import LatentEncoder  # noqa: E402


@pytest.mark.parametrize("size", [(16, 16), (24, 40)])
def test_latent_encoder_gives_group_squared_tokens(size):
    lfe = LatentEncoder(2, embed_dim=8, num_blocks=1, group=4)
    assert lfe(torch.randn(3, 2, *size)).shape == (3, 16, 32)


def test_linear_schedule_closed_forms():
    s = LinearBetaSchedule()
    betas = [0.1 + (0.99 - 0.1) * i / 7 for i in range(8)]
    torch.testing.assert_close(s.alpha_bar, torch.tensor([math.prod(1 - b for b in betas[: t + 1]) for t in range(8)],
                                                         dtype=torch.float64))
    assert 3.0e-5 < s.alpha_bar[-1] < 3.6e-5  # the chain starts from almost pure noise

    # posterior mean against Bayes' rule for q(z_{t-1}|z_0) = N(√ᾱ_{t-1} z0, 1-ᾱ_{t-1}), q(z_t|z_{t-1}) = N(√α_t ·, β_t)
    z0, zt = torch.tensor([0.3, -0.7]), torch.tensor([1.2, 0.4])
    for t in range(1, 8):
        a_prev, beta = s.alpha_bar[t - 1].item(), s.betas[t].item()
        precision = 1 / (1 - a_prev) + (1 - beta) / beta
        bayes = (math.sqrt(a_prev) * z0 / (1 - a_prev) + math.sqrt(1 - beta) * zt / beta) / precision
        torch.testing.assert_close(s.posterior_mean(z0, zt, torch.tensor([t, t])), bayes, rtol=1e-5, atol=1e-6)
    # at t = 0 the posterior mean is z_0 itself
    torch.testing.assert_close(s.posterior_mean(z0, zt, torch.tensor([0, 0])), z0)


def test_predict_start_inverts_q_sample_and_clamps():
    s = LinearBetaSchedule(steps=4, beta_start=0.1, beta_end=0.5)
    z0, noise, t = torch.rand(3, 2, 5) * 1.8 - 0.9, torch.randn(3, 2, 5), torch.tensor([0, 2, 3])
    torch.testing.assert_close(s.predict_start(s.q_sample(z0, t, noise), t, noise), z0, rtol=1e-4, atol=1e-5)
    assert s.predict_start(torch.full((1, 1, 1), 100.0), torch.tensor([1]), torch.zeros(1, 1, 1)).item() == 1.0


def test_reverse_chain_with_an_oracle_denoiser_recovers_the_target():
    s = LinearBetaSchedule()
    z0 = torch.rand(2, 4, 6) * 1.6 - 0.8

    def oracle(z_t, t, condition):  # the exact noise that turns z0 into z_t
        a = s.alpha_bar.to(z_t)[t].view(-1, 1, 1)
        return (z_t - a.sqrt() * z0) / (1 - a).sqrt()

    torch.testing.assert_close(s.sample(oracle, None, torch.randn_like(z0)), z0, rtol=1e-4, atol=1e-4)


def test_chain_loss_backpropagates_through_the_whole_chain():
    torch.manual_seed(0)
    s = LinearBetaSchedule()
    denoiser = LatentDenoiser(dim=8, tokens=4, inner=32, num_blocks=1)
    target, condition = torch.rand(4, 4, 8) - 0.5, torch.randn(4, 4, 8, requires_grad=True)
    z_hat, loss = chain_loss(s, denoiser, target, condition)
    assert z_hat.shape == target.shape and z_hat.abs().max() <= 1
    torch.testing.assert_close(loss, (z_hat - target).abs().mean())
    loss.backward()
    for name, p in [*denoiser.named_parameters(), ("condition", condition)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name  # including the step scale s


# ---------------------------------------------------------------- the full model

from mpimamba.models import build, count_parameters  # noqa: E402
from mpimamba.models.blocks import PriorCrossAttention as _Cross  # noqa: E402
from mpimamba.models.mpi_mamba import PRESETS, MPIMamba  # noqa: E402


# Every preset's shapes, sizes, training, checkpoint, determinism and batch independence: test_contract.py.


def test_every_preset_has_the_two_prior_phases():
    for preset in PRESETS:
        model = build("mpi_mamba", preset)
        assert isinstance(model, MPIMamba) and model.phases == ("phase1", "phase2")


def test_eval_phase2_with_gt_is_the_inference_and_returns_both_priors():
    model = build("mpi_mamba", "tiny").eval()
    x = torch.rand(2, 1, 37, 53)
    with torch.no_grad():
        y = model(x)
        out, z_hat, z = model.phase2(x, x)  # with gt: also the LFE prior z, for the validation loss
    torch.testing.assert_close(out, y, rtol=1e-5, atol=1e-6)
    assert z_hat.shape == z.shape == (2, 16, 32)


def test_paper_preset_matches_the_released_structure():
    model = build("mpi_mamba", "paper")
    parts = {name: count_parameters(getattr(model, name)) for name in ("backbone", "lfe", "condition_encoder", "denoiser")}
    total = count_parameters(model)
    print(f"\nMPI-Mamba paper preset: total {total:,}; " + ", ".join(f"{k} {v:,}" for k, v in parts.items()))
    # LFE on concat(gt, lq): 3x3 conv 32->64, 6 residual blocks of two 3x3 convs, 3x3 conv, mixer, linear 64->256
    conv = lambda cin, cout: cin * cout * 9 + cout  # noqa: E731
    mixer = lambda n, d, te, ce: 4 * d + (n * int(n * te) * 2 + int(n * te) + n) + (d * int(d * ce) * 2 + int(d * ce) + d)  # noqa: E731
    lfe = conv(32, 64) + 6 * 2 * conv(64, 64) + conv(64, 64) + mixer(16, 64, 0.5, 4) + 64 * 256 + 256
    assert parts["lfe"] == lfe
    assert parts["condition_encoder"] == lfe - 16 * 64 * 9
    # denoiser: linear 768->512, 2 mixer blocks (width 512, channel expansion 2), linear 512->256, the scalar s
    assert parts["denoiser"] == 768 * 512 + 512 + 2 * mixer(16, 512, 0.5, 2) + 512 * 256 + 256 + 1
    # published: ≈ 14.7 M backbone, ≈ 17.9 M for the inference network (backbone + condition encoder + denoiser)
    assert abs(parts["backbone"] - 14.7e6) < 0.01 * 14.7e6
    assert abs(parts["backbone"] + parts["condition_encoder"] + parts["denoiser"] - 17.9e6) < 0.01 * 17.9e6


def _train(model, phase, steps, lq, gt, lr=2e-3):
    opt = torch.optim.Adam(list(model.phase_parameters(phase)), lr=lr)
    losses = []
    for _ in range(steps):
        out = model.training_loss(lq, gt, phase)
        assert torch.isfinite(out["loss"]) and out["output"].shape == gt.shape
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    return losses


def test_two_phase_training_lowers_both_losses():
    torch.manual_seed(0)
    model = build("mpi_mamba", "tiny").train()
    gt = torch.rand(2, 1, 16, 16)
    lq = F.avg_pool2d(gt, (1, 5), stride=1, padding=(0, 2))  # blurred along x
    losses = _train(model, "phase1", 6, lq, gt)
    assert losses[-1] < losses[0]

    # phase 2: the LFE is frozen, the condition encoder, denoiser and backbone learn
    trained = {id(p) for p in model.phase_parameters("phase2")}
    assert not any(id(p) in trained for p in model.lfe.parameters())
    assert all(id(p) in trained for p in model.denoiser.parameters())
    lfe_before = [p.detach().clone() for p in model.lfe.parameters()]
    losses = _train(model, "phase2", 6, lq, gt)
    assert sum(losses[-3:]) < sum(losses[:3])
    assert all(torch.equal(a, b) for a, b in zip(lfe_before, model.lfe.parameters()))
    parts = model.training_loss(lq, gt, "phase2")
    torch.testing.assert_close(parts["loss"].detach(), parts["pixel"] + parts["prior"])


def test_ablation_switches_remove_their_parts():
    full = build("mpi_mamba", "tiny")
    no_ssm = build("mpi_mamba", "tiny", use_ssm=False)
    no_prior = build("mpi_mamba", "tiny", use_prior=False)
    kinds = lambda m: {type(mod).__name__ for mod in m.modules()}  # noqa: E731
    assert "SS2D" in kinds(full) and "SS2D" not in kinds(no_ssm) and "TransposedAttention" in kinds(no_ssm)
    assert not any(isinstance(mod, _Cross) for mod in no_prior.modules())
    assert not hasattr(no_prior, "lfe") and not hasattr(no_prior, "denoiser") and no_prior.phases == ("main",)
    assert not any("modulate" in name for name, _ in no_prior.named_parameters())
    counts = {count_parameters(m) for m in (full, no_ssm, no_prior)}
    assert len(counts) == 3
    x = torch.rand(1, 1, 20, 12)
    for model in (no_ssm, no_prior):
        assert model(x).shape == x.shape
    out = no_prior.training_loss(x, x, "main")
    assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="phase"):
        no_prior.training_loss(x, x, "phase1")


# ---------------------------------------------------------------- the scan backend is not architecture

def test_a_model_trained_with_one_backend_runs_with_every_other(tmp_path):
    from mpimamba.models import build
    from mpimamba.models.checkpoint import load_model, save_model

    torch.manual_seed(0)
    model = build("mpi_mamba", "tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    lq, gt = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    with use_scan_backend("reference"):  # a couple of real training steps with the reference scan
        for _ in range(2):
            opt.zero_grad()
            model.training_loss(lq, gt, "phase1")["loss"].backward()
            opt.step()
    save_model(model, tmp_path / "model")
    assert "scan_backend" not in (tmp_path / "model.json").read_text()
    loaded = load_model(tmp_path / "model").eval()
    x = torch.rand(1, 1, 24, 16)
    outputs = {}
    for backend in ("reference", "cpu", "chunked"):
        with use_scan_backend(backend), torch.no_grad():
            outputs[backend] = loaded(x)
    for backend in ("cpu", "chunked"):
        torch.testing.assert_close(outputs[backend], outputs["reference"], rtol=1e-4, atol=1e-5)


def test_model_files_that_stored_a_scan_backend_still_load():
    """Files written before the backend became a run-time choice kept it as an override."""
    from mpimamba.models import build

    old = build("mpi_mamba", "tiny", scan_backend="reference")
    assert "scan_backend" not in vars(old.config)
