"""Building blocks shared by MPI-Mamba, Restormer and DiffIR: norms, the gated feed-forward, attentions,
and the resampling layers of a Restormer-style U-Net.

Every module here works on image features shaped (B, C, H, W) unless its docstring says otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel of a (B, C, H, W) tensor.

    `bias=True` is the usual LayerNorm (centre, scale, shift). `bias=False` is Restormer's "BiasFree"
    variant: divide by the standard deviation but do not subtract the mean and add no shift.
    """

    def __init__(self, channels: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            # PyTorch's fused layer norm over the last axis of a channels-last view (several times faster
            # than the reduction below); the result keeps channels-last strides, which the next layers take
            cl = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
            return cl.permute(0, 3, 1, 2)  # (B, C, H, W)
        var = torch.var(x, dim=1, keepdim=True, unbiased=False)  # (B, 1, H, W); no fused op divides by it
        return x * torch.rsqrt(var + self.eps) * self.weight[:, None, None]


class GatedDConvFeedForward(nn.Module):
    """Restormer's GDFN: 1x1 to 2*hidden, 3x3 depthwise, GELU(x1) * x2, 1x1 back to C."""

    def __init__(self, channels: int, expansion: float = 2.66, bias: bool = False):
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=bias)
        self.depthwise = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.depthwise(self.project_in(x)).chunk(2, dim=1)  # 2 x (B, hidden, H, W)
        return self.project_out(F.gelu(x1) * x2)


class TransposedAttention(nn.Module):
    """Restormer's MDTA: attention across channels (a C/heads x C/heads map per head), linear in H*W.

    q and k are L2-normalised over the spatial axis, so their product is a cosine similarity; a learnable
    temperature per head sets the sharpness of the softmax.
    """

    def __init__(self, channels: int, heads: int, bias: bool = False):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=bias)
        self.qkv_depthwise = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels, bias=bias)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = self.qkv_depthwise(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (rearrange(t, "b (g c) h w -> b g c (h w)", g=self.heads) for t in (q, k, v))  # (B, G, c, HW)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)  # (B, G, c, c)
        out = rearrange(attn @ v, "b g c (h w) -> b (g c) h w", h=h, w=w)
        return self.project_out(out)


class PriorCrossAttention(nn.Module):
    """Fuse a few latent prior tokens into image features (HI-Diff's hierarchical integration, DESIGN §3).

    Every pixel is a query (Linear(LN(features)), no bias); the prior tokens give keys and values
    (Linear(LN(prior)) to 2*C, no bias); softmax over the tokens; output Linear with bias; residual add.
    """

    def __init__(self, channels: int, prior_dim: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm_features = ChannelLayerNorm(channels)
        self.norm_prior = nn.LayerNorm(prior_dim)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_kv = nn.Linear(prior_dim, 2 * channels, bias=False)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W); prior: (B, N, prior_dim) -> (B, C, H, W)."""
        h, w = x.shape[-2:]
        tokens = rearrange(self.norm_features(x), "b c h w -> b (h w) c")
        q = rearrange(self.to_q(tokens), "b l (g d) -> b g l d", g=self.heads)  # (B, G, HW, d)
        k, v = (rearrange(t, "b n (g d) -> b g n d", g=self.heads)  # (B, G, N, d)
                for t in self.to_kv(self.norm_prior(prior)).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax over the N prior tokens, scale 1/sqrt(d)
        out = self.proj(rearrange(out, "b g l d -> b l (g d)"))
        return x + rearrange(out, "b (h w) c -> b c h w", h=h, w=w)


class Downsample(nn.Sequential):
    """(B, C, H, W) -> (B, 2C, H/2, W/2): 3x3 conv to C/2, then PixelUnshuffle(2)."""

    def __init__(self, channels: int):
        super().__init__(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


class Upsample(nn.Sequential):
    """(B, C, H, W) -> (B, C/2, 2H, 2W): 3x3 conv to 2C, then PixelShuffle(2)."""

    def __init__(self, channels: int):
        super().__init__(nn.Conv2d(channels, 2 * channels, 3, padding=1, bias=False), nn.PixelShuffle(2))
