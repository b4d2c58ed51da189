"""MPI-Mamba (AAAI 2026): a 4-level U-Net of LFF-SSM blocks guided by a compact latent prior (DESIGN §3).

    LFE(gt, lq) ──► z ─┐                      phase 1: prior from the ground truth
                       ├──► backbone(lq, prior) ──► output
    CL-DM(c(lq)) ─► ẑ ─┘                      phase 2 / inference: prior generated from lq alone

Backbone: 3x3 embedding; encoder levels 1-3, bottleneck, decoder levels 3-1, refinement; each level
opens with ONE cross-attention from the features to the prior tokens (16 tokens at level 1 and the
refinement, 4 at levels 2-3), and the bottleneck blocks instead modulate their inputs with a single prior
vector (x·k1 + k2). Each block: x ← x + SS2D(LN(x)); x ← x + GDFN(LN(x)). Global residual.

Ablations (paper Table 4): `use_ssm=False` swaps SS2D for Restormer's transposed attention;
`use_prior=False` drops the LFE, the CL-DM and every prior path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .base import Restorer, pad_to_multiple
from .blocks import (
    ChannelLayerNorm,
    Downsample,
    GatedDConvFeedForward,
    PriorCrossAttention,
    TransposedAttention,
    Upsample,
)
from .diffusion import LatentDenoiser, LinearBetaSchedule, start_noise
from .latent import LatentEncoder
from .ss2d import SS2D


@dataclass
class MPIMambaConfig:
    in_channels: int = 1
    width: int = 48  # level-1 width; level i has width·2^i
    blocks: tuple[int, int, int, int] = (2, 2, 2, 2)  # levels 1-3 and the bottleneck (decoder mirrors 1-3)
    refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion: float = 2.66
    d_state: int = 16  # SSM state size N
    use_ssm: bool = True
    use_prior: bool = True
    # prior: group² tokens of width 4·embed_dim
    embed_dim: int = 64
    group: int = 4
    lfe_blocks: int = 6
    denoiser_inner: int = 512
    denoiser_blocks: int = 2
    diffusion_steps: int = 8
    beta_start: float = 0.1
    beta_end: float = 0.99
    inference_seed: int = 0  # the fixed start noise of the eval-mode chain (see diffusion.start_noise)


class PriorModulation(nn.Module):
    """x·k1 + k2 with k1, k2 linear in a prior vector: a per-channel affine map chosen by the prior."""

    def __init__(self, prior_dim: int, channels: int):
        super().__init__()
        self.scale = nn.Linear(prior_dim, channels)
        self.shift = nn.Linear(prior_dim, channels)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W); prior: (B, prior_dim)."""
        return x * self.scale(prior)[:, :, None, None] + self.shift(prior)[:, :, None, None]


class LFFSSMBlock(nn.Module):
    """x ← x + SS2D(LN(x)); x ← x + GDFN(LN(x)), optionally modulated by a prior vector (bottleneck)."""

    def __init__(self, channels: int, heads: int, cfg: MPIMambaConfig, prior_dim: int | None = None):
        super().__init__()
        self.norm1 = ChannelLayerNorm(channels)
        self.mixer = SS2D(channels, cfg.d_state) if cfg.use_ssm else TransposedAttention(channels, heads)
        self.norm2 = ChannelLayerNorm(channels)
        self.ffn = GatedDConvFeedForward(channels, cfg.ffn_expansion)
        self.modulate_mixer = PriorModulation(prior_dim, channels) if prior_dim else None
        self.modulate_ffn = PriorModulation(prior_dim, channels) if prior_dim else None

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        if self.modulate_mixer is None:
            x = x + self.mixer(self.norm1(x))
            return x + self.ffn(self.norm2(x))
        # only the branch inputs are modulated, so the residual path stays the identity
        x = x + self.mixer(self.norm1(self.modulate_mixer(x, prior)))  # before the SS2D norm
        return x + self.ffn(self.modulate_ffn(self.norm2(x), prior))  # inside the feed-forward


class Level(nn.Module):
    """One U-Net level: a prior cross-attention (when given prior tokens), then `num_blocks` blocks."""

    def __init__(self, channels: int, heads: int, num_blocks: int, cfg: MPIMambaConfig,
                 cross_attention: bool = False, modulation: bool = False):
        super().__init__()
        prior_dim = 4 * cfg.embed_dim
        self.cross = PriorCrossAttention(channels, prior_dim, heads) if cross_attention else None
        self.blocks = nn.ModuleList(
            LFFSSMBlock(channels, heads, cfg, prior_dim if modulation else None) for _ in range(num_blocks)
        )

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        if self.cross is not None:
            x = self.cross(x, prior)  # tokens (B, N, P)
            prior = None  # the blocks after the cross-attention see no prior
        for block in self.blocks:
            x = block(x, prior)  # a vector (B, P) at the bottleneck, else None
        return x


