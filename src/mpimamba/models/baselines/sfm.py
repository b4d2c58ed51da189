"""SFM: spatial-frequency multi-scale transformer for MPI deblurring (Shang et al., IEEE Trans. Comput.
Imaging 10 (2024) 196).

A U-Net of transformer blocks over several scales. Each block mixes tokens in two domains at once:
  * spatial branch: multi-head self-attention inside non-overlapping w×w windows — local, pixel-to-pixel
    attention that re-draws edges;
  * frequency branch: the 2-D real FFT of the features, a pointwise MLP (1×1 conv, GELU, 1×1 conv) on the
    stacked real and imaginary parts, and the inverse FFT — every output pixel sees the whole image, and
    a blur, a convolution, is a per-frequency product in this domain;
both read the same LayerNorm-ed input and their sum is added back; then a gated depthwise-conv
feed-forward (Restormer's GDFN). The scales come from the 4-level U-Net shared with Restormer and DiffIR
(`restormer.RestormerUNet`: conv + PixelUnshuffle down, conv + PixelShuffle up, concatenated skips,
refinement blocks, global residual), with this block in every position.

The full text of the paper was not available to us: the block follows the paper's title and abstract
(spatial attention branch + FFT-domain branch, several scales), and the configuration is our choice.
`paper`: width 32, Restormer's depth layout (blocks [4, 6, 6, 8], 4 refinement blocks, heads
[1, 2, 4, 8]), window 8, FFN expansion 2.66 — 18.2 M parameters, the size of the whole MPI-Mamba paper
model (≈ 17.9 M). Window attention has no relative-position bias (the frequency branch supplies the
global context). Inputs are padded to multiples of 8·window (64 for `paper`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..base import Restorer
from ..blocks import ChannelLayerNorm, GatedDConvFeedForward
from .restormer import RestormerUNet


class WindowAttention(nn.Module):
    """Multi-head self-attention within non-overlapping w×w windows; H and W must be multiples of w."""

    def __init__(self, channels: int, heads: int, window: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads, self.window = heads, window
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w, win = *x.shape[-2:], self.window
        q, k, v = (
            rearrange(t, "b (g d) (nh p1) (nw p2) -> (b nh nw) g (p1 p2) d", g=self.heads, p1=win, p2=win)
            for t in self.qkv(x).chunk(3, dim=1)
        )  # (B·windows, G, w², d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(
            out, "(b nh nw) g (p1 p2) d -> b (g d) (nh p1) (nw p2)",
            nh=h // win, nw=w // win, p1=win,
        )  # (B, C, H, W)
        return self.proj(out)


class FourierUnit(nn.Module):
    """Pointwise MLP on the 2-D spectrum: global mixing in O(HW log HW)."""

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(2 * channels, 2 * channels, 1), nn.GELU(), nn.Conv2d(2 * channels, 2 * channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        spec = torch.fft.rfft2(x.float(), norm="ortho")  # (B, C, H, W//2+1) complex
        spec = self.mlp(torch.cat([spec.real, spec.imag], dim=1))  # (B, 2C, H, W//2+1)
        real, imag = spec.chunk(2, dim=1)
        return torch.fft.irfft2(torch.complex(real, imag), s=(h, w), norm="ortho").to(x.dtype)


class SpatialFrequencyBlock(nn.Module):
    def __init__(self, channels: int, heads: int, window: int, ffn_expansion: float):
        super().__init__()
        self.norm1 = ChannelLayerNorm(channels)
        self.spatial = WindowAttention(channels, heads, window)
        self.frequency = FourierUnit(channels)
        self.norm2 = ChannelLayerNorm(channels)
        self.ffn = GatedDConvFeedForward(channels, ffn_expansion, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.spatial(y) + self.frequency(y)
        return x + self.ffn(self.norm2(x))


class SFM(Restorer):
    def __init__(
        self,
        in_channels: int = 1,
        dim: int = 32,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_refinement_blocks: int = 2,
        heads: Sequence[int] = (1, 2, 4, 8),
        window: int = 8,
        ffn_expansion: float = 2.66,
    ):
        super().__init__()
        # the bottleneck map (H/8, W/8) must still tile into whole windows
        self.size_multiple = 8 * window

        def make_block(channels: int, h: int) -> nn.Module:
            return SpatialFrequencyBlock(channels, h, window, ffn_expansion)

        self.net = RestormerUNet(
            in_channels, dim, list(num_blocks), num_refinement_blocks, list(heads), make_block, bias=True
        )

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


PRESETS: dict[str, dict] = {
    "tiny": dict(dim=4, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 1, 2), window=4,
                 ffn_expansion=2.0),
    "small": dict(dim=16, num_blocks=(1, 2, 2, 2), num_refinement_blocks=1, heads=(1, 2, 4, 8), window=8),
    "paper": dict(dim=32, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4, heads=(1, 2, 4, 8), window=8),
}
MODEL = SFM
