"""DiffIR (Xia et al., "DiffIR: Efficient Diffusion Model for Image Restoration", ICCV 2023).

Three parts, trained in two stages (`phases = ("stage1", "stage2")`):
- CPEN (compact IR prior extraction network): PixelUnshuffle(4) → 3×3 conv → residual conv blocks →
  convs widening to 4·width → global average pool → 2-layer MLP: one IR prior representation (IPR)
  vector z of length 4·width per image. CPEN_S1 sees concat(gt, lq); CPEN_S2 sees lq alone and gives
  the diffusion model its condition.
- DIRformer: Restormer's U-Net (`restormer.RestormerUNet`) whose blocks are modulated by the IPR:
  F' = W¹z ⊙ LN(F) + W²z before the transposed attention (DMTA) and again before the gated FFN (DGFN).
- A diffusion model on the IPR vector alone, so a handful of steps suffice (T = 4, β linear 0.1 → 0.99):
  a small MLP denoiser on concat(condition, t / 10T, z_t) that predicts the clean IPR (x0-parameterised,
  as released; `mpimamba.models.diffusion`'s sampler expects noise, so the prediction is converted —
  see `DiffIR.predicted_noise`). The chain is deterministic (posterior means) and not clipped.

Stage 1: CPEN_S1 + DIRformer, L1(output, gt). Stage 2: the frozen CPEN_S1 gives the target IPR z; z is
noised to the last step, the whole reverse chain runs (conditioned on CPEN_S2(lq)) to ẑ, and DIRformer
restores with ẑ; loss = L1(output, gt) + L1(ẑ, z), with CPEN_S2, the denoiser and DIRformer trained
jointly. The paper calls the IPR term a knowledge-distillation loss; the released code also computes a
KL divergence of softmax(IPR / 0.15) but only logs it — returned here as "kd" for the same purpose.
The released code's first 100k stage-2 iterations train only CPEN_S2 + denoiser; the common loop runs
stage 2 jointly from its start (the phase's parameter set is the same).
Inference needs lq only: CPEN_S2 → the chain from a fixed seeded draw (eval mode; deterministic) → DIRformer.

`paper` is the released GoPro deblurring configuration (dim 48, blocks [3, 5, 6, 6], 4 refinement
blocks, heads [1, 2, 4, 8], FFN expansion 2, no conv biases, LayerNorm with bias, CPEN width 64 with 5
residual blocks, 1 denoiser layer, T = 4). Departures: CPEN's residual blocks are the shared
`latent.ResidualConvBlock` (GELU where DiffIR has ReLU; same size).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Restorer, pad_to_multiple
from ..diffusion import LinearBetaSchedule, chain_loss, start_noise
from ..latent import ResidualConvBlock
from .restormer import RestormerBlock, RestormerUNet


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1)  # DiffIR's activation outside the transformer


class CPEN(nn.Module):
    """(B, in_channels, H, W) -> IPR (B, 4·width); H and W multiples of 4."""

    def __init__(self, in_channels: int, width: int, num_blocks: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.PixelUnshuffle(4),  # (B, 16·in, H/4, W/4): 4× smaller, nothing lost
            nn.Conv2d(16 * in_channels, width, 3, padding=1), _act(),
            *[ResidualConvBlock(width) for _ in range(num_blocks)],
            nn.Conv2d(width, 2 * width, 3, padding=1), _act(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), _act(),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), _act(),
            nn.AdaptiveAvgPool2d(1),  # any image size -> one vector
            nn.Flatten(),  # (B, 4·width)
        )
        self.mlp = nn.Sequential(nn.Linear(4 * width, 4 * width), _act(), nn.Linear(4 * width, 4 * width), _act())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(x))


class PriorModulation(nn.Module):
    """F' = W¹z ⊙ F + W²z: a per-channel scale and shift computed from the IPR (no bias, as in the paper)."""

    def __init__(self, prior_dim: int, channels: int):
        super().__init__()
        self.linear = nn.Linear(prior_dim, 2 * channels, bias=False)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(z)[:, :, None, None].chunk(2, dim=1)  # 2 × (B, C, 1, 1)
        return x * scale + shift


class DynamicBlock(RestormerBlock):
    """DIRformer block: Restormer's block with the normalised input modulated by the IPR (DMTA, DGFN)."""

    def __init__(self, dim: int, heads: int, expansion: float, bias: bool, norm_bias: bool, prior_dim: int):
        super().__init__(dim, heads, expansion, bias, norm_bias)
        self.modulate_attn = PriorModulation(prior_dim, dim)
        self.modulate_ffn = PriorModulation(prior_dim, dim)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.modulate_attn(self.norm1(x), z))
        return x + self.ffn(self.modulate_ffn(self.norm2(x), z))


class PriorDenoiser(nn.Module):
    """MLP on concat(condition, t / (10·T), z_t) -> the clean IPR (B, P); LeakyReLU(0.1) after every layer,
    so its output lives where CPEN's (also LeakyReLU-terminated) IPRs do."""

    def __init__(self, prior_dim: int, num_layers: int, steps: int):
        super().__init__()
        self.time_period = 10.0 * steps  # the released scaling of the step index
        layers = [nn.Linear(2 * prior_dim + 1, prior_dim), _act()]
        for _ in range(num_layers):
            layers += [nn.Linear(prior_dim, prior_dim), _act()]
        self.mlp = nn.Sequential(*layers)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        time = (t.to(z_t.dtype) / self.time_period)[:, None]  # (B, 1)
        return self.mlp(torch.cat([condition, time, z_t], dim=1))


