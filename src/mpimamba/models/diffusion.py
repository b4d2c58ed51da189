"""The conditional latent diffusion model (CL-DM): a noise schedule with its reverse chain, and a denoiser.

Kept apart like `diffusers`: `LinearBetaSchedule` knows the closed forms and runs the chain with any
`denoiser(z_t, t, condition) -> predicted noise`; `LatentDenoiser` is a network that knows nothing about
the schedule. Latents are token sets shaped (B, N, C), so DiffIR's prior (N = 1) fits as well.

Training follows HI-Diff (DESIGN §3): noise the target prior z to the last step, run the WHOLE reverse
chain with gradients, and compare the result with z (L1). With T = 8 steps that is cheap, and it trains
the sampler that inference actually runs instead of a per-step noise regression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .latent import MixerBlock

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LinearBetaSchedule:
    """β_t linear from `beta_start` to `beta_end` over `steps` steps, t = 0 .. T-1 (0 = least noise).

    The released MPI-Mamba / HI-Diff schedule (T = 8, β 0.1 -> 0.99) is far from the usual 1e-4 -> 2e-2:
    ᾱ drops to about 3e-5 at the last step, so the chain starts from essentially pure noise.
    `clip` bounds the x0 estimate at each step (the released code clamps to [-1, 1]).
    """

    steps: int = 8
    beta_start: float = 0.1
    beta_end: float = 0.99
    clip: float = 1.0

    def __post_init__(self):
        if self.steps < 1 or not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"need steps >= 1 and 0 < beta_start <= beta_end < 1, got {self}")
        betas = torch.linspace(self.beta_start, self.beta_end, self.steps, dtype=torch.float64)
        alpha_bar = torch.cumprod(1 - betas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        self.betas, self.alpha_bar, self.alpha_bar_prev = betas, alpha_bar, alpha_bar_prev
        # q(z_{t-1} | z_t, z_0) = N(coef_start·z_0 + coef_current·z_t, ·): the textbook posterior
        self.coef_start = betas * alpha_bar_prev.sqrt() / (1 - alpha_bar)
        self.coef_current = (1 - alpha_bar_prev) * (1 - betas).sqrt() / (1 - alpha_bar)

    @staticmethod
    def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] for a (B,) step index, shaped to broadcast against `like` (B, ...)."""
        out = values.to(like.device)[t].to(like.dtype)
        return out.view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z_t = √ᾱ_t z_0 + √(1-ᾱ_t) ε (textbook DDPM).

        The released code uses ᾱ_t z_0 + √(1-ᾱ_t) ε (ᾱ, not its square root). At the only step training
        noises to, t = T-1, ᾱ ≈ 3e-5: z_0 enters with weight 5.7e-3 (textbook) or 3e-5 (released), both
        negligible beside unit-variance noise, so the two start the chain from practically the same place.
        """
        return self._at(self.alpha_bar.sqrt(), t, z0) * z0 + self._at((1 - self.alpha_bar).sqrt(), t, z0) * noise

    def predict_start(self, z_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z_0 from z_t and the predicted noise (inverse of `q_sample`), clamped to [-clip, clip]."""
        z0 = self._at((1 / self.alpha_bar).sqrt(), t, z_t) * z_t - self._at((1 / self.alpha_bar - 1).sqrt(), t, z_t) * noise
        return z0.clamp(-self.clip, self.clip)

    def posterior_mean(self, z0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(z_{t-1} | z_t, z_0); at t = 0 this is z_0 itself."""
        return self._at(self.coef_start, t, z_t) * z0 + self._at(self.coef_current, t, z_t) * z_t

    def sample(self, denoiser: Denoiser, condition: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Deterministic reverse chain from z_{T-1} = `start` to z_0: posterior means, no added variance.

        Differentiable: training backpropagates through all T steps.
        """
        z = start
        for step in reversed(range(self.steps)):
            t = torch.full((z.shape[0],), step, dtype=torch.long, device=z.device)
            z0 = self.predict_start(z, t, denoiser(z, t, condition))
            z = self.posterior_mean(z0, z, t)
        return z


def start_noise(like: torch.Tensor, training: bool, seed: int) -> torch.Tensor:
    """z_T for the reverse chain, shaped like `like` (B, ...): fresh noise while training; otherwise one
    draw from `seed` shared by the whole batch, so inference is deterministic and an image's result does
    not depend on its batch-mates. Drawn on the CPU, so the draw is the same on any device."""
    if training:
        return torch.randn_like(like)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, *like.shape[1:]), generator=generator)  # (1, ...)
    return noise.to(like).expand_as(like)


class LatentDenoiser(nn.Module):
    """Predicts the noise in z_t from concat(z_t, (t+1)·s, condition); tokens (B, N, dim) -> (B, N, dim).

    The step enters as a constant channel block scaled by a learnable s (init 1e-3, as released), so at
    the start of training the network barely sees t and learns how much to rely on it. Released details
    kept: LeakyReLU(0.2) after the input layer and a GELU after every mixer block. Dropped: the released
    GELU on the output, which would forbid noise values below -0.17 (the prediction is Gaussian noise).
    """

    def __init__(self, dim: int, tokens: int, inner: int = 512, num_blocks: int = 2,
                 token_expansion: float = 0.5, channel_expansion: float = 2.0, time_scale_init: float = 1e-3):
        super().__init__()
        self.time_scale = nn.Parameter(torch.tensor(time_scale_init))
        self.embed = nn.Sequential(nn.Linear(3 * dim, inner), nn.LeakyReLU(0.2))
        self.blocks = nn.Sequential(*[
            nn.Sequential(MixerBlock(tokens, inner, token_expansion, channel_expansion), nn.GELU())
            for _ in range(num_blocks)
        ])
        self.out = nn.Linear(inner, dim)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        time = ((t + 1).to(z_t.dtype) * self.time_scale).view(-1, 1, 1).expand_as(z_t)  # (B, N, dim)
        x = self.embed(torch.cat([z_t, time, condition], dim=-1))  # (B, N, inner)
        return self.out(self.blocks(x))


def chain_loss(schedule: LinearBetaSchedule, denoiser: Denoiser, target: torch.Tensor,
               condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HI-Diff training: noise `target` to the last step, run the whole chain; return (ẑ, L1(ẑ, target))."""
    last = torch.full((target.shape[0],), schedule.steps - 1, dtype=torch.long, device=target.device)
    start = schedule.q_sample(target, last, torch.randn_like(target))
    generated = schedule.sample(denoiser, condition, start)
    return generated, F.l1_loss(generated, target)