class TokenReduction(nn.Module):
    """(B, N, P) -> (B, M, P): a learned linear map over the token axis, then one over channels."""

    def __init__(self, tokens_in: int, tokens_out: int, dim: int):
        super().__init__()
        self.tokens = nn.Linear(tokens_in, tokens_out)
        self.channels = nn.Linear(dim, dim)

    def forward(self, prior: torch.Tensor) -> torch.Tensor:
        return self.channels(self.tokens(prior.transpose(1, 2)).transpose(1, 2))


class PriorUNet(nn.Module):
    """The restoration backbone: (B, C, H, W) image and optional prior tokens (B, N, P) -> (B, C, H, W)."""

    def __init__(self, cfg: MPIMambaConfig):
        super().__init__()
        w, heads, n = cfg.width, cfg.heads, cfg.blocks
        prior, tokens = cfg.use_prior, cfg.group ** 2

        def level(channels, h, blocks, **kw):
            return Level(channels, h, blocks, cfg, **kw)

        self.embed = nn.Conv2d(cfg.in_channels, w, 3, padding=1, bias=False)
        self.encoder1 = level(w, heads[0], n[0], cross_attention=prior)
        self.down1 = Downsample(w)
        self.encoder2 = level(2 * w, heads[1], n[1], cross_attention=prior)
        self.down2 = Downsample(2 * w)
        self.encoder3 = level(4 * w, heads[2], n[2], cross_attention=prior)
        self.down3 = Downsample(4 * w)
        self.bottleneck = level(8 * w, heads[3], n[3], modulation=prior)
        self.up3 = Upsample(8 * w)
        self.reduce3 = nn.Conv2d(8 * w, 4 * w, 1, bias=False)
        self.decoder3 = level(4 * w, heads[2], n[2], cross_attention=prior)
        self.up2 = Upsample(4 * w)
        self.reduce2 = nn.Conv2d(4 * w, 2 * w, 1, bias=False)
        self.decoder2 = level(2 * w, heads[1], n[1], cross_attention=prior)
        self.up1 = Upsample(2 * w)  # level 1 keeps the concatenated 2w channels: no reduction
        self.decoder1 = level(2 * w, heads[0], n[0], cross_attention=prior)
        self.refinement = level(2 * w, heads[0], cfg.refinement_blocks, cross_attention=prior)
        self.head = nn.Conv2d(2 * w, cfg.in_channels, 3, padding=1, bias=False)
        # multi-scale prior: 16 tokens -> 4 tokens (levels 2-3) -> 1 vector (bottleneck)
        if prior:
            self.prior_mid = TokenReduction(tokens, tokens // 4, 4 * cfg.embed_dim)
            self.prior_bottom = TokenReduction(tokens // 4, 1, 4 * cfg.embed_dim)

    def forward(self, image: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        p1 = p2 = p3 = None
        if prior is not None:
            p1 = prior  # (B, 16, P)
            p2 = self.prior_mid(p1)  # (B, 4, P)
            p3 = self.prior_bottom(p2).flatten(1)  # (B, P)
        e1 = self.encoder1(self.embed(image), p1)  # (B, w, H, W)
        e2 = self.encoder2(self.down1(e1), p2)  # (B, 2w, H/2, W/2)
        e3 = self.encoder3(self.down2(e2), p2)  # (B, 4w, H/4, W/4)
        x = self.bottleneck(self.down3(e3), p3)  # (B, 8w, H/8, W/8)
        x = self.decoder3(self.reduce3(torch.cat([self.up3(x), e3], 1)), p2)  # (B, 4w, H/4, W/4)
        x = self.decoder2(self.reduce2(torch.cat([self.up2(x), e2], 1)), p2)  # (B, 2w, H/2, W/2)
        x = self.decoder1(torch.cat([self.up1(x), e1], 1), p1)  # (B, 2w, H, W)
        x = self.refinement(x, p1)
        return self.head(x) + image  # global residual


class MPIMamba(Restorer):
    """The full model. Submodules: `backbone`; with `use_prior` also `lfe`, `condition_encoder`, `denoiser`.

    Inference (`forward`) needs the input only and is deterministic in eval mode: the reverse chain starts
    from noise drawn by a generator seeded with `inference_seed` and shared by every image of the batch.
    Why not a noise-free start (zeros)? Training starts the chain from unit-variance noise, so zeros would
    be an input the denoiser never saw; a fixed draw is a typical sample, and sharing it across the batch
    makes an image's result independent of its batch-mates and of the batch size.
    """

    size_multiple = 8  # 3 downsamplings by 2; also a multiple of the LFE's PixelUnshuffle(4)

    def __init__(self, **kwargs):
        super().__init__()
        # Model files written before the scan backend became a run-time choice (models.ssm) stored it as
        # architecture; it never changed the weights, so it is dropped and the run-time choice applies.
        kwargs.pop("scan_backend", None)
        self.config = cfg = MPIMambaConfig(**kwargs)
        self.phases = ("phase1", "phase2") if cfg.use_prior else ("main",)
        self.backbone = PriorUNet(cfg)
        if cfg.use_prior:
            tokens, prior_dim = cfg.group ** 2, 4 * cfg.embed_dim
            self.lfe = LatentEncoder(2 * cfg.in_channels, cfg.embed_dim, cfg.lfe_blocks, cfg.group)
            self.condition_encoder = LatentEncoder(cfg.in_channels, cfg.embed_dim, cfg.lfe_blocks, cfg.group)
            self.denoiser = LatentDenoiser(prior_dim, tokens, cfg.denoiser_inner, cfg.denoiser_blocks)
            self.schedule = LinearBetaSchedule(cfg.diffusion_steps, cfg.beta_start, cfg.beta_end)

    # ---------------------------------------------------------------- the two prior paths

    def phase1(self, lq: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior from the ground truth: returns (output, z)."""
        lq_p, (h, w) = pad_to_multiple(lq, self.size_multiple)
        gt_p, _ = pad_to_multiple(gt, self.size_multiple)
        z = self.lfe(torch.cat([gt_p, lq_p], dim=1))  # (B, N, P)
        return self.backbone(lq_p, z)[..., :h, :w], z

    def phase2(self, lq: torch.Tensor, gt: torch.Tensor | None = None):
        """Prior generated from lq by the CL-DM: returns (output, ẑ, z), z None when gt is not given.

        z comes from the frozen phase-1 LFE. While training with gt, the chain starts from z noised to the
        last step (HI-Diff); otherwise from `diffusion.start_noise`, so eval-mode results equal `forward`'s.
        """
        lq_p, (h, w) = pad_to_multiple(lq, self.size_multiple)
        z = None
        if gt is not None:
            with torch.no_grad():
                z = self.lfe(torch.cat([pad_to_multiple(gt, self.size_multiple)[0], lq_p], dim=1))
        condition = self.condition_encoder(lq_p)  # (B, N, P)
        if self.training and z is not None:
            last = torch.full((z.shape[0],), self.schedule.steps - 1, dtype=torch.long, device=z.device)
            start = self.schedule.q_sample(z, last, torch.randn_like(z))
        else:
            start = start_noise(condition, self.training, self.config.inference_seed)
        z_hat = self.schedule.sample(self.denoiser, condition, start)
        return self.backbone(lq_p, z_hat)[..., :h, :w], z_hat, z

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        if not self.config.use_prior:
            return self.backbone(x)
        return self.phase2(x)[0]

    # ---------------------------------------------------------------- training interface

    def training_loss(self, lq: torch.Tensor, gt: torch.Tensor, phase: str = "phase1") -> dict[str, torch.Tensor]:
        if phase not in self.phases:
            raise ValueError(f"unknown phase {phase!r} for MPI-Mamba; expected one of {self.phases}")
        if phase == "main":
            return super().training_loss(lq, gt, phase)
        if phase == "phase1":
            output, z = self.phase1(lq, gt)
            loss = F.l1_loss(output, gt)
            return {"loss": loss, "output": output, "pixel": loss.detach(), "z": z}
        output, z_hat, z = self.phase2(lq, gt)
        pixel, prior = F.l1_loss(output, gt), F.l1_loss(z_hat, z)
        return {"loss": pixel + prior, "output": output, "pixel": pixel.detach(), "prior": prior.detach(),
                "z": z, "z_hat": z_hat}

    def phase_parameters(self, phase: str = "phase1") -> Iterator[nn.Parameter]:
        if phase not in self.phases:
            raise ValueError(f"unknown phase {phase!r} for MPI-Mamba; expected one of {self.phases}")
        parts = {"main": [self.backbone], "phase1": [self.lfe, self.backbone] if self.config.use_prior else [],
                 "phase2": [self.condition_encoder, self.denoiser, self.backbone] if self.config.use_prior else []}
        return (p for part in parts[phase] for p in part.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())


PRESETS: dict[str, dict] = {
    # for tests: < 100k parameters, a fraction of a second on a CPU at 64x64
    "tiny": dict(width=4, blocks=(1, 1, 1, 1), refinement_blocks=1, heads=(1, 1, 2, 2), ffn_expansion=2.0,
                 d_state=4, embed_dim=8, lfe_blocks=1, denoiser_inner=16, denoiser_blocks=1),
    # the shipped model (1.35 M parameters, 5.4 MB in float32): trains on a laptop CPU at patch 64;
    # one block per level because level 1 (64x64 pixels, 4 orders) dominates a training step's cost
    "small": dict(width=16, blocks=(1, 1, 1, 1), refinement_blocks=1, heads=(1, 2, 4, 8),
                  embed_dim=16, lfe_blocks=2, denoiser_inner=128, denoiser_blocks=2),
    # the authors' released configuration
    "paper": dict(width=48, blocks=(2, 2, 2, 2), refinement_blocks=4, heads=(1, 2, 4, 8), ffn_expansion=2.66,
                  embed_dim=64, lfe_blocks=6, denoiser_inner=512, denoiser_blocks=2),
}

MODEL = MPIMamba