class DiffIR(Restorer):
    size_multiple = 8  # three 2× downsamplings in DIRformer; CPEN needs 4
    phases = ("stage1", "stage2")

    def __init__(
        self,
        in_channels: int = 1,
        dim: int = 48,
        num_blocks: Sequence[int] = (3, 5, 6, 6),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion: float = 2.0,
        bias: bool = False,
        norm_bias: bool = True,
        cpen_width: int = 64,
        cpen_blocks: int = 5,
        denoiser_layers: int = 1,
        diffusion_steps: int = 4,
        beta_start: float = 0.1,
        beta_end: float = 0.99,
        inference_seed: int = 0,
    ):
        super().__init__()
        prior_dim = 4 * cpen_width
        self.inference_seed = inference_seed

        def make_block(channels: int, h: int) -> nn.Module:
            return DynamicBlock(channels, h, ffn_expansion, bias, norm_bias, prior_dim)

        self.dirformer = RestormerUNet(in_channels, dim, list(num_blocks), num_refinement_blocks, list(heads),
                                       make_block, bias)
        self.cpen_s1 = CPEN(2 * in_channels, cpen_width, cpen_blocks)
        self.cpen_s2 = CPEN(in_channels, cpen_width, cpen_blocks)
        self.denoiser = PriorDenoiser(prior_dim, denoiser_layers, diffusion_steps)
        # DiffIR does not clip the x0 estimate: IPRs are not confined to [-1, 1]
        self.schedule = LinearBetaSchedule(diffusion_steps, beta_start, beta_end, clip=float("inf"))

    # ---------------------------------------------------------------- the diffusion model

    def predicted_noise(self, z_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The shared sampler wants predicted noise; DiffIR's denoiser predicts the clean IPR ẑ0.

        ε = (z_t − √ᾱ_t ẑ0) / √(1 − ᾱ_t) is the noise that makes the sampler's z0 estimate exactly ẑ0, so
        the chain is DiffIR's x0-parameterised one.
        """
        z0 = self.denoiser(z_t, t, condition)
        alpha_bar = self.schedule.alpha_bar.to(z_t)[t][:, None]  # (B, 1)
        return (z_t - alpha_bar.sqrt() * z0) / (1 - alpha_bar).sqrt()

    def generate_prior(self, condition: torch.Tensor) -> torch.Tensor:
        """The inference chain: from `diffusion.start_noise` to the IPR ẑ (B, P), conditioned on CPEN_S2(lq)."""
        start = start_noise(condition, self.training, self.inference_seed)
        return self.schedule.sample(self.predicted_noise, condition, start)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        return self.dirformer(x, self.generate_prior(self.cpen_s2(x)))

    # ---------------------------------------------------------------- training interface

    def training_loss(self, lq: torch.Tensor, gt: torch.Tensor, phase: str = "stage1") -> dict[str, torch.Tensor]:
        if phase not in self.phases:
            raise ValueError(f"unknown phase {phase!r} for DiffIR; expected one of {self.phases}")
        lq_p, (h, w) = pad_to_multiple(lq, self.size_multiple)
        gt_p, _ = pad_to_multiple(gt, self.size_multiple)
        if phase == "stage1":
            z = self.cpen_s1(torch.cat([gt_p, lq_p], dim=1))  # (B, P)
            output = self.dirformer(lq_p, z)[..., :h, :w]
            loss = F.l1_loss(output, gt)
            return {"loss": loss, "output": output, "pixel": loss.detach()}
        with torch.no_grad():  # the stage-1 extractor is the frozen teacher
            z = self.cpen_s1(torch.cat([gt_p, lq_p], dim=1))
        condition = self.cpen_s2(lq_p)  # (B, P)
        if self.training:  # start from the target IPR noised to the last step, as released
            z_hat, prior = chain_loss(self.schedule, self.predicted_noise, z, condition)
        else:  # validation scores exactly what `forward` returns
            z_hat = self.generate_prior(condition)
            prior = F.l1_loss(z_hat, z)
        output = self.dirformer(lq_p, z_hat)[..., :h, :w]
        pixel = F.l1_loss(output, gt)
        kd = F.kl_div(F.log_softmax(z_hat / 0.15, dim=1), F.log_softmax(z / 0.15, dim=1),
                      log_target=True, reduction="batchmean")
        return {"loss": pixel + prior, "output": output, "pixel": pixel.detach(), "prior": prior.detach(),
                "kd": kd.detach()}

    def phase_parameters(self, phase: str = "stage1") -> Iterator[nn.Parameter]:
        if phase not in self.phases:
            raise ValueError(f"unknown phase {phase!r} for DiffIR; expected one of {self.phases}")
        parts = {"stage1": [self.dirformer, self.cpen_s1], "stage2": [self.dirformer, self.cpen_s2, self.denoiser]}
        return (p for part in parts[phase] for p in part.parameters() if p.requires_grad)


PRESETS = {
    "tiny": dict(dim=4, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 2], ffn_expansion=2.0,
                 cpen_width=6, cpen_blocks=1, denoiser_layers=1),
    "small": dict(dim=24, num_blocks=[2, 2, 2, 2], num_refinement_blocks=2, heads=[1, 2, 4, 8], ffn_expansion=2.0,
                  cpen_width=32, cpen_blocks=2, denoiser_layers=1),
    "paper": dict(dim=48, num_blocks=[3, 5, 6, 6], num_refinement_blocks=4, heads=[1, 2, 4, 8], ffn_expansion=2.0,
                  cpen_width=64, cpen_blocks=5, denoiser_layers=1),
}
MODEL = DiffIR
