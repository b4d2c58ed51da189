"""The latent feature encoder (LFE): an image (or image pair) -> a few latent tokens, the prior.

Phase 1 encodes concat(ground truth, input) (2C channels) into group² tokens of width 4·embed_dim; the
CL-DM's condition encoder is the same network on the input alone (C channels). The token/channel MLP
block here is also the building block of the diffusion denoiser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class MixerBlock(nn.Module):
    """MLP-Mixer block on (B, N, C) tokens: mix across tokens, then across channels, each pre-norm residual."""

    def __init__(self, tokens: int, dim: int, token_expansion: float = 0.5, channel_expansion: float = 4.0):
        super().__init__()
        token_hidden, channel_hidden = int(tokens * token_expansion), int(dim * channel_expansion)
        self.norm_tokens = nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens))
        self.norm_channels = nn.LayerNorm(dim)
        self.channel_mlp = nn.Sequential(nn.Linear(dim, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm_tokens(x).transpose(1, 2)).transpose(1, 2)  # mixes along N
        return x + self.channel_mlp(self.norm_channels(x))


class ResidualConvBlock(nn.Module):
    """x + conv3x3(GELU(conv3x3(x)))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(x)))


class LatentEncoder(nn.Module):
    """(B, in_channels, H, W) -> (B, group², 4·embed_dim); H and W must be multiples of 4."""

    def __init__(self, in_channels: int, embed_dim: int = 64, num_blocks: int = 6, group: int = 4,
                 token_expansion: float = 0.5, channel_expansion: float = 4.0):
        super().__init__()
        self.embed = nn.Sequential(
            nn.PixelUnshuffle(4),  # (B, 16·in, H/4, W/4): a cheap 4x reduction that loses no pixel
            nn.Conv2d(16 * in_channels, embed_dim, 3, padding=1),
            nn.GELU(),
        )
        self.blocks = nn.Sequential(*[ResidualConvBlock(embed_dim) for _ in range(num_blocks)])
        self.conv = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(group)  # any image size -> group x group cells
        self.mixer = MixerBlock(group * group, embed_dim, token_expansion, channel_expansion)
        self.to_prior = nn.Sequential(nn.Linear(embed_dim, 4 * embed_dim), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv(self.blocks(self.embed(x))))  # (B, E, group, group)
        tokens = rearrange(x, "b e h w -> b (h w) e")  # (B, N, E)
        return self.to_prior(self.mixer(tokens))  # (B, N, 4E)
